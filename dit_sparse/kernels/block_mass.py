"""Attention mass per (query block, key block) from a cached LSE, in one fused Triton pass.

AdaSpa's "LSE-cached search": with the row log-sum-exps of a dense pass at hand, the share of a
row's attention that falls on key ``j`` is ``exp(q . k_j * scale - lse)`` exactly, so one pass of
``Q K^T`` (no ``P V``, no running max) gives every block's mass without an S x S tensor.
"""

from __future__ import annotations

import torch

from ._runtime import (
    INTERPRETED,
    LOG2E,
    KernelConfig,
    check_block,
    check_qkv,
    resolve_scale,
    tl,
    triton,
    triton_runs_on,
    warn_fallback,
)
from .reference import block_attention_mass_reference

# Per head dim on CUDA. On an H100 (Wan 480p, D = 128, blocks of 64;
# benchmarks/probes/sweep_mass_and_rows.py) 128 x 128 tiles with 8 warps and 2 stages ran
# fastest: 6.5 ms, against 7.3 ms for 128 x 64 tiles with 4 warps (one block per tile, the
# earlier choice) and 9.3-9.8 ms for 3 stages or 256-row tiles. A tile then covers two
# 64-key blocks; at 720p the same config is 2% faster.
_GPU_CONFIGS = {
    16: KernelConfig(128, 128, 4, 2),
    32: KernelConfig(128, 128, 4, 2),
    64: KernelConfig(128, 128, 4, 2),
    128: KernelConfig(128, 128, 8, 2),
    256: KernelConfig(64, 64, 4, 2),
}
_INTERPRETER_CONFIG = KernelConfig(128, 128, 4, 1)


@triton.jit
def block_mass_rows(
    lse_ptr,
    stride_ls,
    mass_ptr,
    stride_mq,
    pid_m,
    q_len,
    num_q_blocks,
    BLOCK_M: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    GROUPS: tl.constexpr,
):
    """For a program's ``BLOCK_M`` rows: their LSE in log2 units (``+inf`` for rows past the
    end or with LSE ``-inf``, so they add no mass), and for the ``GROUPS`` query blocks they
    fall in, the output row pointers, which exist, and 1 / rows of each block."""
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_valid = offs_m < q_len
    lse = tl.load(lse_ptr + offs_m * stride_ls, mask=row_valid, other=float("-inf"))
    lse2 = tl.where(lse > float("-inf"), lse * 1.4426950408889634, float("inf"))
    q_blocks = (pid_m * BLOCK_M) // BLOCK_Q + tl.arange(0, GROUPS)
    rows_in_block = tl.minimum(BLOCK_Q, q_len - q_blocks * BLOCK_Q).to(tl.float32)
    inv_rows = 1.0 / tl.maximum(rows_in_block, 1.0)
    return lse2, mass_ptr + q_blocks * stride_mq, q_blocks < num_q_blocks, inv_rows


