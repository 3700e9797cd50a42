"""How many rows AdaSpa's mass pass needs: plans chosen from sampled rows vs from all rows.

    python benchmarks/search_rows.py [--out PATH]     # CPU, about 3 minutes

Runs the trained ``wan-shapes`` model (61 frames of 64x64, 20 steps, 2 prompts) and keeps the
cond branch's q and k of every layer at steps 3 and 10. For each, the block mass is computed
exactly and from ``rows`` evenly spaced rows of every 64-row query block (`block_attention_mass`
with ``rows``); each row of blocks keeps its top ``(1 - sparsity)`` share of key blocks by that
mass, and the kept blocks' *exact* mass is the coverage. Written: the mean and the lowest
coverage per row count, and the mean relative loss against all rows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from common import capture_wan_shapes, dense_lse, kept_coverage, write_results

from dit_sparse.kernels import block_attention_mass
from dit_sparse.kernels.reference import normalize_mass

RESULTS = Path(__file__).resolve().parent / "results"
BLOCK = 64
ROWS = (64, 32, 16, 8)
SPARSITIES = (0.8, 0.9)
STEPS = (3, 10)


def coverage_by_rows(q: torch.Tensor, k: torch.Tensor, sparsity: float) -> dict[int, float]:
    lse = dense_lse(q, k)
    exact = normalize_mass(block_attention_mass(q, k, lse, BLOCK, BLOCK))
    keep = max(1, round((1 - sparsity) * exact.shape[-1]))
    result = {}
    for rows in ROWS:
        mass = normalize_mass(block_attention_mass(q, k, lse, BLOCK, BLOCK, rows=rows))
        result[rows] = kept_coverage(exact, mass, keep)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RESULTS / "search_rows-wan-shapes.json"))
    args = parser.parse_args(argv)
    kept = capture_wan_shapes(STEPS, prompts=2, num_steps=20)
    results: list[dict[str, Any]] = []
    with torch.inference_mode():
        for sparsity in SPARSITIES:
            per_call = [coverage_by_rows(q, k, sparsity) for q, k in kept.values()]
            full = [c[BLOCK] for c in per_call]
            results.append(
                {
                    "sparsity": sparsity,
                    "calls": len(per_call),
                    "rows": {
                        rows: {
                            "mean_coverage": sum(c[rows] for c in per_call) / len(per_call),
                            "min_coverage": min(c[rows] for c in per_call),
                            "mean_relative_loss": sum(
                                1 - c[rows] / f for c, f in zip(per_call, full)
                            )
                            / len(per_call),
                        }
                        for rows in ROWS
                    },
                }
            )
    write_results(
        Path(args.out),
        torch.device("cpu"),
        {"model": "wan-shapes", "block": BLOCK, "steps": STEPS, "results": results},
    )
    for entry in results:
        cells = ", ".join(
            f"{rows} rows {r['mean_coverage']:.4f} (-{r['mean_relative_loss']:.2%})"
            for rows, r in entry["rows"].items()
        )
        print(f"sparsity {entry['sparsity']}: {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
