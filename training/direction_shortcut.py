"""Does ``wan-shapes``' motion follow the prompt, or the side of the frame it drew the shape on?

For the 72 evaluation clips (61 frames, 20 steps, guidance 5, as the training evaluation) and
for 256 drawn training clips, the motion over the first third of each clip (the colour mask's
centroid track, as `dit_sparse.synthetic.check_motion` fits it) is compared with the prompt and
with the start: how often its main axis is the prompted one, how often it goes the prompted
way, and how often it goes away from the wall the shape started nearer to. Needs a GPU::

    python training/direction_shortcut.py --out training/direction_shortcut.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from shapes_data import render_clips, sample_clip_batch, to_frames

from dit_sparse.pipelines.shapes import load_wan_shapes
from dit_sparse.synthetic import evaluate_motion, evaluation_prompts
from dit_sparse.synthetic.motion import blob_track, colour_mask
from dit_sparse.synthetic.vocabulary import DIRECTIONS, parse_prompt

MEASURES = ("follows_prompt", "away_from_near_wall", "axis_matches")


def motion_facts(frames: np.ndarray, prompt: str) -> dict[str, object] | None:
    """The first third's motion against the prompt and the start, or None if no shape."""
    attributes = parse_prompt(prompt)
    video = torch.as_tensor(frames)
    last = max(2, round((video.shape[0] - 1) / 3))
    centres, visible = blob_track(colour_mask(video[: last + 1], attributes.colour), 8)
    if visible.sum() < 3:
        return None
    t = torch.arange(last + 1, dtype=torch.float32)[visible]
    points = centres[visible]
    t = t - t.mean()
    velocity = (t[:, None] * (points - points.mean(0))).sum(0) / t.square().sum()
    axis = int(velocity.abs().argmax())  # 0: x, 1: y
    sign = 1.0 if velocity[axis] > 0 else -1.0
    extent = video.shape[2] if axis == 0 else video.shape[1]
    away = 1.0 if points[0, axis] < extent / 2 else -1.0
    wanted = DIRECTIONS[attributes.direction]
    wanted_axis = 0 if wanted[0] else 1
    return {
        "follows_prompt": axis == wanted_axis and sign == wanted[wanted_axis],
        "axis_matches": axis == wanted_axis,
        "away_from_near_wall": sign == away,
        "speed": attributes.speed,
    }


def shares(facts: list[dict[str, object] | None]) -> dict[str, object]:
    """Shares of the clips (with a shape) for each measure, and per speed."""
    found = [f for f in facts if f is not None]

    def share(rows, measure):
        return sum(bool(f[measure]) for f in rows) / max(1, len(rows))

    result: dict[str, object] = {"clips": len(found)}
    result.update({m: share(found, m) for m in MEASURES})
    for speed in ("slowly", "quickly"):
        rows = [f for f in found if f["speed"] == speed]
        result[speed] = {m: share(rows, m) for m in ("follows_prompt", "away_from_near_wall")}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).with_name("direction_shortcut.json")))
    args = parser.parse_args()
    device = torch.device("cuda")
    pipe = load_wan_shapes().to(device)
    pipe.set_progress_bar_config(disable=True)
    prompts = evaluation_prompts(24) * 3
    with torch.autocast("cuda", dtype=torch.bfloat16):
        generated = evaluate_motion(
            pipe, prompts, frames=61, height=64, width=64, steps=20, guidance=5.0, batch_size=24
        )
    generator = torch.Generator(device).manual_seed(7)
    batch = sample_clip_batch(256, generator)
    drawn = to_frames(render_clips(batch, 61, 64, 64, generator).video).cpu().numpy()
    result = {
        "generated": shares([motion_facts(f, p) for f, p in zip(generated.frames, prompts)]),
        "drawn": shares([motion_facts(f, p) for f, p in zip(drawn, batch.prompts())]),
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
