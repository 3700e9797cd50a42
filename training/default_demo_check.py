"""Does the default ``dit-sparse generate`` show what its prompt says? (CPU)

Runs the ``wan-shapes`` preset's example prompt at the preset's default size, steps and
guidance, as ``dit-sparse generate --method M`` makes it, for every seed and method asked, and
judges each clip with the project's motion check (`check_motion`: the prompted colour, moving
the prompted way). Writes one JSON record, rewritten after every clip (``complete`` says
whether every clip asked for is in it)::

    python training/default_demo_check.py --seeds 0-9 --methods radial,dense \
        --out training/default_demo_check.json

``--frames``, ``--steps`` and ``--guidance`` override the preset's defaults (to compare
candidates); the record says which values were used.
"""

from __future__ import annotations

import argparse
import json

import dit_sparse
from dit_sparse.generation import GenerationRequest, generate
from dit_sparse.methods import METHODS, resolve_method
from dit_sparse.pipelines.presets import PRESETS
from dit_sparse.pipelines.shapes import MODEL_NAME, load_wan_shapes
from dit_sparse.quality.environment import environment
from dit_sparse.synthetic import check_motion
from dit_sparse.utils import atomic_write_text


def parse_seeds(text: str) -> list[int]:
    """``"0-9"`` or ``"0,3,5"`` -> seeds."""
    first, dash, last = text.partition("-")
    if dash:
        return list(range(int(first), int(last) + 1))
    return [int(s) for s in text.split(",") if s.strip()]


def request_for(seed: int, frames: int | None, steps: int | None, guidance: float | None):
    """The request `dit-sparse generate` builds for the preset, with any override."""
    preset = PRESETS[MODEL_NAME]
    return GenerationRequest(
        prompt=preset.prompt,
        frames=preset.frames if frames is None else frames,
        height=preset.height,
        width=preset.width,
        steps=preset.steps if steps is None else steps,
        guidance=preset.guidance if guidance is None else guidance,
        seed=seed,
    )


def check_seed(pipe, method: str, request: GenerationRequest) -> dict:
    with dit_sparse.attached(pipe, resolve_method(method)):
        result = generate(pipe, request, progress=False)
    verdict = check_motion(result.frames, request.prompt)
    return {
        "method": method,
        "seed": request.seed,
        "passed": verdict.passed,
        "reason": verdict.reason,
        "along_px": round(verdict.along, 1),
        "across_px": round(verdict.across, 1),
        "seconds": round(result.seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-9", help="e.g. 0-9 or 0,3")
    parser.add_argument(
        "--methods", default="radial", help=f"comma-separated: {', '.join(METHODS)}"
    )
    parser.add_argument("--frames", type=int, default=None, help="default: the preset's")
    parser.add_argument("--steps", type=int, default=None, help="default: the preset's")
    parser.add_argument("--guidance", type=float, default=None, help="default: the preset's")
    parser.add_argument("--out", help="JSON file to write")
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = parse_seeds(args.seeds)
    pipe = load_wan_shapes()
    pipe.set_progress_bar_config(disable=True)
    settings = request_for(0, args.frames, args.steps, args.guidance)
    record = {
        **environment("cpu"),
        "model": MODEL_NAME,
        "prompt": settings.prompt,
        "settings": {
            "frames": settings.frames,
            "height": settings.height,
            "width": settings.width,
            "steps": settings.steps,
            "guidance": settings.guidance,
        },
        "seeds": seeds,
        "complete": False,  # rewritten after every clip, so a stopped run keeps what it did
        "passed": {},
        "runs": [],
    }
    for method in methods:
        for seed in seeds:
            request = request_for(seed, args.frames, args.steps, args.guidance)
            record["runs"].append(check_seed(pipe, method, request))
            print(json.dumps(record["runs"][-1]), flush=True)
            done = [r for r in record["runs"] if r["method"] == method]
            record["passed"][method] = f"{sum(r['passed'] for r in done)}/{len(done)}"
            record["complete"] = len(record["runs"]) == len(methods) * len(seeds)
            if args.out:
                atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["passed"]))


if __name__ == "__main__":
    main()