@triton.jit
def add_block_mass(
    p,
    weight,
    out_ptrs,
    out_valid,
    inv_rows,
    start,
    num_k_blocks,
    stride_mk,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUPS: tl.constexpr,
    ATOMIC: tl.constexpr,
):
    """Add one tile of probabilities ``p`` ``[BLOCK_M, BLOCK_N]`` (keys ``start..``), each row
    scaled by ``weight`` ``[BLOCK_M]``, to the mass of its key blocks in the ``GROUPS`` output
    rows ``out_ptrs`` (one per query block of the tile's rows; means via ``inv_rows``). Shared
    by the mass pass and the dense pass that fuses it (`block_sparse_attention`)."""
    # A tile covers SPAN key blocks, or 1/(BLOCK_K // BLOCK_N) of one.
    SPAN: tl.constexpr = BLOCK_N // BLOCK_K if BLOCK_N > BLOCK_K else 1
    # Sum along the keys first (within a thread's registers): [BLOCK_M, SPAN] per-row masses.
    if SPAN == 1:
        per_row = tl.expand_dims(tl.sum(p, 1), 1)
    else:
        per_row = tl.sum(tl.reshape(p, [BLOCK_M, SPAN, BLOCK_N // SPAN]), 2)
    per_row = per_row * weight[:, None]
    rows = tl.reshape(per_row, [GROUPS, BLOCK_M // GROUPS, SPAN])
    mass = tl.sum(rows, 1) * inv_rows[:, None]
    blocks = start // BLOCK_K + tl.arange(0, SPAN)
    ptrs = out_ptrs[:, None] + blocks[None, :] * stride_mk
    valid = out_valid[:, None] & (blocks[None, :] < num_k_blocks)
    if ATOMIC:
        tl.atomic_add(ptrs, mass, mask=valid)
    else:
        tl.store(ptrs, mass, mask=valid)


@triton.jit
def _mass_tiles(
    q,
    lse2,
    k_ptr,
    out_ptrs,
    out_valid,
    inv_rows,
    first,
    last,
    k_len,
    num_k_blocks,
    qk_scale,
    stride_ks,
    stride_mk,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUPS: tl.constexpr,
    MASK: tl.constexpr,
    ATOMIC: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Mass of key tiles ``first..last`` (``BLOCK_N`` keys each) into the ``GROUPS`` output
    rows ``out_ptrs`` (one per query block of the tile's rows)."""
    offs_n = tl.arange(0, BLOCK_N)
    ones = tl.full([BLOCK_M], 1.0, tl.float32)
    # A scalar base per tile plus loop-invariant 32-bit offsets: one instruction per address.
    k_offsets = offs_n[:, None] * stride_ks + tl.arange(0, HEAD_DIM)[None, :]
    for t in tl.range(first, last):
        pos = t * BLOCK_N + offs_n
        k_ptrs = (k_ptr + tl.cast(t * BLOCK_N, tl.int64) * stride_ks) + k_offsets
        # Unmasked tiles load without a mask (None), which keeps their loads unpredicated.
        row_mask = None
        fill = None
        if MASK:
            row_mask = pos[:, None] < k_len
            fill = 0
        k = tl.load(k_ptrs, mask=row_mask, other=fill)
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
        p = tl.math.exp2(qk * qk_scale - lse2[:, None])
        if MASK:
            p = tl.where(pos[None, :] < k_len, p, 0.0)
        add_block_mass(
            p, ones, out_ptrs, out_valid, inv_rows, t * BLOCK_N, num_k_blocks, stride_mk,
            BLOCK_M, BLOCK_N, BLOCK_K, GROUPS, ATOMIC,
        )  # fmt: skip


@triton.jit
def _block_mass_fwd(
    Q,
    K,
    LSE,
    MASS,
    stride_qb,
    stride_qh,
    stride_qs,
    stride_kb,
    stride_kh,
    stride_ks,
    stride_lb,
    stride_lh,
    stride_ls,
    stride_mb,
    stride_mh,
    stride_mq,
    stride_mk,
    heads,
    q_len,
    k_len,
    num_q_blocks,
    num_k_blocks,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr,
    ATOMIC: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    # A program's BLOCK_M rows are GROUPS whole query blocks, or part of one (then ATOMIC).
    GROUPS: tl.constexpr = BLOCK_M // BLOCK_Q if BLOCK_M > BLOCK_Q else 1
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // heads).to(tl.int64)
    h = (pid_bh % heads).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_valid = offs_m < q_len
    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qs
    q = tl.load(q_ptrs + tl.arange(0, HEAD_DIM)[None, :], mask=row_valid[:, None], other=0.0)
    lse2, out_ptrs, out_valid, inv_rows = block_mass_rows(
        LSE + b * stride_lb + h * stride_lh, stride_ls, MASS + b * stride_mb + h * stride_mh,
        stride_mq, pid_m, q_len, num_q_blocks, BLOCK_M, BLOCK_Q, GROUPS,
    )  # fmt: skip
    k_ptr = K + b * stride_kb + h * stride_kh
    tiles = tl.cdiv(k_len, BLOCK_N)
    full_tiles = k_len // BLOCK_N
    _mass_tiles(
        q, lse2, k_ptr, out_ptrs, out_valid, inv_rows, 0, full_tiles, k_len, num_k_blocks,
        qk_scale, stride_ks, stride_mk, HEAD_DIM, BLOCK_M, BLOCK_N, BLOCK_K, GROUPS, False,
        ATOMIC, DOT_PRECISION,
    )  # fmt: skip
    _mass_tiles(
        q, lse2, k_ptr, out_ptrs, out_valid, inv_rows, full_tiles, tiles, k_len, num_k_blocks,
        qk_scale, stride_ks, stride_mk, HEAD_DIM, BLOCK_M, BLOCK_N, BLOCK_K, GROUPS, True,
        ATOMIC, DOT_PRECISION,
    )  # fmt: skip


def block_attention_mass(
    q: torch.Tensor,
    k: torch.Tensor,
    lse: torch.Tensor,
    block_q: int,
    block_k: int,
    *,
    scale: float | None = None,
    rows: int | None = None,
) -> torch.Tensor:
    """Share of each query block's attention that falls on each key block.

    Args:
        q, k: ``[B, H, S, D]``, fp16/bf16 (fp32 accepted), one device, ``D`` in 16..256.
        lse: fp32 ``[B, H, S]``, natural-log log-sum-exp of each row's scaled scores (as
            `dense_attention_with_lse` returns). Rows with LSE ``-inf`` add nothing.
        block_q, block_k: block sizes, powers of two >= 16; the last block may be ragged.
        scale: score scale, default ``1 / sqrt(D)``; must be the one ``lse`` was computed with.
        rows: estimate each query block's mass from this many of its rows, evenly spaced
            (`sampled_rows`; a power of two <= ``block_q``); default all rows (exact). The
            pass costs ``rows / block_q`` of the exact one.

    Returns:
        fp32 ``[B, H, nq, nk]``: ``mass[b, h, i, j]`` is the sum over the (sampled) rows of
        query block ``i`` of ``exp(q k^T * scale - lse)`` over the keys of block ``j``, divided
        by the number of those rows; each row sums to 1 when ``lse`` is the dense LSE.

    On CUDA one fused Triton pass (no S x S tensor); elsewhere the torch reference, with a
    one-time warning.
    """
    scale = block_attention_mass_inputs(q, k, lse, block_q, block_k, scale)
    if rows is not None and rows != block_q:
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1 or rows & (rows - 1):
            raise ValueError(f"rows must be a power of two, got {rows!r}")
        if rows > block_q:
            raise ValueError(f"rows must be at most block_q = {block_q}, got {rows}")
        q, lse = (sampled_rows(t, block_q, rows) for t in (q, lse))
        block_q = rows
    if not triton_runs_on(q.device):
        warn_fallback("block_attention_mass", q.device)
        return block_attention_mass_reference(q, k, lse, block_q, block_k, scale=scale)
    if INTERPRETED and q.dtype == torch.bfloat16:
        # The interpreter's bf16 dot is wrong (numpy has no bf16): compute in fp32 there.
        q, k = q.float(), k.float()
    config = _INTERPRETER_CONFIG if q.device.type == "cpu" else _GPU_CONFIGS[q.shape[-1]]
    return launch_block_attention_mass(q, k, lse, block_q, block_k, scale, config)


def sampled_rows(x: torch.Tensor, block: int, rows: int) -> torch.Tensor:
    """The ``rows`` evenly spaced rows of every ``block`` rows of ``x`` ``[B, H, S, ...]`` (every
    ``block // rows``-th, from each block's first): a strided view, no copy. Block ``i``'s rows
    are then rows ``i * rows ..`` of the result (a ragged last block keeps at least one)."""
    return x[:, :, :: block // rows]


def launch_block_attention_mass(
    q: torch.Tensor,
    k: torch.Tensor,
    lse: torch.Tensor,
    block_q: int,
    block_k: int,
    scale: float,
    config: KernelConfig,
) -> torch.Tensor:
    """Run the kernel with ``config``; ``q`` and ``lse`` may hold fewer rows than ``k``
    (sampled ones, ``block_q`` per query block).

    No validation: `block_attention_mass` checks inputs first; benchmarks call this directly
    to try other configs.
    """
    batch, heads, q_len, head_dim = q.shape
    k_len = k.shape[2]
    # Tiles that split a query or key block add their partial sums atomically; a tile may also
    # hold several whole query blocks (block_m > block_q).
    atomic = config.block_m < block_q or config.block_n < block_k
    nq, nk = num_mass_blocks(q_len, k_len, block_q, block_k)
    alloc = torch.zeros if atomic else torch.empty
    mass = alloc(batch, heads, nq, nk, dtype=torch.float32, device=q.device)
    q, k = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k))
    grid = (triton.cdiv(q_len, config.block_m), batch * heads)
    _block_mass_fwd[grid](
        q, k, lse, mass,
        *q.stride()[:3], *k.stride()[:3], *lse.stride(), *mass.stride(),
        heads, q_len, k_len, nq, nk, scale * LOG2E,
        HEAD_DIM=head_dim,
        BLOCK_M=config.block_m,
        BLOCK_N=config.block_n,
        BLOCK_Q=block_q,
        BLOCK_K=block_k,
        ATOMIC=atomic,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )  # fmt: skip
    return mass


def num_mass_blocks(q_len: int, k_len: int, block_q: int, block_k: int) -> tuple[int, int]:
    """Query and key blocks of a mass tensor (a ragged last block counts)."""
    return -(-q_len // block_q), -(-k_len // block_k)


def block_attention_mass_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    lse: torch.Tensor,
    block_q: int,
    block_k: int,
    scale: float | None,
) -> float:
    """Raise on anything the mass kernels cannot take; return the scale to use."""
    check_qkv(q=q, k=k)
    if not isinstance(lse, torch.Tensor):
        raise TypeError(f"lse must be a torch.Tensor, got {type(lse).__name__}")
    if lse.shape != q.shape[:3] or lse.dtype != torch.float32 or lse.device != q.device:
        raise ValueError(
            f"lse must be float32 [B, H, S] = {tuple(q.shape[:3])} on {q.device}, "
            f"got {lse.dtype} {tuple(lse.shape)} on {lse.device}"
        )
    check_block("block_q", block_q)
    check_block("block_k", block_k)
    return resolve_scale(scale, q.shape[-1])
