# ruff: noqa: B023, E402  (a probe, kept as it was run)
"""GPU probe: AdaSpa's block-mass sums stored per warp (inline PTX store or ``tl.store``), and
SVG's profiling kernel with its head dim split over 1 or 2 programs.

    python benchmarks/probes/mass_store_and_svg_columns.py OUT.json

Checks each variant against a float64 reference (bf16 and fp16, ragged sizes), then times
them at Wan 480p / 720p beside cuDNN dense, each a mean of back-to-back calls. The variants
are picked by the environment variables the kernels read while this probe was written
(``DIT_SPARSE_MASS_STORE``, ``DIT_SPARSE_SVG_COLUMNS``).
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from attention_layer import LAYOUTS, mean_seconds

from dit_sparse.kernels import block_attention_mass, dense_attention_with_mass, masked_row_errors
from dit_sparse.kernels import masked_rows as mr
from dit_sparse.kernels.reference import (
    block_attention_mass_reference,
    block_sparse_attention_reference,
    masked_row_errors_reference,
)
from dit_sparse.layout import TokenLayout
from dit_sparse.methods import resolve_method
from dit_sparse.plan import BlockPlan
from dit_sparse.quality.environment import environment

device = torch.device("cuda")
out_path = Path(sys.argv[1])
result: dict = {"environment": environment(device), "checks": [], "timings": []}


def save() -> None:
    out_path.write_text(json.dumps(result, indent=1))


def rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


torch.manual_seed(0)
for store in ("asm", "store"):
    os.environ["DIT_SPARSE_MASS_STORE"] = store
    for dtype in (torch.bfloat16, torch.float16):
        for seq_len, block in ((1000, 64), (777, 128), (300, 16)):
            q, k, v = (torch.randn(2, 3, seq_len, 128, device=device, dtype=dtype) for _ in "qkv")
            q64, k64, v64 = (t.double() for t in (q, k, v))
            dense = BlockPlan.dense(1, 1, seq_len, 16, 16, device=device)
            ref_out, ref_lse = block_sparse_attention_reference(
                q64, k64, v64, dense, 128**-0.5, return_lse=True
            )
            stale = ref_lse.float() + 0.05 * torch.randn_like(ref_lse.float())
            out, lse, mass = dense_attention_with_mass(q, k, v, stale, block, block)
            ref_mass = block_attention_mass_reference(q64, k64, stale.double(), block, block)
            alone = block_attention_mass(q, k, ref_lse.float(), block, block)
            ref_alone = block_attention_mass_reference(q64, k64, ref_lse, block, block)
            result["checks"].append(
                {
                    "store": store,
                    "dtype": str(dtype),
                    "seq_len": seq_len,
                    "block": block,
                    "fused_out_rel": rel(out, ref_out),
                    "fused_lse_abs": float((lse.double() - ref_lse).abs().max()),
                    "fused_mass_abs": float((mass.double() - ref_mass).abs().max()),
                    "mass_pass_abs": float((alone.double() - ref_alone).abs().max()),
                    "mass_rows_sum_err": float((alone.sum(-1) - 1).abs().max()),
                }
            )
            print(result["checks"][-1], flush=True)
svg = resolve_method("svg")
for columns in (128, 64):
    mr._GPU_COLUMNS[128] = columns
    for dtype in (torch.bfloat16, torch.float16):
        layout = TokenLayout(5, 10, 13)
        q, k, v = (
            torch.randn(2, 3, layout.seq_len, 128, device=device, dtype=dtype) for _ in "qkv"
        )
        masks = svg.masks(layout, device)
        rows = svg.sample_rows(layout, device, None)
        got = masked_row_errors(q, k, v, rows, masks.token_blocks, masks.block_masks)
        ref = masked_row_errors_reference(
            q.double(), k.double(), v.double(), rows, masks.token_blocks, masks.block_masks,
            128**-0.5,
        )  # fmt: skip
        result["checks"].append(
            {"svg_columns": columns, "dtype": str(dtype), "errors_rel": rel(got, ref)}
        )
        print(result["checks"][-1], flush=True)
save()

for name, (layout, heads, _) in LAYOUTS.items():
    q, k, v = (
        torch.randn(1, heads, layout.seq_len, 128, device=device, dtype=torch.bfloat16)
        for _ in "qkv"
    )
    block = resolve_method("adaspa").block_for(layout.seq_len)
    lse = torch.randn(1, heads, layout.seq_len, device=device) + 12.0
    row = {"layout": name, "heads": heads, "seq_len": layout.seq_len, "block": block}
    row["cudnn"] = mean_seconds(lambda: F.scaled_dot_product_attention(q, k, v), device)
    for store in ("asm", "store"):
        os.environ["DIT_SPARSE_MASS_STORE"] = store
        row[f"dense_with_mass_{store}"] = mean_seconds(
            lambda: dense_attention_with_mass(q, k, v, lse, block, block), device
        )
        row[f"mass_pass_{store}"] = mean_seconds(
            lambda: block_attention_mass(q, k, lse, block, block), device
        )
    masks = svg.masks(layout, device)
    rows = svg.sample_rows(layout, device, None)
    for columns in (128, 64):
        mr._GPU_COLUMNS[128] = columns
        for splits in (None, 8, 16, 32):
            row[f"svg_errors_c{columns}_s{splits}"] = mean_seconds(
                lambda: masked_row_errors(
                    q, k, v, rows, masks.token_blocks, masks.block_masks, splits=splits
                ),
                device,
            )
    result["timings"].append(row)
    print(
        {key: round(val * 1e3, 4) if isinstance(val, float) else val for key, val in row.items()},
        flush=True,
    )
    save()
