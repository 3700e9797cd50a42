"""Does guidance away from the opposite direction make ``wan-shapes`` follow the direction word?

The 72 evaluation prompts (20 steps, seeds as the training evaluation's batches of 24), each
with the default empty negative prompt ("none") or with the same prompt naming the opposite
direction as the negative one ("opposite"): classifier-free guidance then pushes along the
direction word alone. Needs a GPU; writes ``$OUT/neg.json`` (kept as run, in
``training/direction_negative_prompt.json``)::

    OUT=runs/neg python training/direction_negative_prompt.py
"""

# ruff: noqa: SIM115  (kept as run)
import json
import os
import time

import numpy as np
import torch

from dit_sparse.pipelines.shapes import load_wan_shapes
from dit_sparse.synthetic import check_motion, evaluation_prompts, pass_rate

OPP = {"left": "right", "right": "left", "up": "down", "down": "up"}
pipe = load_wan_shapes().to("cuda")
pipe.set_progress_bar_config(disable=True)
prompts = evaluation_prompts(72)


def swap(p, mode):
    words = p.split()
    i = words.index("moves") + 1
    if mode == "opposite":
        words[i] = OPP[words[i]]
        return " ".join(words)
    return ""


results = []
for mode, guidance, frames in [
    ("none", 5.0, 61),
    ("opposite", 5.0, 61),
    ("opposite", 3.0, 61),
    ("opposite", 8.0, 61),
    ("opposite", 12.0, 61),
    ("none", 8.0, 61),
    ("opposite", 5.0, 17),
    ("none", 5.0, 17),
]:
    t0 = time.time()
    verdicts = []
    for j, start in enumerate(range(0, len(prompts), 24)):
        batch = prompts[start : start + 24]
        out = pipe(
            prompt=batch,
            negative_prompt=[swap(p, mode) for p in batch],
            num_frames=frames,
            height=64,
            width=64,
            num_inference_steps=20,
            guidance_scale=guidance,
            generator=torch.Generator("cuda").manual_seed(j),
            output_type="np",
        )
        video = np.asarray(out.frames, dtype=np.float32)
        verdicts += [check_motion(c, p) for c, p in zip(video, batch)]
    reasons = {}
    for v in verdicts:
        key = v.reason.split(" ")[0] if not v.passed else "ok"
        reasons[key] = reasons.get(key, 0) + 1
    row = {
        "mode": mode,
        "guidance": guidance,
        "frames": frames,
        "rate": pass_rate(verdicts),
        "reasons": reasons,
        "seconds": round(time.time() - t0, 1),
        "along_mean": float(np.mean([v.along for v in verdicts])),
    }
    results.append(row)
    print(row, flush=True)
    json.dump(results, open(os.environ["OUT"] + "/neg.json", "w"), indent=1)
