"""Is the last warm-up step's LSE good enough for AdaSpa's first search? (``warmup_lse``)

    python benchmarks/warmup_lse.py [--out PATH]     # CPU, about 6 minutes

Runs the trained ``wan-shapes`` model (61 frames of 64x64, one prompt) at 8, 20 and 50 steps
and keeps the cond branch's q and k of every layer at the last dense warm-up step ``d - 1``
and the first search step ``d`` (``d`` = 20% of the steps, AdaSpa's default). At step ``d``
the block mass is computed with that step's own LSE (exact) and with step ``d - 1``'s (what
the fused first search uses); each row of blocks keeps its top 20% of key blocks by each, and
the kept blocks' exact mass is the coverage. Written per layer: both coverages and how far
the LSE moved between the two steps.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from common import capture_wan_shapes, dense_lse, kept_coverage, write_results

from dit_sparse.kernels import block_attention_mass
from dit_sparse.kernels.reference import normalize_mass

RESULTS = Path(__file__).resolve().parent / "results"
BLOCK = 64
KEEP = 0.2
STEP_COUNTS = (8, 20, 50)


def compare(before: tuple, now: tuple) -> dict[str, float]:
    """Coverage of the plans chosen with the step's own LSE and with the previous step's."""
    (q0, k0), (q1, k1) = before, now
    lse0, lse1 = dense_lse(q0, k0), dense_lse(q1, k1)
    exact = normalize_mass(block_attention_mass(q1, k1, lse1, BLOCK, BLOCK))
    stale = normalize_mass(block_attention_mass(q1, k1, lse0, BLOCK, BLOCK))
    keep = max(1, round(KEEP * exact.shape[-1]))
    return {
        "own_lse": kept_coverage(exact, exact, keep),
        "previous_lse": kept_coverage(exact, stale, keep),
        "lse_shift_mean_abs": (lse1 - lse0).abs().mean().item(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RESULTS / "warmup_lse-wan-shapes.json"))
    args = parser.parse_args(argv)
    results = []
    for num_steps in STEP_COUNTS:
        first = round(0.2 * num_steps)
        kept = capture_wan_shapes((first - 1, first), prompts=1, num_steps=num_steps)
        layers = sorted({layer for _, layer in kept})
        with torch.inference_mode():
            per_layer = [
                {"layer": layer} | compare(kept[(first - 1, layer)], kept[(first, layer)])
                for layer in layers
            ]
        mean = {
            key: sum(row[key] for row in per_layer) / len(per_layer)
            for key in ("own_lse", "previous_lse", "lse_shift_mean_abs")
        }
        results.append(
            {"num_steps": num_steps, "search_step": first, "mean": mean, "layers": per_layer}
        )
        print(
            f"{num_steps} steps, search at {first}: coverage {mean['own_lse']:.4f} with its own "
            f"LSE, {mean['previous_lse']:.4f} with step {first - 1}'s "
            f"(LSE moved {mean['lse_shift_mean_abs']:.3f} on average)",
            flush=True,
        )
    write_results(
        Path(args.out),
        torch.device("cpu"),
        {"model": "wan-shapes", "block": BLOCK, "keep": KEEP, "results": results},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
