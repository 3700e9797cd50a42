"""How many sampling steps does ``wan-shapes`` need to follow its prompt? (CPU)

Measured when the CLI's default was 61 frames at 8 steps; the training evaluation and the CPU
test use 20 steps. For each setting this runs the motion check (`evaluate_motion`, all prompts
in one batch, seed 0) on the first evaluation prompts, then checks the preset's example prompt
at that former default size (seed 0). The defaults chosen since are checked by
``default_demo_check.py``. About 20 minutes on 2 cores::

    python training/sampling_steps.py --out training/sampling_steps.json
"""

from __future__ import annotations

import argparse
import json
import time

from dit_sparse.generation import GenerationRequest, generate
from dit_sparse.pipelines.presets import PRESETS
from dit_sparse.pipelines.shapes import MODEL_DIR, load_wan_shapes
from dit_sparse.synthetic import check_motion, evaluate_motion, evaluation_prompts, pass_rate
from dit_sparse.utils import atomic_write_text

# (frames, prompts, steps): 17 frames as in the CPU test, 61 (the CLI's size) at the fewer
# steps the GPU evaluation (20 steps) does not cover.
SETTINGS = ((17, 10, (12, 16, 20)), (61, 8, (8, 12)))
EXAMPLE_STEPS = (8, 20)
EXAMPLE_FRAMES = 61  # the CLI's default frames when this record was made


def check_settings(pipe) -> list[dict]:
    records = []
    for frames, count, step_counts in SETTINGS:
        prompts = evaluation_prompts(count)
        for steps in step_counts:
            start = time.perf_counter()
            evaluation = evaluate_motion(
                pipe, prompts, frames=frames, height=64, width=64, steps=steps, batch_size=count
            )
            records.append(
                {
                    "frames": frames,
                    "prompts": count,
                    "steps": steps,
                    "pass_rate": round(pass_rate(evaluation.verdicts), 3),
                    "seconds": round(time.perf_counter() - start, 1),
                    "failures": [v.reason for v in evaluation.verdicts if not v.passed],
                }
            )
            print(json.dumps(records[-1]), flush=True)
    return records


def check_example(pipe) -> list[dict]:
    preset = PRESETS["wan-shapes"]
    records = []
    for steps in EXAMPLE_STEPS:
        request = GenerationRequest(
            prompt=preset.prompt,
            frames=EXAMPLE_FRAMES,
            height=preset.height,
            width=preset.width,
            steps=steps,
            seed=0,
        )
        verdict = check_motion(generate(pipe, request, progress=False).frames, preset.prompt)
        records.append(
            {
                "prompt": preset.prompt,
                "steps": steps,
                "seed": 0,
                "passed": verdict.passed,
                "reason": verdict.reason,
                "along_px": round(verdict.along, 1),
                "across_px": round(verdict.across, 1),
            }
        )
        print(json.dumps(records[-1]), flush=True)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=str(MODEL_DIR))
    parser.add_argument("--out", help="JSON file to write")
    args = parser.parse_args()
    pipe = load_wan_shapes(args.model_dir)
    pipe.set_progress_bar_config(disable=True)
    result = {
        "model_dir": args.model_dir,
        "device": "cpu",
        "settings": check_settings(pipe),
        "example": check_example(pipe),
    }
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
