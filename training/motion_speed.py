"""How fast, and which way, do ``wan-shapes``' generated shapes move, against drawn clips?

The motion check (`check_motion`) says pass or fail; this says why. For each evaluation prompt
it follows the prompted colour's blob (`blob_track`) over every frame of one generated clip and
takes the median frame-to-frame step along the prompted direction (positive: the prompted way;
a median ignores the odd jump of a breaking-up blob), then summarises per speed word beside the
same measure on drawn clips of the same prompts. For a model whose latents carry a motion field
(``motion_channels``) it also says which way that field points in each clip
(`motion_channel_summary`). CPU: about 7 minutes for 24 clips of 17 frames at 20 steps::

    python training/motion_speed.py --out training/motion_speed.json
    python training/motion_speed.py --steps 50 --shift 12 --out ...   # another sampler
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from records import append_json_record
from shapes_data import ClipBatch, RenderedClips, render_clips, to_frames

from dit_sparse.pipelines.shapes import MODEL_DIR, load_wan_shapes
from dit_sparse.synthetic import check_motion, evaluation_prompts, parse_prompt, pass_rate
from dit_sparse.synthetic.motion import blob_track, colour_mask, min_blob_pixels
from dit_sparse.synthetic.vocabulary import DIRECTIONS, SPEEDS

SIZE = 64


def median_step(clip: torch.Tensor, prompt: str) -> float | None:
    """Median frame-to-frame step (pixels per frame) of the prompted colour's blob along the
    prompted direction, over the frames that show it; None if fewer than 3 do."""
    attributes = parse_prompt(prompt)
    positions, visible = blob_track(
        colour_mask(clip, attributes.colour), min_blob_pixels(*clip.shape[1:3])
    )
    frames = torch.arange(clip.shape[0])[visible].numpy()
    if len(frames) < 3:
        return None
    along = (positions[visible] @ torch.tensor(DIRECTIONS[attributes.direction]).float()).numpy()
    return float(np.median(np.diff(along) / np.diff(frames)))


def summarise(clips: torch.Tensor, prompts: list[str]) -> dict:
    """Per speed word, over the clips' own median steps (`median_step`): their median, the
    mean of their absolute values, and the share that go the prompted way."""
    steps: dict[str, list[float]] = {speed: [] for speed in SPEEDS}
    for clip, prompt in zip(clips, prompts):
        step = median_step(clip, prompt)
        if step is not None:
            steps[parse_prompt(prompt).speed].append(step)
    verdicts = [check_motion(clip, prompt) for clip, prompt in zip(clips, prompts)]
    summary: dict = {"pass_rate": round(pass_rate(verdicts), 3)}
    for speed, values in steps.items():
        values_np = np.array(values)
        summary[speed] = {
            "clips_tracked": len(values),
            "median_clip_step": round(float(np.median(values_np)), 3) if values else None,
            "mean_abs_clip_step": round(float(np.abs(values_np).mean()), 3) if values else None,
            "share_prompted_way": round(float((values_np > 0).mean()), 3) if values else None,
        }
    return summary


def motion_channel_summary(field: torch.Tensor, prompts: list[str], clips: torch.Tensor) -> dict:
    """Which way the generated motion field ``[N, 2, T, h, w]`` (raw units, pixels a frame)
    points, per clip: its mean over the cells where it is over 0.3 px a frame. Counts the clips
    whose field goes the prompted way (more along it than across), and of those, how many of
    the clips' pixels pass `check_motion`."""
    agrees, passes = [], []
    for cells, prompt, clip in zip(field, prompts, clips):
        strong = cells.norm(dim=0) > 0.3
        mean = cells[:, strong].mean(1) if bool(strong.any()) else torch.zeros(2)
        direction = torch.tensor(DIRECTIONS[parse_prompt(prompt).direction]).float()
        along = float(mean @ direction)
        agrees.append(along > abs(float(mean @ direction.flip(0))))
        passes.append(check_motion(clip, prompt).passed)
    both = sum(a and p for a, p in zip(agrees, passes))
    return {
        "share_field_prompted_way": round(sum(agrees) / len(agrees), 3),
        "share_pixels_pass_where_field_agrees": round(both / max(1, sum(agrees)), 3),
    }


def drawn_clips(prompts: list[str], frames: int, seed: int) -> RenderedClips:
    """Drawn clips ``[N, 3, F, SIZE, SIZE]`` in [-1, 1], one per prompt, from ``seed``, and
    their motion fields (for the autoencoder's motion channels)."""
    batch = ClipBatch.from_attributes([parse_prompt(p) for p in prompts])
    return render_clips(batch, frames, SIZE, SIZE, torch.Generator().manual_seed(seed))


def sampling_record(args: argparse.Namespace, pipe, prompts: list[str]) -> dict:
    """What a record says of how it sampled: model, frames, steps, shift, guidance, prompts."""
    return {
        "model_dir": Path(args.model_dir).name,
        "frames": args.frames,
        "steps": args.steps,
        "shift": pipe.scheduler.config.shift,
        "guidance": args.guidance,
        "prompts": len(prompts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default=str(MODEL_DIR))
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--shift", type=float, default=None, help="default: the model's")
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--out", help="add the results to this JSON file (a list of runs)")
    args = parser.parse_args()

    prompts = evaluation_prompts(args.prompts)
    pipe = load_wan_shapes(args.model_dir)
    if args.shift is not None:
        pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=args.shift)
    pipe.set_progress_bar_config(disable=True)
    latents = pipe(
        prompt=prompts,
        num_frames=args.frames,
        height=SIZE,
        width=SIZE,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
    ).frames
    vae = pipe.vae
    raw = vae.denormalize(latents.float())
    generated = to_frames(vae.decode(raw, return_dict=False)[0])
    drawn = to_frames(drawn_clips(prompts, args.frames, seed=0).video)
    result = {
        **sampling_record(args, pipe, prompts),
        "generated": summarise(generated, prompts),
        "drawn": summarise(drawn, prompts),
    }
    if vae.config.motion_channels:
        field = raw[:, vae.pixel_channels :]
        result["motion_channels"] = motion_channel_summary(field, prompts, generated)
    print(json.dumps(result, indent=2))
    if args.out:
        append_json_record(args.out, result)


if __name__ == "__main__":
    main()
