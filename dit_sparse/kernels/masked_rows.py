"""Errors of two block masks on a few query rows, against exact attention, in one Triton pass.

Sparse VideoGen's profiling: for a handful of sampled rows, the exact attention output and the
outputs under two block masks (each mask in its own token order), compared by mean squared
error. With so few rows a head's work is tiny next to reading its keys and values, so the keys
are split over many programs (split-K), and each (row tile, key split, head) gets three
programs, one per output: all keys, mask 0's, mask 1's. Each runs one online softmax with one
accumulator over its share of the keys and writes that partial state; the three read the same
K and V tiles at about the same time, so the copies after the first come from L2. A second
small kernel merges the partials and reduces the errors. The masks' keep flags come as bits
per (query block, key), packed once per layout (`pack_keep_bits`).
"""

from __future__ import annotations

import torch

from ._runtime import (
    INTERPRETED,
    LOG2E,
    check_qkv,
    resolve_scale,
    tl,
    triton,
    triton_runs_on,
    warn_fallback,
)
from .reference import masked_row_errors_reference

# Keys per inner step, rows per program and programs per SM (setting the key splits). On an
# H100 (D = 128, bf16; benchmarks/probes/svg_profiling_passes-h100.json) this kernel's partial
# pass took 229 us at Wan 480p with 21 splits (250-575 us with 2-16) and 1108-1190 us at 720p
# with 6-11; the former design, three accumulators in one program with one max over all keys,
# took 214 and 1124 us at its best. Speed is a wash; one max per output keeps a mask's output
# exact when its kept keys score far below the row's best (a shared max can underflow them).
_BLOCK_N = 64
_GPU_ROW_TILE = {16: 64, 32: 64, 64: 64, 128: 64, 256: 32}
_GPU_WARPS = 4
_GPU_STAGES = 2
_PROGRAMS_PER_SM = 6
_MIN_KEYS_PER_SPLIT = 1024
_INTERPRETER_ROW_TILE = 32
# Outputs per row: all keys, mask 0, mask 1 (the program's "pass").
_PASSES = 3
# Rows per merge program: three [rows, head_dim] fp32 sums; divides every partial row tile.
_MERGE_ROW_TILE = 16
# Bit j % 8 of byte j // 8 of a packed keep row is key j; rows cover whole multiples of this
# many keys (at least every key tile's), 16-byte aligned.
_KEEP_ROW_KEYS = 128


def pack_keep_bits(token_blocks: torch.Tensor, block_masks: torch.Tensor) -> torch.Tensor:
    """uint8 ``[2, nq, bytes]``: bit ``j % 8`` of byte ``j // 8`` of row ``[i, qb]`` says
    whether mask ``i`` keeps original key ``j`` for the query rows in its block ``qb``.

    ``token_blocks`` ``[2, S]`` and ``block_masks`` ``[2, nq, nk]`` as in `masked_row_errors`;
    build once per layout (``2 nq S / 8`` bytes: 2 MB at Wan 480p, 11 MB at 720p).
    """
    masks, nq, _ = block_masks.shape
    seq_len = token_blocks.shape[1]
    row_bytes = triton.cdiv(seq_len, _KEEP_ROW_KEYS) * _KEEP_ROW_KEYS // 8
    weights = 1 << torch.arange(8, device=block_masks.device, dtype=torch.int32)
    packed = torch.empty(masks, nq, row_bytes, dtype=torch.uint8, device=block_masks.device)
    for i in range(masks):
        keep = torch.zeros(nq, row_bytes * 8, dtype=torch.int32, device=block_masks.device)
        keep[:, :seq_len] = block_masks[i][:, token_blocks[i]]
        packed[i] = (keep.view(nq, row_bytes, 8) * weights).sum(-1).to(torch.uint8)
    return packed


