"""GPU probe: does a persistent grid hide the per-program fixed cost of short rows (issue 29's
bf16 target: >= 0.8 / density at densities 1/8 and 1/16, S = 32,760)?

    python benchmarks/probes/persistent_short_rows.py --out OUT.json       # one GPU
    TRITON_INTERPRET=1 python benchmarks/probes/persistent_short_rows.py --tiny --out OUT.json

At 12 heads x 32,768 tokens (S a multiple of the 128-token block, so no tile needs a mask),
D = 128, bf16, on `kernel.py`'s random plans (diagonal kept), `triton.testing.do_bench`
medians of:

- ``package``: `block_sparse_attention`'s kernel (one program per query block and head);
- ``grid``: this probe's kernel with one program per (query block, head), the package's loop
  without its options (no permutation, head plans, mass or LSE);
- ``persistent``: the same kernel on ``programs`` programs (multiples of the SM count) that
  walk the (query block, head) work items in turn, with and without ``tl.range(...,
  flatten=True)``, which asks Triton to fuse the two loops into one software pipeline, so
  that one item's epilogue and the next one's Q load overlap the K/V loads in flight;
- cuDNN's dense attention, the yardstick (``speedup x density``; the target is 0.8).

Every variant's output is checked against the package kernel's (``max_abs_diff``). A variant
that fails to compile is recorded with its error. ``--tiny`` runs small sizes under Triton's
interpreter (speed meaningless) to check the kernels' outputs.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from attention_layer import dense_attention
from common import error_text, triton_probe_args, write_results
from kernel import bench, random_plan

from dit_sparse.kernels import block_sparse_attention
from dit_sparse.kernels.launch import LOG2E, tl, triton

HEADS, SEQ_LEN, HEAD_DIM, BLOCK = 12, 32768, 128, 128
DENSITIES = (1.0, 1 / 8, 1 / 16)
TINY = dict(heads=2, seq_len=256, head_dim=32, block=32, densities=(1.0, 0.25))
OCCUPANCY = (1, 2)  # programs per SM of the persistent grid


@triton.jit
def _attend_item(
    Q, K, V, Out, KV_IDX, KV_CNT, work, n_qblocks, max_kv, seq_len, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """One (query block, head) work item: the package kernel's loop, every tile unmasked.
    32-bit offsets: the probe's tensors hold fewer than 2^31 elements."""
    q_block = work % n_qblocks
    base = (work // n_qblocks) * seq_len * HEAD_DIM
    rows = q_block * BLOCK + tl.arange(0, BLOCK)
    offs_n = tl.arange(0, BLOCK)
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + base + rows[:, None] * HEAD_DIM + dims[None, :])
    count = tl.load(KV_CNT + work)
    idx_ptr = KV_IDX + work * max_kv
    m_i = tl.full([BLOCK], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK], tl.float32)
    acc = tl.zeros([BLOCK, HEAD_DIM], tl.float32)
    offsets = offs_n[:, None] * HEAD_DIM + dims[None, :]
    # The next block index loaded one tile ahead, as the package kernel does.
    block_1 = tl.load(idx_ptr, mask=count > 0, other=0)
    for t in tl.range(0, count):
        start = block_1 * BLOCK
        block_1 = tl.load(idx_ptr + t + 1, mask=t + 1 < count, other=0)
        k = tl.load(K + base + start * HEAD_DIM + offsets)
        v = tl.load(V + base + start * HEAD_DIM + offsets)
        qk = tl.dot(q, tl.trans(k))
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        p = tl.math.exp2(qk * qk_scale - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(Out + base + rows[:, None] * HEAD_DIM + dims[None, :], out.to(Out.dtype.element_ty))


@triton.jit
def _grid_fwd(
    Q, K, V, Out, KV_IDX, KV_CNT, n_qblocks, max_kv, seq_len, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    _attend_item(
        Q, K, V, Out, KV_IDX, KV_CNT, tl.program_id(0), n_qblocks, max_kv, seq_len, qk_scale,
        HEAD_DIM, BLOCK,
    )  # fmt: skip


@triton.jit
def _persistent_fwd(
    Q, K, V, Out, KV_IDX, KV_CNT, items, n_qblocks, max_kv, seq_len, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr, PROGRAMS: tl.constexpr, FLATTEN: tl.constexpr,
):  # fmt: skip
    for work in tl.range(tl.program_id(0), items, PROGRAMS, flatten=FLATTEN):
        _attend_item(
            Q, K, V, Out, KV_IDX, KV_CNT, work, n_qblocks, max_kv, seq_len, qk_scale,
            HEAD_DIM, BLOCK,
        )  # fmt: skip


def launch(q, k, v, plan, variant: tuple[str, int, bool]) -> torch.Tensor:
    """Run ``variant`` = ``("grid", 0, False)`` or ``("persistent", programs, flatten)``."""
    _, heads, seq_len, dim = q.shape
    out = torch.empty_like(q)
    n_qblocks, max_kv = plan.kv_indices.shape[2:]
    kv_indices = plan.kv_indices.contiguous()
    kv_counts = plan.kv_counts.contiguous()
    scale = LOG2E / math.sqrt(dim)
    name, programs, flatten = variant
    common = (q, k, v, out, kv_indices, kv_counts)
    sizes = (n_qblocks, max_kv, seq_len, scale)
    if name == "grid":
        _grid_fwd[(n_qblocks * heads,)](
            *common, *sizes, HEAD_DIM=dim, BLOCK=plan.block_q, num_warps=8, num_stages=3
        )
    else:
        _persistent_fwd[(programs,)](
            *common, n_qblocks * heads, *sizes, HEAD_DIM=dim, BLOCK=plan.block_q,
            PROGRAMS=programs, FLATTEN=flatten, num_warps=8, num_stages=3,
        )  # fmt: skip
    return out


def variants(items: int, sms: int) -> list[tuple[str, int, bool]]:
    found = [("grid", 0, False)]
    for occupancy in OCCUPANCY:
        programs = min(items, occupancy * sms)
        found += [("persistent", programs, False), ("persistent", programs, True)]
    return found


def main(argv: list[str] | None = None) -> int:
    args, gpu = triton_probe_args(__doc__.splitlines()[0], argv)
    device = torch.device("cuda" if gpu else "cpu")
    dtype = torch.bfloat16 if gpu else torch.float16  # the interpreter's bf16 dots are wrong
    size = (
        dict(heads=HEADS, seq_len=SEQ_LEN, head_dim=HEAD_DIM, block=BLOCK, densities=DENSITIES)
        if gpu
        else TINY
    )
    heads, seq_len, dim, block = (size[k] for k in ("heads", "seq_len", "head_dim", "block"))
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, heads, seq_len, dim, device=device, dtype=dtype) for _ in range(3))
    sms = torch.cuda.get_device_properties(device).multi_processor_count if gpu else 3
    items = heads * (seq_len // block)
    rows: list[dict[str, Any]] = []
    dense_name, dense_ms = None, None
    if gpu:
        dense_name, dense = dense_attention(q, k, v)
        dense_ms = bench(dense, device)
    for density in size["densities"]:
        plan = random_plan(heads, seq_len, block, density, device)
        expected = block_sparse_attention(q, k, v, plan)
        row: dict[str, Any] = {"density": density, "plan_density": plan.density}
        if gpu:
            row["package_ms"] = bench(lambda p=plan: block_sparse_attention(q, k, v, p), device)
        for variant in variants(items, sms):
            name = f"{variant[0]}" + (f"/{variant[1]}/flatten={variant[2]}" if variant[1] else "")
            try:
                out = launch(q, k, v, plan, variant)
                entry: dict[str, Any] = {
                    "max_abs_diff": float((out.float() - expected.float()).abs().max())
                }
                if gpu:
                    entry["ms"] = bench(lambda p=plan, x=variant: launch(q, k, v, p, x), device)
                    entry["speedup_x_density"] = dense_ms / entry["ms"] * density
            except Exception as err:  # noqa: BLE001  (a variant that fails to compile or run)
                entry = {"error": error_text(err)}
            row[name] = entry
        if gpu:
            row["package_speedup_x_density"] = dense_ms / row["package_ms"] * density
        print(row, flush=True)
        rows.append(row)
    body = {
        "tiny": args.tiny,
        "dtype": str(dtype).removeprefix("torch."),
        "heads": heads,
        "seq_len": seq_len,
        "head_dim": dim,
        "block": block,
        "sms": sms,
        "dense": dense_name,
        "dense_ms": dense_ms,
        "rows": rows,
    }
    write_results(Path(args.out), device, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
