# ruff: noqa: B023, E402  (a probe, kept as it was run; its lambdas run at once)
"""GPU probe: AdaSpa's selection with the Triton kernels (`kernels.block_select`) against the
torch versions they replaced, on the block mass of Wan 480p and 720p (random and structured
inputs of `attention_layer.py`).

    python benchmarks/probes/block_select.py OUT.json

Per case: whether the ranking and the block lists agree with the torch references (rows whose
order differs only through near-ties are counted, and the kept mass compared), and the GPU
time (CUDA events around 20 back-to-back calls) of the ranking, the block lists and the whole
`AdaSpa._select`, each both ways; then the ranking kernel alone (forced to run whatever the
row length) under several warp counts.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
import triton
from attention_layer import LAYOUTS, make_qkv

from dit_sparse.kernels import block_select, dense_attention_with_lse
from dit_sparse.kernels.dense_with_lse import dense_attention_with_mass
from dit_sparse.kernels.reference import (
    kept_blocks_ascending_reference,
    rank_key_blocks_reference,
)
from dit_sparse.methods import adaspa_select, resolve_method
from dit_sparse.quality.environment import environment

device = torch.device("cuda")
out_path = Path(sys.argv[1])
result: dict = {"environment": environment(device), "rows": []}
method = resolve_method("adaspa")


def gpu_ms(fn, calls: int = 20) -> float:
    fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / calls


def with_torch_selection(fn):
    """Run ``fn`` with adaspa_select calling the torch references instead of the kernels."""
    saved = adaspa_select.rank_key_blocks, adaspa_select.kept_blocks_ascending
    adaspa_select.rank_key_blocks = rank_key_blocks_reference
    adaspa_select.kept_blocks_ascending = kept_blocks_ascending_reference
    try:
        return fn()
    finally:
        adaspa_select.rank_key_blocks, adaspa_select.kept_blocks_ascending = saved


for name, (layout, heads, _) in LAYOUTS.items():
    for case in ("random", "structured"):
        q, k, v = make_qkv(case, layout, heads, device, torch.bfloat16)
        block = method.block_for(layout.seq_len)
        _, lse = dense_attention_with_lse(q, k, v)
        _, _, mass = dense_attention_with_mass(q, k, v, lse, block, block)
        nk = mass.shape[-1]
        limit = max(method._keep(1.0 - s, nk, 0) for s in adaspa_select.hierarchical_levels(0.8))
        forced = range(0)
        order, cum = block_select.rank_key_blocks(mass, forced, limit)
        ref_order, ref_cum = rank_key_blocks_reference(mass, forced, limit)
        same_rows = (order == ref_order).all(-1).float().mean().item()
        counts = torch.randint(1, limit + 1, mass.shape[:3], device=device)
        kept = block_select.kept_blocks_ascending(order, counts, limit)
        ref_kept = kept_blocks_ascending_reference(order, counts, limit)
        plan, coverage = method._select(mass, layout, None)
        ref_plan, ref_coverage = with_torch_selection(lambda: method._select(mass, layout, None))
        row = {
            "layout": name,
            "case": case,
            "mass_shape": list(mass.shape),
            "limit": limit,
            "rank_rows_identical": same_rows,
            "rank_cum_max_abs_diff": (cum - ref_cum).abs().max().item(),
            "kept_blocks_identical": bool(torch.equal(kept, ref_kept)),
            "plan_counts_identical": bool(torch.equal(plan.kv_counts, ref_plan.kv_counts)),
            "plan_blocks_identical_share": (plan.kv_indices == ref_plan.kv_indices)
            .float()
            .mean()
            .item(),
            "coverage_max_abs_diff": (coverage - ref_coverage).abs().max().item(),
            "rank_ms": gpu_ms(lambda: block_select.rank_key_blocks(mass, forced, limit)),
            "rank_torch_ms": gpu_ms(lambda: rank_key_blocks_reference(mass, forced, limit)),
            "kept_ms": gpu_ms(lambda: block_select.kept_blocks_ascending(order, counts, limit)),
            "kept_torch_ms": gpu_ms(lambda: kept_blocks_ascending_reference(order, counts, limit)),
            "select_ms": gpu_ms(lambda: method._select(mass, layout, None)),
            "select_torch_ms": with_torch_selection(
                lambda: gpu_ms(lambda: method._select(mass, layout, None))
            ),
        }
        result["rows"].append(row)
        print(row, flush=True)
        out_path.write_text(json.dumps(result, indent=1))

for name, (layout, heads, _) in LAYOUTS.items():
    q, k, v = make_qkv("random", layout, heads, device, torch.bfloat16)
    block = method.block_for(layout.seq_len)
    _, lse = dense_attention_with_lse(q, k, v)
    _, _, mass = dense_attention_with_mass(q, k, v, lse, block, block)
    nk = mass.shape[-1]
    limit = max(method._keep(1.0 - s, nk, 0) for s in adaspa_select.hierarchical_levels(0.8))
    order = torch.empty(*mass.shape[:3], limit, dtype=torch.int64, device=device)
    cum = torch.empty(*mass.shape[:3], limit, device=device)
    for warps in (2, 4, 8, 16):

        def launch():
            block_select._rank_rows[(mass.numel() // nk,)](
                mass, order, cum, nk, limit, 0, 0,
                NK=triton.next_power_of_2(nk), TINY=block_select._TINY,
                INF_BITS=block_select._INF_BITS, num_warps=warps,
            )  # fmt: skip

        row = {"layout": name, "kernel": "_rank_rows", "warps": warps, "ms": gpu_ms(launch)}
        result["rows"].append(row)
        print(row, flush=True)
        out_path.write_text(json.dumps(result, indent=1))