@triton.jit
def _kept_tiles(
    state,
    q,
    k_base,
    v_base,
    keep_base,
    k_offsets,
    v_offsets,
    keep_offsets,
    keep_shift,
    keep_fill,
    first,
    last,
    end,
    qk_scale,
    stride_ks,
    stride_vs,
    BLOCK_N: tl.constexpr,
    MASK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Online softmax over the kept keys of ``first..last``; ``MASK`` masks keys at or past
    ``end``. The running max is over kept keys only, so a mask's output is as exact as the
    unmasked one; a row that has kept nothing yet keeps max -inf and zero sums."""
    m_i, l_i, acc = state
    for n0 in tl.range(first, last, BLOCK_N):
        kv_mask = None
        fill = None
        if MASK:
            kv_mask = (n0 + tl.arange(0, BLOCK_N) < end)[:, None]
            fill = 0
        start = tl.cast(n0, tl.int64)
        k = tl.load(k_base + start * stride_ks + k_offsets, mask=kv_mask, other=fill)
        v = tl.load(v_base + start * stride_vs + v_offsets, mask=kv_mask, other=fill)
        bits = tl.load(keep_base + n0 // 8 + keep_offsets) | keep_fill
        keep = ((bits >> keep_shift) & 1) != 0
        if MASK:
            keep = keep & (n0 + tl.arange(0, BLOCK_N) < end)[None, :]
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        qk = tl.where(keep, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        # Subtract 0 where nothing is kept yet: exp2(-inf - -inf) would be NaN.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.math.exp2(m_i - m_safe)
        p = tl.math.exp2(qk - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PRECISION)
        m_i = m_new
    return m_i, l_i, acc


@triton.jit
def _masked_rows_partial(
    Q,
    K,
    V,
    ROWS,
    TOKEN_BLOCKS,
    KEEP_BITS,
    WS_M,
    WS_L,
    WS_ACC,
    stride_qb,
    stride_qh,
    stride_qs,
    stride_kb,
    stride_kh,
    stride_ks,
    stride_vb,
    stride_vh,
    stride_vs,
    heads,
    seq_len,
    num_rows,
    padded_rows,
    keys_per_split,
    splits,
    q_blocks,
    keep_row_bytes,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    ROW_TILE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PASSES: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    # The passes of one row tile are neighbours in launch order: they share K and V in L2.
    which = tl.program_id(0) % PASSES  # 0: all keys, 1: mask 0, 2: mask 1
    row_tile = tl.program_id(0) // PASSES
    split = tl.program_id(1)
    pid_bh = tl.program_id(2)
    b = (pid_bh // heads).to(tl.int64)
    h = (pid_bh % heads).to(tl.int64)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    offs_r = row_tile * ROW_TILE + tl.arange(0, ROW_TILE)
    row_valid = offs_r < num_rows
    rows = tl.load(ROWS + offs_r, mask=row_valid, other=0)
    q_ptrs = Q + b * stride_qb + h * stride_qh + rows[:, None] * stride_qs + offs_d[None, :]
    q = tl.load(q_ptrs, mask=row_valid[:, None], other=0.0)

    # The all-keys pass reads mask 0's bits with every bit set by ``keep_fill``.
    mask = tl.maximum(which - 1, 0)
    keep_fill = tl.where(which == 0, 255, 0).to(tl.uint8)
    row_blocks = tl.load(TOKEN_BLOCKS + mask * seq_len + rows)
    keep_rows = (mask * q_blocks + row_blocks).to(tl.int32) * keep_row_bytes
    # Every tile's pointers are a scalar base plus these loop-invariant offsets (see the
    # attention kernel): K and V rows, and each row's keep byte of each key.
    k_offsets = offs_n[:, None] * stride_ks + offs_d[None, :]
    v_offsets = offs_n[:, None] * stride_vs + offs_d[None, :]
    keep_offsets = keep_rows[:, None] + (offs_n // 8)[None, :]
    keep_shift = (offs_n % 8).to(tl.uint8)[None, :]
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    start = split * keys_per_split
    end = tl.minimum(seq_len, start + keys_per_split)
    # Full tiles load unmasked (unpredicated, as the pipeliner likes them); a ragged tail last.
    full_end = start + (end - start) // BLOCK_N * BLOCK_N
    state = (
        tl.full([ROW_TILE], float("-inf"), tl.float32),
        tl.zeros([ROW_TILE], tl.float32),
        tl.zeros([ROW_TILE, HEAD_DIM], tl.float32),
    )
    state = _kept_tiles(
        state, q, k_base, v_base, KEEP_BITS, k_offsets, v_offsets, keep_offsets, keep_shift,
        keep_fill, start, full_end, end, qk_scale, stride_ks, stride_vs, BLOCK_N, False,
        DOT_PRECISION,
    )  # fmt: skip
    m_i, l_i, acc = _kept_tiles(
        state, q, k_base, v_base, KEEP_BITS, k_offsets, v_offsets, keep_offsets, keep_shift,
        keep_fill, full_end, end, end, qk_scale, stride_ks, stride_vs, BLOCK_N, True,
        DOT_PRECISION,
    )  # fmt: skip

    # Workspace: m and l [BH, splits, 3, R], acc [BH, splits, 3, R, D].
    slot = (pid_bh.to(tl.int64) * splits + split) * PASSES + which
    tl.store(WS_M + slot * padded_rows + offs_r, m_i)
    tl.store(WS_L + slot * padded_rows + offs_r, l_i)
    acc_ptr = WS_ACC + (slot * padded_rows + offs_r[:, None]) * HEAD_DIM + offs_d[None, :]
    tl.store(acc_ptr, acc)


@triton.jit
def _merged_output(
    WS_M, WS_L, WS_ACC, first, splits, which, offs_r, padded_rows, HEAD_DIM: tl.constexpr
):
    """One pass's output for rows ``offs_r``: its splits' partial softmaxes, each rescaled to
    their common max, summed and normalised (0 where the pass kept no key)."""
    offs_d = tl.arange(0, HEAD_DIM)
    m_max = tl.full(offs_r.shape, float("-inf"), tl.float32)
    for split in tl.range(0, splits):
        slot = (first + split) * 3 + which
        m_max = tl.maximum(m_max, tl.load(WS_M + slot * padded_rows + offs_r))
    m_max = tl.where(m_max == float("-inf"), 0.0, m_max)
    total = tl.zeros(offs_r.shape, tl.float32)
    acc = tl.zeros([offs_r.shape[0], HEAD_DIM], tl.float32)
    for split in tl.range(0, splits):
        slot = (first + split) * 3 + which
        weight = tl.math.exp2(tl.load(WS_M + slot * padded_rows + offs_r) - m_max)
        total += weight * tl.load(WS_L + slot * padded_rows + offs_r)
        acc_ptr = WS_ACC + (slot * padded_rows + offs_r[:, None]) * HEAD_DIM + offs_d[None, :]
        acc += weight[:, None] * tl.load(acc_ptr)
    return acc / tl.maximum(total, 1.1754943508222875e-38)[:, None]


@triton.jit
def _merge_errors(
    WS_M,
    WS_L,
    WS_ACC,
    ERR,
    splits,
    num_rows,
    padded_rows,
    HEAD_DIM: tl.constexpr,
    ROW_TILE: tl.constexpr,
):
    """One head's ``ROW_TILE`` rows: merge each pass's splits, then write the rows' summed
    squared error of both masks against the all-keys output to ``ERR[bh, tile]``."""
    pid_bh = tl.program_id(0)
    row_tile = tl.program_id(1)
    offs_r = row_tile * ROW_TILE + tl.arange(0, ROW_TILE)
    first = pid_bh.to(tl.int64) * splits
    exact = _merged_output(WS_M, WS_L, WS_ACC, first, splits, 0, offs_r, padded_rows, HEAD_DIM)
    valid = (offs_r < num_rows)[:, None]
    err_ptr = ERR + (pid_bh.to(tl.int64) * tl.num_programs(1) + row_tile) * 2
    for mask in tl.static_range(2):
        out = _merged_output(
            WS_M, WS_L, WS_ACC, first, splits, mask + 1, offs_r, padded_rows, HEAD_DIM
        )
        diff = tl.where(valid, out - exact, 0.0)
        tl.store(err_ptr + mask, tl.sum(tl.sum(diff * diff, 1), 0))


def masked_row_errors(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rows: torch.Tensor,
    token_blocks: torch.Tensor,
    block_masks: torch.Tensor,
    *,
    scale: float | None = None,
    splits: int | None = None,
    keep_bits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error of the ``rows``' attention outputs under two block masks.

    Args:
        q, k, v: ``[B, H, S, D]``, fp16/bf16 (fp32 accepted), one device.
        rows: int64 ``[R]``, the query rows (original token order) to profile; on the GPU
            they are not bounds-checked (that would cost a device sync per call).
        token_blocks: int64 ``[2, S]``: the block of each token in mask ``i``'s token order.
        block_masks: bool ``[2, nq, nk]``: mask ``i``, in its token order.
        scale: score scale, default ``1 / sqrt(D)``.
        splits: programs sharing one head's keys (default: enough to fill the GPU).
        keep_bits: `pack_keep_bits` of the masks, if the caller keeps it (built otherwise).

    Returns:
        fp32 ``[B, H, 2]``: for mask ``i``, the mean over rows and channels of the squared
        difference between the rows' output under that mask (softmax renormalised over the
        kept keys; 0 where a row keeps none) and their exact output.

    On CUDA one split-K Triton pass and a small Triton merge; elsewhere the torch reference.
    """
    check_qkv(q=q, k=k, v=v)
    scale = resolve_scale(scale, q.shape[-1])
    _check_masks(q, rows, token_blocks, block_masks, splits)
    if not triton_runs_on(q.device):
        warn_fallback("masked_row_errors", q.device)
        return masked_row_errors_reference(q, k, v, rows, token_blocks, block_masks, scale)
    if keep_bits is None:
        keep_bits = pack_keep_bits(token_blocks, block_masks)
    _check_keep_bits(keep_bits, block_masks, q)
    if INTERPRETED and q.dtype == torch.bfloat16:
        # The interpreter's bf16 dot is wrong (numpy has no bf16): compute in fp32 there.
        q, k, v = q.float(), k.float(), v.float()
    batch, heads, seq_len, head_dim = q.shape
    row_tile = _INTERPRETER_ROW_TILE if q.device.type == "cpu" else _GPU_ROW_TILE[head_dim]
    row_tiles = triton.cdiv(rows.numel(), row_tile)
    padded = row_tiles * row_tile
    if splits is None and q.device.type == "cuda":
        sms = torch.cuda.get_device_properties(q.device).multi_processor_count
        splits = min(
            triton.cdiv(_PROGRAMS_PER_SM * sms, _PASSES * batch * heads * row_tiles),
            max(1, seq_len // _MIN_KEYS_PER_SPLIT),
        )
    elif splits is None:
        splits = 2
    keys_per_split = triton.cdiv(triton.cdiv(seq_len, splits), _BLOCK_N) * _BLOCK_N
    splits = triton.cdiv(seq_len, keys_per_split)
    slots = batch * heads * splits * _PASSES
    ws_m = torch.empty(slots, padded, dtype=torch.float32, device=q.device)
    ws_l = torch.empty_like(ws_m)
    ws_acc = torch.empty(slots, padded, head_dim, dtype=torch.float32, device=q.device)
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    _masked_rows_partial[(_PASSES * row_tiles, splits, batch * heads)](
        q, k, v, rows.contiguous(), token_blocks.contiguous(), keep_bits, ws_m, ws_l, ws_acc,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
        heads, seq_len, rows.numel(), padded, keys_per_split, splits, keep_bits.shape[1],
        keep_bits.shape[2], scale * LOG2E,
        HEAD_DIM=head_dim,
        ROW_TILE=row_tile,
        BLOCK_N=_BLOCK_N,
        PASSES=_PASSES,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=_GPU_WARPS if q.device.type == "cuda" else 4,
        num_stages=_GPU_STAGES,
    )  # fmt: skip
    merge_tiles = padded // _MERGE_ROW_TILE
    partial = torch.empty(batch * heads, merge_tiles, 2, dtype=torch.float32, device=q.device)
    _merge_errors[(batch * heads, merge_tiles)](
        ws_m, ws_l, ws_acc, partial, splits, rows.numel(), padded,
        HEAD_DIM=head_dim, ROW_TILE=_MERGE_ROW_TILE, num_warps=4,
    )  # fmt: skip
    return (partial.sum(1) / (rows.numel() * head_dim)).view(batch, heads, 2)


def _check_keep_bits(keep_bits: torch.Tensor, block_masks: torch.Tensor, q: torch.Tensor) -> None:
    needed = triton.cdiv(q.shape[2], _KEEP_ROW_KEYS) * _KEEP_ROW_KEYS // 8
    if (
        keep_bits.dtype != torch.uint8
        or keep_bits.dim() != 3
        or keep_bits.shape != (*block_masks.shape[:2], needed)
        or not keep_bits.is_contiguous()
        or keep_bits.device != q.device
    ):
        raise ValueError(
            f"keep_bits must be pack_keep_bits(token_blocks, block_masks): contiguous uint8 "
            f"[2, {block_masks.shape[1]}, {needed}] on {q.device}; got {keep_bits.dtype} {tuple(keep_bits.shape)} on {keep_bits.device}"
        )


def _check_masks(
    q: torch.Tensor,
    rows: torch.Tensor,
    token_blocks: torch.Tensor,
    block_masks: torch.Tensor,
    splits: int | None,
) -> None:
    seq_len = q.shape[2]
    if splits is not None and (
        isinstance(splits, bool) or not isinstance(splits, int) or splits < 1
    ):
        raise ValueError(f"splits must be a positive int or None, got {splits!r}")
    if rows.dim() != 1 or rows.numel() == 0 or rows.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"rows must be a non-empty int [R] tensor, got {rows.dtype} {rows.shape}")
    if token_blocks.shape != (2, seq_len) or token_blocks.dtype not in (torch.int32, torch.int64):
        raise ValueError(
            f"token_blocks must be int [2, S] = [2, {seq_len}], got "
            f"{token_blocks.dtype} {tuple(token_blocks.shape)}"
        )
    if block_masks.dim() != 3 or block_masks.shape[0] != 2 or block_masks.dtype != torch.bool:
        raise ValueError(
            f"block_masks must be bool [2, nq, nk], got {block_masks.dtype} "
            f"{tuple(block_masks.shape)}"
        )
    for name, t in (("rows", rows), ("token_blocks", token_blocks), ("block_masks", block_masks)):
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}")
