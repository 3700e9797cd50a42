"""Errors of two block masks on a few query rows, against exact attention, in one Triton pass.

Sparse VideoGen's profiling: for a handful of sampled rows, the exact attention output and the
outputs under two block masks (each mask in its own token order), compared by mean squared
error. With so few rows a head's work is tiny next to reading its keys and values, so the keys
are split over many programs (split-K): each runs one online softmax (one running max) with
three sums and accumulators (all keys, mask 0, mask 1) over its share of the keys and writes
that partial state; a second small kernel merges the partials and reduces the errors. K and V
are read once per tile of rows (once for SVG's 64 rows up to head dim 128). The masks' keep
flags come as bits per (query block, key), packed once per layout (`pack_keep_bits`).
"""

from __future__ import annotations

import functools

import torch

from ..plan import num_blocks
from .launch import (
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

# Keys per inner step; rows and warps per program by head dim (three fp32 [rows, head_dim]
# accumulators must fit the registers); pipeline stages. At D = 128 (bf16, Wan 480p and 720p)
# 64 rows of 8 warps and 3 stages ran fastest and spill nothing: 4 warps for 64 rows spill,
# and 32 rows of 4 warps are slower (benchmarks/probes/svg_profiling_registers-h200.json).
# Only D = 128 was measured; the other head dims keep its shape. One program per output
# (three programs of one accumulator, each with its own max) was no faster
# (benchmarks/probes/svg_profiling_passes-h100.json).
_BLOCK_N = 64
_GPU_TILES = {16: (64, 8), 32: (64, 8), 64: (64, 8), 128: (64, 8), 256: (16, 4)}
_GPU_STAGES = 3
_INTERPRETER_ROW_TILE = 32
# Key splits per (batch, head, row tile). At D = 128 a program holds a whole SM (8 warps at
# all of its registers), so the programs run in waves of one per SM, and a program's time is
# about (its keys + _SPLIT_COST_KEYS) x a per-key time: the fixed part is its pipeline's start
# and its partial sums' store. _SPLIT_COST_KEYS is fitted to a sweep of split counts at Wan
# 720p, and its pick beat the sweep's other counts
# (benchmarks/probes/svg_profiling_registers-*.json). Smaller head dims may fit more programs
# per SM, which the model ignores (unmeasured). Splits stay at least _MIN_KEYS_PER_SPLIT long
# so the merge stays small.
_SPLIT_COST_KEYS = 400
_MIN_KEYS_PER_SPLIT = 1536
# Rows per merge program: three [rows, head_dim] fp32 sums; divides every partial row tile.
# Small tiles give the latency-bound merge more programs: 4 rows ran faster than 16 at Wan
# 480p and 720p.
_MERGE_ROW_TILE = 4
# Bit j % 8 of byte j // 8 of a packed keep row is key j, so on a little-endian GPU bit j % 64
# of 64-bit word j // 64 is key j too; rows cover whole multiples of this many keys (at least
# every key tile's), 16-byte aligned.
_KEEP_ROW_KEYS = 128


def pack_keep_bits(token_blocks: torch.Tensor, block_masks: torch.Tensor) -> torch.Tensor:
    """uint8 ``[2, nq, bytes]``: bit ``j % 8`` of byte ``j // 8`` of row ``[i, qb]`` says
    whether mask ``i`` keeps original key ``j`` for the query rows in its block ``qb``.

    ``token_blocks`` ``[2, S]`` and ``block_masks`` ``[2, nq, nk]`` as in `masked_row_errors`;
    build once per layout (``2 nq S / 8`` bytes: 2 MB at Wan 480p, 11 MB at 720p).
    """
    masks, nq, _ = block_masks.shape
    seq_len = token_blocks.shape[1]
    row_bytes = num_blocks(seq_len, _KEEP_ROW_KEYS) * _KEEP_ROW_KEYS // 8
    weights = 1 << torch.arange(8, device=block_masks.device, dtype=torch.int32)
    packed = torch.empty(masks, nq, row_bytes, dtype=torch.uint8, device=block_masks.device)
    for i in range(masks):
        keep = torch.zeros(nq, row_bytes * 8, dtype=torch.int32, device=block_masks.device)
        keep[:, :seq_len] = block_masks[i][:, token_blocks[i]]
        packed[i] = (keep.view(nq, row_bytes, 8) * weights).sum(-1).to(torch.uint8)
    return packed


@triton.jit
def _zeroed_sums(ROWS: tl.constexpr, HEAD_DIM: tl.constexpr):
    """Softmax sums and output accumulators of all keys, mask 0 and mask 1, all zero."""
    sums = tl.zeros([ROWS], tl.float32)
    acc = tl.zeros([ROWS, HEAD_DIM], tl.float32)
    return sums, sums, sums, acc, acc, acc


@triton.jit
def _masked_tiles(
    state,
    q,
    k_base,
    v_base,
    keep0_words,
    keep1_words,
    k_offsets,
    v_offsets,
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
    """One online softmax, three sums: all keys, mask 0's and mask 1's, over keys
    ``first..last``; ``MASK`` masks keys at or past ``end``."""
    m_i, l_all, l_0, l_1, acc_all, acc_0, acc_1 = state
    for n0 in tl.range(first, last, BLOCK_N):
        valid = n0 + tl.arange(0, BLOCK_N) < end
        kv_mask = None
        fill = None
        if MASK:
            kv_mask = valid[:, None]
            fill = 0
        start = tl.cast(n0, tl.int64)
        k = tl.load(k_base + start * stride_ks + k_offsets, mask=kv_mask, other=fill)
        v = tl.load(v_base + start * stride_vs + v_offsets, mask=kv_mask, other=fill)
        # Keys past ``end`` get score -inf below, so their bits need no masking. A tile never
        # straddles two words: tiles start at multiples of BLOCK_N, which divides 64.
        tl.static_assert(64 % BLOCK_N == 0)
        shift = (n0 % 64 + tl.arange(0, BLOCK_N)).to(tl.uint64)[None, :]
        keep0 = ((tl.load(keep0_words + n0 // 64)[:, None] >> shift) & 1) != 0
        keep1 = ((tl.load(keep1_words + n0 // 64)[:, None] >> shift) & 1) != 0
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        if MASK:
            qk = tl.where(valid[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(qk - m_new[:, None])
        p0 = tl.where(keep0, p, 0.0)
        p1 = tl.where(keep1, p, 0.0)
        l_all = l_all * alpha + tl.sum(p, 1)
        l_0 = l_0 * alpha + tl.sum(p0, 1)
        l_1 = l_1 * alpha + tl.sum(p1, 1)
        acc_all = tl.dot(p.to(v.dtype), v, acc_all * alpha[:, None], input_precision=DOT_PRECISION)
        acc_0 = tl.dot(p0.to(v.dtype), v, acc_0 * alpha[:, None], input_precision=DOT_PRECISION)
        acc_1 = tl.dot(p1.to(v.dtype), v, acc_1 * alpha[:, None], input_precision=DOT_PRECISION)
        m_i = m_new
    return m_i, l_all, l_0, l_1, acc_all, acc_0, acc_1


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
    keep_row_words,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    ROW_TILE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    split = tl.program_id(0)
    pid_bh = tl.program_id(1)
    row_tile = tl.program_id(2)
    b = (pid_bh // heads).to(tl.int64)
    h = (pid_bh % heads).to(tl.int64)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    offs_r = row_tile * ROW_TILE + tl.arange(0, ROW_TILE)
    row_valid = offs_r < num_rows
    rows = tl.load(ROWS + offs_r, mask=row_valid, other=0)
    q_ptrs = Q + b * stride_qb + h * stride_qh + rows[:, None] * stride_qs + offs_d[None, :]
    q = tl.load(q_ptrs, mask=row_valid[:, None], other=0.0)

    m_i = tl.full([ROW_TILE], float("-inf"), tl.float32)
    l_all, l_0, l_1, acc_all, acc_0, acc_1 = _zeroed_sums(ROW_TILE, HEAD_DIM)
    # Every K/V tile's pointers are a scalar base plus these loop-invariant offsets (see the
    # attention kernel). Each row's keep bits are read as one 64-bit word per 64 keys: a
    # pointer per row, where a byte pointer per (row, key) held 2 x 64 x 64 addresses in
    # registers and the pass spilled (ptxas, sm_90: 1,416 bytes at 4 warps; benchmarks/probes).
    k_offsets = offs_n[:, None] * stride_ks + offs_d[None, :]
    v_offsets = offs_n[:, None] * stride_vs + offs_d[None, :]
    keep_words = KEEP_BITS.to(tl.pointer_type(tl.uint64))
    keep0_words = keep_words + tl.load(TOKEN_BLOCKS + rows) * keep_row_words
    keep1_words = keep_words + (q_blocks + tl.load(TOKEN_BLOCKS + seq_len + rows)) * keep_row_words
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    start = split * keys_per_split
    end = tl.minimum(seq_len, start + keys_per_split)
    # Full tiles load unmasked (unpredicated, as the pipeliner likes them); a ragged tail last.
    full_end = start + (end - start) // BLOCK_N * BLOCK_N
    state = (m_i, l_all, l_0, l_1, acc_all, acc_0, acc_1)
    state = _masked_tiles(
        state, q, k_base, v_base, keep0_words, keep1_words, k_offsets, v_offsets,
        start, full_end, end, qk_scale, stride_ks, stride_vs, BLOCK_N, False, DOT_PRECISION,
    )  # fmt: skip
    state = _masked_tiles(
        state, q, k_base, v_base, keep0_words, keep1_words, k_offsets, v_offsets,
        full_end, end, end, qk_scale, stride_ks, stride_vs, BLOCK_N, True, DOT_PRECISION,
    )  # fmt: skip
    m_i, l_all, l_0, l_1, acc_all, acc_0, acc_1 = state

    # Workspace: m [BH, splits, R], l [BH, splits, 3, R], acc [BH, splits, 3, R, D].
    slot = pid_bh.to(tl.int64) * splits + split
    tl.store(WS_M + slot * padded_rows + offs_r, m_i)
    l_ptr = WS_L + slot * 3 * padded_rows + offs_r
    tl.store(l_ptr, l_all)
    tl.store(l_ptr + padded_rows, l_0)
    tl.store(l_ptr + 2 * padded_rows, l_1)
    acc_ptr = WS_ACC + slot * 3 * padded_rows * HEAD_DIM + offs_r[:, None] * HEAD_DIM + offs_d
    tl.store(acc_ptr, acc_all)
    tl.store(acc_ptr + padded_rows * HEAD_DIM, acc_0)
    tl.store(acc_ptr + 2 * padded_rows * HEAD_DIM, acc_1)


@triton.jit
def _merge_errors(
    WS_M,
    WS_L,
    WS_ACC,
    ERR,
    splits,
    num_rows,
    padded_rows,
    inv_count,
    HEAD_DIM: tl.constexpr,
    ROW_TILE: tl.constexpr,
):
    """One head's ``ROW_TILE`` rows: merge the splits' partial softmaxes (each rescaled to the
    common max), then write the rows' summed squared error of both masks, times ``inv_count``,
    to ``ERR[bh, tile]``. Two passes over the splits (the max, then the sums): a single pass
    with a running max was slower at the same splits
    (benchmarks/probes/svg_profiling_registers-final*-h200.json)."""
    pid_bh = tl.program_id(0)
    row_tile = tl.program_id(1)
    offs_r = row_tile * ROW_TILE + tl.arange(0, ROW_TILE)
    offs_d = tl.arange(0, HEAD_DIM)
    first = pid_bh.to(tl.int64) * splits
    m_max = tl.full([ROW_TILE], float("-inf"), tl.float32)
    for split in tl.range(0, splits):
        m_max = tl.maximum(m_max, tl.load(WS_M + (first + split) * padded_rows + offs_r))
    l_all, l_0, l_1, acc_all, acc_0, acc_1 = _zeroed_sums(ROW_TILE, HEAD_DIM)
    acc_offsets = offs_r[:, None] * HEAD_DIM + offs_d[None, :]
    for split in tl.range(0, splits):
        slot = first + split
        weight = tl.math.exp2(tl.load(WS_M + slot * padded_rows + offs_r) - m_max)
        l_ptr = WS_L + slot * 3 * padded_rows + offs_r
        l_all += weight * tl.load(l_ptr)
        l_0 += weight * tl.load(l_ptr + padded_rows)
        l_1 += weight * tl.load(l_ptr + 2 * padded_rows)
        acc_ptr = WS_ACC + slot * 3 * padded_rows * HEAD_DIM + acc_offsets
        acc_all += weight[:, None] * tl.load(acc_ptr)
        acc_0 += weight[:, None] * tl.load(acc_ptr + padded_rows * HEAD_DIM)
        acc_1 += weight[:, None] * tl.load(acc_ptr + 2 * padded_rows * HEAD_DIM)
    # A mask may keep none of a row's keys (sum 0): its output is then 0, as in the reference.
    tiny = 1.1754943508222875e-38
    exact = acc_all / tl.maximum(l_all, tiny)[:, None]
    valid = (offs_r < num_rows)[:, None]
    diff_0 = tl.where(valid, acc_0 / tl.maximum(l_0, tiny)[:, None] - exact, 0.0)
    diff_1 = tl.where(valid, acc_1 / tl.maximum(l_1, tiny)[:, None] - exact, 0.0)
    err_ptr = ERR + (pid_bh.to(tl.int64) * tl.num_programs(1) + row_tile) * 2
    tl.store(err_ptr, tl.sum(tl.sum(diff_0 * diff_0, 1), 0) * inv_count)
    tl.store(err_ptr + 1, tl.sum(tl.sum(diff_1 * diff_1, 1), 0) * inv_count)


@triton.jit
def _sum_tiles_and_choose(
    PARTIAL, ERR, CHOICE, COUNT, pairs, tiles, BLOCK_P: tl.constexpr, BLOCK_T: tl.constexpr
):
    """One program: ``ERR[p] = sum_t PARTIAL[p, t]`` (both masks), ``CHOICE[p]`` = 1 where mask
    1's error is strictly lower, ``COUNT`` = how many pairs chose it. One launch for what took
    a torch reduction, a comparison and a cast, plus the count's reduction."""
    count = tl.zeros([BLOCK_P], tl.float32)
    for first_pair in tl.range(0, pairs, BLOCK_P):
        offs_p = first_pair + tl.arange(0, BLOCK_P)
        valid = offs_p < pairs
        # Tiles are summed elementwise in the loop and reduced once after it: a reduction
        # accumulated inside a nested loop trips Triton 3.6's thread-locality pass.
        tiles_0 = tl.zeros([BLOCK_P, BLOCK_T], tl.float32)
        tiles_1 = tl.zeros([BLOCK_P, BLOCK_T], tl.float32)
        for first_tile in tl.range(0, tiles, BLOCK_T):
            offs_t = first_tile + tl.arange(0, BLOCK_T)
            tile_ptrs = PARTIAL + (offs_p[:, None] * tiles + offs_t[None, :]) * 2
            tile_mask = valid[:, None] & (offs_t < tiles)[None, :]
            tiles_0 += tl.load(tile_ptrs, mask=tile_mask, other=0.0)
            tiles_1 += tl.load(tile_ptrs + 1, mask=tile_mask, other=0.0)
        error_0 = tl.sum(tiles_0, 1)
        error_1 = tl.sum(tiles_1, 1)
        tl.store(ERR + offs_p * 2, error_0, mask=valid)
        tl.store(ERR + offs_p * 2 + 1, error_1, mask=valid)
        chosen = (error_1 < error_0) & valid
        tl.store(CHOICE + offs_p, chosen.to(tl.int64), mask=valid)
        count += chosen.to(tl.float32)
    tl.store(COUNT, tl.sum(count, 0))


# Chunks of `_sum_tiles_and_choose`: all of SVG's (batch, head) pairs and row tiles at once.
_CHOOSE_PAIRS = 128
_CHOOSE_TILES = 16


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
    with_choice: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
        with_choice: also return which mask each (batch, head) should take.

    Returns:
        fp32 ``[B, H, 2]``: for mask ``i``, the mean over rows and channels of the squared
        difference between the rows' output under that mask (softmax renormalised over the
        kept keys) and their exact output. With ``with_choice`` also int64 ``[B, H]``, 1 where
        mask 1's error is strictly lower, and fp32 0-d, how many those are.

    On CUDA one split-K Triton pass, a small Triton merge and (the errors summed over row tiles,
    and the choice) a one-program kernel; elsewhere the torch reference.
    """
    check_qkv(q=q, k=k, v=v)
    scale = resolve_scale(scale, q.shape[-1])
    _check_masks(q, rows, token_blocks, block_masks, splits)
    if not triton_runs_on(q.device):
        warn_fallback("masked_row_errors", q.device)
        errors = masked_row_errors_reference(q, k, v, rows, token_blocks, block_masks, scale)
        if not with_choice:
            return errors
        choice = torch.lt(errors[..., 1], errors[..., 0]).long()
        return errors, choice, choice.sum(dtype=torch.float32)
    if keep_bits is None:
        keep_bits = pack_keep_bits(token_blocks, block_masks)
    _check_keep_bits(keep_bits, block_masks, q)
    if INTERPRETED and q.dtype == torch.bfloat16:
        # The interpreter's bf16 dot is wrong (numpy has no bf16): compute in fp32 there.
        q, k, v = q.float(), k.float(), v.float()
    batch, heads, seq_len, head_dim = q.shape
    row_tile, warps = (
        _GPU_TILES[head_dim] if q.device.type == "cuda" else (_INTERPRETER_ROW_TILE, 4)
    )
    row_tiles = num_blocks(rows.numel(), row_tile)
    padded = row_tiles * row_tile
    if splits is None and q.device.type == "cuda":
        sms = torch.cuda.get_device_properties(q.device).multi_processor_count
        splits = _key_splits(seq_len, batch * heads * row_tiles, sms)
    elif splits is None:
        splits = max(1, num_blocks(2, batch * heads * row_tiles))
    keys_per_split = _split_keys(seq_len, splits)
    splits = num_blocks(seq_len, keys_per_split)
    slots = batch * heads * splits
    ws_m = torch.empty(slots, padded, dtype=torch.float32, device=q.device)
    ws_l = torch.empty(slots, 3, padded, dtype=torch.float32, device=q.device)
    ws_acc = torch.empty(slots, 3, padded, head_dim, dtype=torch.float32, device=q.device)
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    _masked_rows_partial[(splits, batch * heads, row_tiles)](
        q, k, v, rows.contiguous(), token_blocks.contiguous(), keep_bits, ws_m, ws_l, ws_acc,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
        heads, seq_len, rows.numel(), padded, keys_per_split, splits, keep_bits.shape[1],
        keep_bits.shape[2] // 8, scale * LOG2E,
        HEAD_DIM=head_dim,
        ROW_TILE=row_tile,
        BLOCK_N=_BLOCK_N,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=warps,
        num_stages=_GPU_STAGES,
    )  # fmt: skip
    merge_tiles = padded // _MERGE_ROW_TILE
    partial = torch.empty(batch * heads, merge_tiles, 2, dtype=torch.float32, device=q.device)
    _merge_errors[(batch * heads, merge_tiles)](
        ws_m, ws_l, ws_acc, partial, splits, rows.numel(), padded, 1.0 / (rows.numel() * head_dim),
        HEAD_DIM=head_dim, ROW_TILE=_MERGE_ROW_TILE, num_warps=4,
    )  # fmt: skip
    pairs = batch * heads
    errors = torch.empty(batch, heads, 2, dtype=torch.float32, device=q.device)
    choice = torch.empty(batch, heads, dtype=torch.int64, device=q.device)
    count = torch.empty((), dtype=torch.float32, device=q.device)
    _sum_tiles_and_choose[(1,)](
        partial, errors, choice, count, pairs, merge_tiles,
        BLOCK_P=min(_CHOOSE_PAIRS, triton.next_power_of_2(pairs)),
        BLOCK_T=min(_CHOOSE_TILES, triton.next_power_of_2(merge_tiles)),
        num_warps=4,
    )  # fmt: skip
    return (errors, choice, count) if with_choice else errors


def _split_keys(seq_len: int, splits: int) -> int:
    """Keys per split when ``seq_len`` keys go to ``splits`` programs (whole key tiles)."""
    return num_blocks(num_blocks(seq_len, splits), _BLOCK_N) * _BLOCK_N


@functools.lru_cache(maxsize=64)
def _key_splits(seq_len: int, programs_per_split: int, sms: int) -> int:
    """The split count with the least modelled time: waves of one program per SM, each
    ``keys per split + _SPLIT_COST_KEYS`` long (see the constants). Cached, so that a call
    does not repeat the search."""
    best, best_cost = 1, None
    for splits in range(1, max(1, seq_len // _MIN_KEYS_PER_SPLIT) + 1):
        keys = _split_keys(seq_len, splits)
        waves = num_blocks(programs_per_split * num_blocks(seq_len, keys), sms)
        cost = waves * (keys + _SPLIT_COST_KEYS)
        if best_cost is None or cost < best_cost:
            best, best_cost = splits, cost
    return best


def _check_keep_bits(keep_bits: torch.Tensor, block_masks: torch.Tensor, q: torch.Tensor) -> None:
    needed = num_blocks(q.shape[2], _KEEP_ROW_KEYS) * _KEEP_ROW_KEYS // 8
    shape = (*block_masks.shape[:2], needed)
    if (
        keep_bits.dtype != torch.uint8
        or keep_bits.shape != shape
        or not keep_bits.is_contiguous()
        or keep_bits.data_ptr() % 8  # read as 64-bit words
        or keep_bits.device != q.device
    ):
        raise ValueError(
            "keep_bits must be pack_keep_bits(token_blocks, block_masks): contiguous uint8 "
            "starting at an 8-byte boundary, "
            f"{list(shape)} on {q.device}; got {keep_bits.dtype} {list(keep_bits.shape)} "
            f"on {keep_bits.device}"
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
