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
from common import QKCapture, write_results

import dit_sparse
from dit_sparse.kernels import block_attention_mass
from dit_sparse.methods.adaspa_select import normalize_mass
from dit_sparse.pipelines.shapes import load_wan_shapes
from dit_sparse.synthetic import evaluation_prompts

RESULTS = Path(__file__).resolve().parent / "results"
BLOCK = 64
ROWS = (64, 32, 16, 8)
SPARSITIES = (0.8, 0.9)
STEPS = (3, 10)


def coverage_by_rows(q: torch.Tensor, k: torch.Tensor, sparsity: float) -> dict[int, float]:
    lse = torch.logsumexp(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, -1)
    exact = normalize_mass(block_attention_mass(q, k, lse, BLOCK, BLOCK))
    keep = max(1, round((1 - sparsity) * exact.shape[-1]))
    result = {}
    for rows in ROWS:
        mass = normalize_mass(block_attention_mass(q, k, lse, BLOCK, BLOCK, rows=rows))
        chosen = torch.topk(mass, keep, dim=-1).indices
        result[rows] = exact.gather(-1, chosen).sum(-1).mean().item()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RESULTS / "search_rows-wan-shapes.json"))
    args = parser.parse_args(argv)
    pipe = load_wan_shapes()
    pipe.set_progress_bar_config(disable=True)
    capture = QKCapture(steps=STEPS)
    with torch.inference_mode(), dit_sparse.attached(pipe, capture):
        pipe(
            prompt=evaluation_prompts(2),
            num_frames=61,
            height=64,
            width=64,
            num_inference_steps=20,
            generator=torch.Generator().manual_seed(0),
            output_type="latent",
        )
    results: list[dict[str, Any]] = []
    with torch.inference_mode():
        for sparsity in SPARSITIES:
            per_call = [coverage_by_rows(q, k, sparsity) for q, k in capture.kept.values()]
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
