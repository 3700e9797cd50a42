# ruff: noqa: B023, E402, E731, SIM115  (a one-off probe, kept as it was run)
"""GPU checks of the new paths: bf16/fp16 against float64 references."""

import dataclasses
import json
import sys

import torch

from dit_sparse import SparseVideoGen
from dit_sparse.kernels import block_attention_mass, block_sparse_attention, masked_row_errors
from dit_sparse.kernels.block_mass import sampled_rows
from dit_sparse.kernels.reference import (
    block_attention_mass_reference,
    block_sparse_attention_reference,
    masked_row_errors_reference,
)
from dit_sparse.layout import TokenLayout


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


out = {}
dev = "cuda"
g = torch.Generator(dev).manual_seed(0)
for dtype in (torch.bfloat16, torch.float16):
    name = str(dtype).removeprefix("torch.")
    r = {}
    for D in (64, 128, 256):
        layout = TokenLayout(5, 30, 52)  # 7800 tokens
        H = 4
        q, k, v = (
            torch.randn(2, H, layout.seq_len, D, device=dev, generator=g, dtype=dtype)
            for _ in range(3)
        )
        svg = SparseVideoGen()
        masks = svg.masks(layout, dev)
        rows = svg.sample_rows(layout, dev, None)
        err = masked_row_errors(q, k, v, rows, masks.token_blocks, masks.block_masks)
        ref = masked_row_errors_reference(
            q.double(), k.double(), v.double(), rows, masks.token_blocks, masks.block_masks, D**-0.5
        )
        r[f"masked_rows_D{D}_rel"] = rel(err, ref)
        kinds = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 1]], device=dev)
        plan = masks.plan(kinds)
        o = block_sparse_attention(q, k, v, plan)
        oref = block_sparse_attention_reference(q.double(), k.double(), v.double(), plan)
        r[f"svg_plan_D{D}_rel"] = rel(o, oref)
        all_perm = dataclasses.replace(plan, permuted=None)
        r[f"svg_plan_all_permuted_D{D}_rel"] = rel(block_sparse_attention(q, k, v, all_perm), oref)
        lse = torch.logsumexp(q.float() @ k.float().transpose(-1, -2) * D**-0.5, -1)
        for rows_n in (16, 8):
            m = block_attention_mass(q, k, lse, 64, 64, rows=rows_n)
            mref = block_attention_mass_reference(
                sampled_rows(q, 64, rows_n).double(),
                k.double(),
                sampled_rows(lse, 64, rows_n).double(),
                rows_n,
                64,
            )
            r[f"mass_rows{rows_n}_D{D}_maxabs"] = (m.double() - mref).abs().max().item()
        m = block_attention_mass(q, k, lse, 64, 64)
        mref = block_attention_mass_reference(q.double(), k.double(), lse.double(), 64, 64)
        r[f"mass_exact_D{D}_maxabs"] = (m.double() - mref).abs().max().item()
    out[name] = r
    print(name, json.dumps(r, indent=1), flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)

from triton.testing import do_bench

sel = {}
for name, H, nq in (("480p", 12, 512), ("720p", 40, 1182)):
    m = torch.rand(1, H, nq, nq, device=dev)
    for limit in (int(0.3 * nq), int(0.1 * nq)):
        t_topk = do_bench(lambda: torch.topk(m, limit, dim=-1, sorted=True), warmup=5, rep=50)
        t_sort = do_bench(
            lambda: (
                torch.sort(m, dim=-1, descending=True, stable=True)
                .indices[..., :limit]
                .contiguous()
            ),
            warmup=5,
            rep=50,
        )
        sel[f"{name}_limit{limit}"] = {"topk_ms": t_topk, "sort_ms": t_sort}
print(json.dumps(sel, indent=1))
out["selection"] = sel
json.dump(out, open(sys.argv[1], "w"), indent=1)
