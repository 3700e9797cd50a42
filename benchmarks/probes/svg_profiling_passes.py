# ruff: noqa: B023, E731  (a one-off probe, kept as it was run)
"""SVG's profiling pass on an H100: three outputs in one program against one per program.

`masked_row_errors` needs, for 64 sampled rows per head, the output over all keys and under
each of two masks. Variant ``fused`` (defined here, the design before) keeps three fp32
``[64, D]`` accumulators in one program; the package's kernel runs three programs, one
accumulator each, over the same key split. Both read the masks' keep flags from
`pack_keep_bits`. Times are CUDA-event means over back-to-back calls of the whole function
(partial pass, merge, final sum) and, from the profiler, the partial pass alone; ``splits`` is
the key splits per head. Run: ``python benchmarks/probes/svg_profiling_passes.py OUT.json``.
"""

import json
import sys

import torch
import triton
import triton.language as tl
from torch.profiler import ProfilerActivity, profile

from dit_sparse.kernels import masked_row_errors
from dit_sparse.kernels import masked_rows as package
from dit_sparse.layout import TokenLayout
from dit_sparse.methods import resolve_method


@triton.jit
def _fused_partial(
    Q, K, V, ROWS, TB, KB, WS_M, WS_L, WS_ACC, stride_s, heads, seq_len, keys_per_split,
    splits, qk_scale, row_bytes, nq, HEAD_DIM: tl.constexpr, ROWS_N: tl.constexpr,
    BLOCK_N: tl.constexpr,
):  # fmt: skip
    """All keys, mask 0 and mask 1 of ``ROWS_N`` rows in one program: one running max (over
    all keys), three sums and accumulators. Contiguous [1, H, S, D] inputs only."""
    split = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    offs_r = tl.arange(0, ROWS_N)
    rows = tl.load(ROWS + offs_r)
    q = tl.load(Q + (bh * seq_len + rows[:, None]) * stride_s + offs_d[None, :])
    kb0 = KB + tl.load(TB + rows)[:, None] * row_bytes + offs_n[None, :] // 8
    kb1 = KB + (nq + tl.load(TB + seq_len + rows))[:, None] * row_bytes + offs_n[None, :] // 8
    shift = (offs_n % 8).to(tl.uint8)[None, :]
    k_base = K + bh * seq_len * stride_s
    v_base = V + bh * seq_len * stride_s
    offsets = offs_n[:, None] * stride_s + offs_d[None, :]
    m_i = tl.full([ROWS_N], float("-inf"), tl.float32)
    l_a = tl.zeros([ROWS_N], tl.float32)
    l_0 = tl.zeros([ROWS_N], tl.float32)
    l_1 = tl.zeros([ROWS_N], tl.float32)
    acc_a = tl.zeros([ROWS_N, HEAD_DIM], tl.float32)
    acc_0 = tl.zeros([ROWS_N, HEAD_DIM], tl.float32)
    acc_1 = tl.zeros([ROWS_N, HEAD_DIM], tl.float32)
    start = split * keys_per_split
    end = tl.minimum(seq_len, start + keys_per_split)
    for n0 in tl.range(start, end, BLOCK_N):
        valid = n0 + offs_n < end
        k = tl.load(k_base + tl.cast(n0, tl.int64) * stride_s + offsets, mask=valid[:, None])
        v = tl.load(v_base + tl.cast(n0, tl.int64) * stride_s + offsets, mask=valid[:, None])
        qk = tl.where(valid[None, :], tl.dot(q, tl.trans(k)) * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(qk - m_new[:, None])
        p0 = tl.where(((tl.load(kb0 + n0 // 8) >> shift) & 1) != 0, p, 0.0)
        p1 = tl.where(((tl.load(kb1 + n0 // 8) >> shift) & 1) != 0, p, 0.0)
        l_a = l_a * alpha + tl.sum(p, 1)
        l_0 = l_0 * alpha + tl.sum(p0, 1)
        l_1 = l_1 * alpha + tl.sum(p1, 1)
        acc_a = tl.dot(p.to(v.dtype), v, acc_a * alpha[:, None])
        acc_0 = tl.dot(p0.to(v.dtype), v, acc_0 * alpha[:, None])
        acc_1 = tl.dot(p1.to(v.dtype), v, acc_1 * alpha[:, None])
        m_i = m_new
    # The package's workspace layout: [BH, splits, 3 outputs, R (, D)], one max per output.
    slot = (bh * splits + split) * 3
    ptrs = WS_ACC + (slot * ROWS_N + offs_r[:, None]) * HEAD_DIM + offs_d[None, :]
    tl.store(WS_M + slot * ROWS_N + offs_r, m_i)
    tl.store(WS_M + (slot + 1) * ROWS_N + offs_r, m_i)
    tl.store(WS_M + (slot + 2) * ROWS_N + offs_r, m_i)
    tl.store(WS_L + slot * ROWS_N + offs_r, l_a)
    tl.store(WS_L + (slot + 1) * ROWS_N + offs_r, l_0)
    tl.store(WS_L + (slot + 2) * ROWS_N + offs_r, l_1)
    tl.store(ptrs, acc_a)
    tl.store(ptrs + ROWS_N * HEAD_DIM, acc_0)
    tl.store(ptrs + 2 * ROWS_N * HEAD_DIM, acc_1)


def fused_errors(q, k, v, rows, masks, splits):
    _, heads, seq_len, dim = q.shape
    count = rows.numel()
    keys_per_split = triton.cdiv(triton.cdiv(seq_len, splits), 64) * 64
    splits = triton.cdiv(seq_len, keys_per_split)
    ws_m = torch.empty(heads * splits * 3, count, device=q.device)
    ws_l = torch.empty_like(ws_m)
    ws_acc = torch.empty(heads * splits * 3, count, dim, device=q.device)
    kb = masks.keep_bits
    _fused_partial[(splits, heads)](
        q, k, v, rows, masks.token_blocks, kb, ws_m, ws_l, ws_acc, q.stride(2), heads,
        seq_len, keys_per_split, splits, dim**-0.5 * package.LOG2E, kb.shape[2], kb.shape[1],
        HEAD_DIM=dim, ROWS_N=count, BLOCK_N=64, num_warps=4, num_stages=2,
    )  # fmt: skip
    partial = torch.empty(heads, count // 16, 2, device=q.device)
    package._merge_errors[(heads, count // 16)](
        ws_m, ws_l, ws_acc, partial, splits, count, count, HEAD_DIM=dim, ROW_TILE=16
    )
    return (partial.sum(1) / (count * dim)).view(1, heads, 2)


def mean_us(f, calls=30):
    for _ in range(3):
        f()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        f()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000 / calls


def partial_us(f, name, calls=10):
    f()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            f()
        torch.cuda.synchronize()
    return sum(e.self_device_time_total for e in prof.key_averages() if name in e.key) / calls


def main(path: str) -> None:
    result = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    result["triton"] = triton.__version__
    svg = resolve_method("svg")
    for name, layout, heads in (
        ("480p", TokenLayout(21, 30, 52), 12),
        ("720p", TokenLayout(21, 45, 80), 40),
    ):
        g = torch.Generator("cuda").manual_seed(0)
        q, k, v = (
            torch.randn(1, heads, layout.seq_len, 128, device="cuda", generator=g).bfloat16()
            for _ in range(3)
        )
        masks = svg.masks(layout, "cuda")
        rows = svg.sample_rows(layout, "cuda", None)
        args = (q, k, v, rows, masks.token_blocks, masks.block_masks)
        default = lambda splits=None: masked_row_errors(
            *args, splits=splits, keep_bits=masks.keep_bits
        )
        reference = default().double()
        rows_out = []
        for splits in (2, 3, 4, 6, 8, 11, 16, 21):
            for design, f in (
                ("one output per program", lambda s=splits: default(s)),
                ("fused", lambda s=splits: fused_errors(q, k, v, rows, masks, s)),
            ):
                got = f().double()
                rows_out.append(
                    {
                        "design": design,
                        "splits": splits,
                        "call_us": round(mean_us(f), 1),
                        "partial_pass_us": round(partial_us(f, "partial"), 1),
                        "max_rel_diff": ((got - reference).abs() / reference).max().item(),
                    }
                )
                print(name, rows_out[-1], flush=True)
        result[name] = {
            "heads": heads,
            "seq_len": layout.seq_len,
            "default_call_us": round(mean_us(default), 1),
            "variants": rows_out,
        }
        print(name, "default", result[name]["default_call_us"], flush=True)
    with open(path, "w") as out:
        json.dump(result, out, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
