"""Attention mass per (query block, key block) from a cached LSE, in one fused Triton pass.

AdaSpa's "LSE-cached search": with the row log-sum-exps of a dense pass at hand, the share of a
row's attention that falls on key ``j`` is ``exp(q . k_j * scale - lse)`` exactly, so one pass of
``Q K^T`` (no ``P V``, no running max) gives every block's mass without an S x S tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .launch import (
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

# Per head dim on CUDA. At Wan 480p (D = 128, blocks of 64;
# benchmarks/probes/sweep_mass_and_rows.py) 128 x 128 tiles with 8 warps and 2 stages ran
# fastest, ahead of 128 x 64 tiles with 4 warps (one block per tile, the earlier choice), 3
# stages or 256-row tiles; at 720p too. A tile then covers two 64-key blocks.
_GPU_CONFIGS = {
    16: KernelConfig(128, 128, 4, 2),
    32: KernelConfig(128, 128, 4, 2),
    64: KernelConfig(128, 128, 4, 2),
    128: KernelConfig(128, 128, 8, 2),
    256: KernelConfig(64, 64, 4, 2),
}
_INTERPRETER_CONFIG = KernelConfig(128, 128, 4, 1)


# Rows one partial sum covers: one warp's rows of a tile in Triton's MMA layouts (Ampere and
# Hopper), so adding them up takes shuffles within a warp only. Summing whole query blocks
# across warps in the key loop put shared-memory round trips and barriers in every iteration.
PARTIAL_ROWS = 16


@dataclass(frozen=True)
class MassPartials:
    """Block-mass partial sums that the kernels store without atomics (so the result does not
    depend on the order programs finish): ``sums[b, h, g, c]`` is the mass that the
    ``group_rows`` rows of group ``g`` put on the ``chunk_keys`` keys of chunk ``c``. `total`
    adds them up into query and key blocks. They take one fp32 per 16 rows and key chunk (0.9 GB
    for Wan 720p's 40 heads and 64-key blocks, per batch item), for the length of one pass."""

    sums: torch.Tensor
    group_rows: int
    chunk_keys: int
    q_len: int
    k_len: int
    block_q: int
    block_k: int

    @classmethod
    def allocate(
        cls,
        q: torch.Tensor,
        k_len: int,
        block_q: int,
        block_k: int,
        config: KernelConfig,
        key_tile: int,
    ) -> MassPartials:
        """Sums for ``q`` ``[B, H, S, D]``'s rows against ``k_len`` keys, as programs of
        ``config.block_m`` rows and ``config.block_n``-key tiles write them, visiting keys in
        runs of ``key_tile`` (a multiple of ``config.block_n``)."""
        batch, heads, q_len = q.shape[:3]
        group_rows = min(PARTIAL_ROWS, block_q, config.block_m)
        chunk_keys = min(config.block_n, block_k)
        nq, nk = num_mass_blocks(q_len, k_len, block_q, block_k)
        # The kernels store unmasked, every row group and key chunk their tiles reach (sums past
        # the last row or key are zero); only what they do not reach is zeroed here.
        rows_written = triton.cdiv(q_len, config.block_m) * config.block_m
        keys_written = triton.cdiv(k_len, key_tile) * key_tile
        sums = torch.empty(
            batch, heads, max(nq * block_q, rows_written) // group_rows,
            max(nk * block_k, keys_written) // chunk_keys, dtype=torch.float32, device=q.device,
        )  # fmt: skip
        sums[:, :, rows_written // group_rows :].zero_()
        sums[..., keys_written // chunk_keys :].zero_()
        return cls(sums, group_rows, chunk_keys, q_len, k_len, block_q, block_k)

    def total(self) -> torch.Tensor:
        """fp32 ``[B, H, nq, nk]``: each query block's mean row mass on each key block."""
        batch, heads = self.sums.shape[:2]
        nq, nk = num_mass_blocks(self.q_len, self.k_len, self.block_q, self.block_k)
        groups, chunks = self.block_q // self.group_rows, self.block_k // self.chunk_keys
        sums = self.sums[:, :, : nq * groups, : nk * chunks].reshape(
            batch, heads, nq, groups, nk, chunks
        )
        rows = self.q_len - torch.arange(nq, device=sums.device) * self.block_q
        return sums.sum((3, 5)) / rows.clamp(max=self.block_q)[:, None]


@triton.jit
def block_mass_rows(
    lse_ptr,
    stride_ls,
    sums_ptr,
    stride_sg,
    pid_m,
    q_len,
    BLOCK_M: tl.constexpr,
    GROUP_ROWS: tl.constexpr,
):
    """For a program's ``BLOCK_M`` rows: their LSE in log2 units (``+inf`` for rows past the
    end or with LSE ``-inf``, so they add no mass), and the pointers to its row groups' sums."""
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    lse = tl.load(lse_ptr + offs_m * stride_ls, mask=offs_m < q_len, other=float("-inf"))
    lse2 = tl.where(lse > float("-inf"), lse * 1.4426950408889634, float("inf"))
    groups = pid_m * (BLOCK_M // GROUP_ROWS) + tl.arange(0, BLOCK_M // GROUP_ROWS)
    return lse2, sums_ptr + groups.to(tl.int64) * stride_sg


@triton.jit
def chunk_sums(p, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr):
    """``[BLOCK_M, BLOCK_N // CHUNK]``: each row's sum of ``p`` over each ``CHUNK`` keys, within
    a thread's registers and its quad. The dense pass that fuses the mass adds these up for its
    softmax row sums instead of summing ``p`` a second time."""
    if BLOCK_N == CHUNK:
        return tl.expand_dims(tl.sum(p, 1), 1)
    return tl.sum(tl.reshape(p, [BLOCK_M, BLOCK_N // CHUNK, CHUNK]), 2)


@triton.jit
def add_block_mass(
    sums,
    weight,
    group_ptrs,
    start,
    stride_sc,
    BLOCK_M: tl.constexpr,
    GROUP_ROWS: tl.constexpr,
    CHUNK: tl.constexpr,
    SPAN: tl.constexpr,
):
    """Store one tile's share of the mass partial sums (`MassPartials`): its `chunk_sums`
    ``[BLOCK_M, SPAN]`` (keys ``start..``), each row scaled by ``weight`` ``[BLOCK_M]``, summed
    over each ``GROUP_ROWS`` rows (``group_ptrs``): shuffles within one warp. Shared by the
    mass pass and the dense pass that fuses it (`block_sparse_attention`)."""
    per_row = sums * weight[:, None]
    groups = tl.sum(tl.reshape(per_row, [BLOCK_M // GROUP_ROWS, GROUP_ROWS, SPAN]), 1)
    chunks = start // CHUNK + tl.arange(0, SPAN)
    tl.store(group_ptrs[:, None] + chunks[None, :] * stride_sc, groups)


@triton.jit
def _mass_tiles(
    q,
    lse2,
    k_ptr,
    group_ptrs,
    first,
    last,
    k_len,
    qk_scale,
    stride_ks,
    stride_sc,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    GROUP_ROWS: tl.constexpr,
    CHUNK: tl.constexpr,
    MASK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Mass of key tiles ``first..last`` (``BLOCK_N`` keys each) into the row groups' sums."""
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
            chunk_sums(p, BLOCK_M, BLOCK_N, CHUNK), ones, group_ptrs, t * BLOCK_N, stride_sc,
            BLOCK_M, GROUP_ROWS, CHUNK, BLOCK_N // CHUNK,
        )  # fmt: skip


@triton.jit
def _block_mass_fwd(
    Q,
    K,
    LSE,
    SUMS,
    stride_qb,
    stride_qh,
    stride_qs,
    stride_kb,
    stride_kh,
    stride_ks,
    stride_lb,
    stride_lh,
    stride_ls,
    stride_sb,
    stride_sh,
    stride_sg,
    stride_sc,
    heads,
    q_len,
    k_len,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    GROUP_ROWS: tl.constexpr,
    CHUNK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // heads).to(tl.int64)
    h = (pid_bh % heads).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qs
    q = tl.load(q_ptrs + tl.arange(0, HEAD_DIM)[None, :], mask=offs_m[:, None] < q_len, other=0.0)
    lse2, group_ptrs = block_mass_rows(
        LSE + b * stride_lb + h * stride_lh, stride_ls, SUMS + b * stride_sb + h * stride_sh,
        stride_sg, pid_m, q_len, BLOCK_M, GROUP_ROWS,
    )  # fmt: skip
    k_ptr = K + b * stride_kb + h * stride_kh
    tiles = tl.cdiv(k_len, BLOCK_N)
    full_tiles = k_len // BLOCK_N
    _mass_tiles(
        q, lse2, k_ptr, group_ptrs, 0, full_tiles, k_len, qk_scale, stride_ks, stride_sc,
        HEAD_DIM, BLOCK_M, BLOCK_N, GROUP_ROWS, CHUNK, False, DOT_PRECISION,
    )  # fmt: skip
    _mass_tiles(
        q, lse2, k_ptr, group_ptrs, full_tiles, tiles, k_len, qk_scale, stride_ks, stride_sc,
        HEAD_DIM, BLOCK_M, BLOCK_N, GROUP_ROWS, CHUNK, True, DOT_PRECISION,
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
    partials = MassPartials.allocate(q, k_len, block_q, block_k, config, config.block_n)
    sums = partials.sums
    q, k = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k))
    grid = (triton.cdiv(q_len, config.block_m), batch * heads)
    _block_mass_fwd[grid](
        q, k, lse, sums,
        *q.stride()[:3], *k.stride()[:3], *lse.stride(), *sums.stride(),
        heads, q_len, k_len, scale * LOG2E,
        HEAD_DIM=head_dim,
        BLOCK_M=config.block_m,
        BLOCK_N=config.block_n,
        GROUP_ROWS=partials.group_rows,
        CHUNK=partials.chunk_keys,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )  # fmt: skip
    return partials.total()


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
