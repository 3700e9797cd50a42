"""Block selection from block attention mass in Triton: rank each row's key blocks, then list
the kept ones in ascending order, one program per query-block row.

AdaSpa picks its blocks from ``mass`` ``[B, H, nq, nk]`` at every search step. In torch that
is a full sort, a gather, a cumsum and a scatter-based plan builder: about 60 launches, whose
GPU time (``benchmarks/probes/adaspa_first_search-h100.json``) is paid while the step waits. Here each of the two passes is one launch that keeps a row in registers.
"""

from __future__ import annotations

import torch

from .launch import tl, triton, triton_runs_on, warn_fallback
from .reference import kept_blocks_ascending_reference, rank_key_blocks_reference

# One program sorts a whole row in registers. That beats torch's segmented sort at 512 blocks
# per row (Wan 480p) but not at 1,182 (Wan 720p, padded to 2,048) with any warp count
# (benchmarks/probes/block_select-h100.json), so longer rows take the torch sort, on the GPU
# as well.
_MAX_SORTED_BLOCKS = 512
# The float32 bit pattern of +inf: forced blocks rank above any mass.
_INF_BITS = 0x7F800000
_TINY = torch.finfo(torch.float32).tiny


@triton.jit
def _rank_rows(
    MASS,
    ORDER,
    CUM,
    nk,
    limit,
    forced_start,
    forced_stop,
    NK: tl.constexpr,
    TINY: tl.constexpr,
    INF_BITS: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, NK)
    valid = cols < nk
    mass = tl.load(MASS + row * nk + cols, mask=valid, other=0.0)
    # Non-negative floats order as their bit patterns do, so one int64 sort carries the index
    # along: bits in the high word, the index reversed in the low word, which breaks ties
    # towards the lower index when sorting descending (as a stable sort would).
    bits = mass.to(tl.int32, bitcast=True)
    bits = tl.where((cols >= forced_start) & (cols < forced_stop), INF_BITS, bits)
    key = (bits.to(tl.int64) << 32) | (NK - 1 - cols).to(tl.int64)
    key = tl.sort(tl.where(valid, key, -1), descending=True)
    index = NK - 1 - (key & 0xFFFFFFFF)
    kept = cols < limit
    total = tl.maximum(tl.sum(mass, 0), TINY)
    ranked = tl.load(MASS + row * nk + index, mask=kept, other=0.0) / total
    tl.store(ORDER + row * limit + cols, index, mask=kept)
    tl.store(CUM + row * limit + cols, tl.cumsum(ranked, 0), mask=kept)


@triton.jit
def _ascending_rows(ORDER, COUNTS, OUT, limit, max_kv, KV: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, KV)
    take = cols < tl.load(COUNTS + row)
    # Slots past the count sort last: they hold the largest int32.
    index = tl.load(ORDER + row * limit + cols, mask=take, other=2147483647).to(tl.int32)
    index = tl.sort(index)
    tl.store(OUT + row * max_kv + cols, tl.where(take, index, 0), mask=cols < max_kv)


def rank_key_blocks(
    mass: torch.Tensor, forced: range, limit: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's first ``limit`` key blocks in the order AdaSpa keeps them, and their mass.

    Triton for rows of up to `_MAX_SORTED_BLOCKS` blocks, torch's sort for longer ones.

    Args:
        mass: fp32 ``[B, H, nq, nk]``, non-negative (`block_attention_mass`).
        forced: key blocks ranked first whatever their mass (text, the sink), in index order.
        limit: how many blocks of each ranking to return, ``1..nk``.

    Returns:
        ``order`` int64 ``[B, H, nq, limit]``: forced blocks, then the others by descending
        mass (ties to the lower index); ``cum`` fp32 of the same shape: the mass of
        ``order[..., : j + 1]`` as a share of the row's total mass.
    """
    nk = mass.shape[-1]
    if mass.dim() != 4 or mass.dtype != torch.float32 or not 1 <= limit <= nk:
        raise ValueError(
            f"mass must be fp32 [B, H, nq, nk] and 1 <= limit <= nk; got {mass.dtype} "
            f"{tuple(mass.shape)}, limit {limit}"
        )
    if not triton_runs_on(mass.device):
        warn_fallback("rank_key_blocks", mass.device)
        return rank_key_blocks_reference(mass, forced, limit)
    padded = triton.next_power_of_2(nk)
    if padded > _MAX_SORTED_BLOCKS:
        return rank_key_blocks_reference(mass, forced, limit)
    mass = mass.contiguous()
    order = torch.empty(*mass.shape[:3], limit, dtype=torch.int64, device=mass.device)
    cum = torch.empty(*mass.shape[:3], limit, dtype=torch.float32, device=mass.device)
    rows = mass.numel() // nk
    if rows:
        _rank_rows[(rows,)](
            mass,
            order,
            cum,
            nk,
            limit,
            forced.start,
            forced.stop,
            NK=padded,
            TINY=_TINY,
            INF_BITS=_INF_BITS,
            num_warps=4,
        )
    return order, cum


def kept_blocks_ascending(order: torch.Tensor, counts: torch.Tensor, max_kv: int) -> torch.Tensor:
    """int32 ``[B, H, nq, max_kv]``: the first ``counts`` blocks of each row of ``order``
    (`rank_key_blocks`) in ascending order, zeros after (the layout `BlockPlan` lists).

    ``counts`` (``[B, H, nq]``, any integer dtype, broadcast views allowed) must lie in
    ``1..max_kv`` and ``max_kv`` at most ``order``'s last dimension; neither is checked on the
    device, which would cost a sync.
    """
    limit = order.shape[-1]
    if max_kv > limit or counts.shape != order.shape[:3]:
        raise ValueError(
            f"need counts [B, H, nq] = {tuple(order.shape[:3])} and max_kv <= {limit}; got "
            f"{tuple(counts.shape)}, max_kv {max_kv}"
        )
    if not triton_runs_on(order.device):
        warn_fallback("kept_blocks_ascending", order.device)
        return kept_blocks_ascending_reference(order, counts, max_kv)
    counts = counts.to(torch.int32).contiguous()
    out = torch.empty(*counts.shape, max_kv, dtype=torch.int32, device=order.device)
    if counts.numel():
        _ascending_rows[(counts.numel(),)](
            order.contiguous(),
            counts,
            out,
            limit,
            max_kv,
            KV=triton.next_power_of_2(max_kv),
            num_warps=4,
        )
    return out
