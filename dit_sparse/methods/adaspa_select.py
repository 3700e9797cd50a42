"""AdaSpa's block selection: pure tensor functions from block attention mass to a `BlockPlan`.

``mass`` is fp32 ``[B, H, nq, nk]``: for query block ``i`` and key block ``j``, the mean over
the rows of ``i`` of the attention probability that falls in ``j`` (each row sums to about 1;
kept mass is a share of the row, `kernels.reference.normalize_mass`). Every selection works on
one ranking per row (`rank_blocks`): forced blocks (text, the sink) first, then the others by
descending mass, so "keep ``c`` blocks" always means "keep the first ``c`` of the ranking" and
the mass kept is a prefix sum. The ranking and the plan's block lists come from
`kernels.block_select` (Triton on the GPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..kernels.block_select import kept_blocks_ascending, rank_key_blocks
from ..layout import TokenLayout
from ..plan import BlockPlan


@dataclass(frozen=True)
class RankedMass:
    """Each row's key blocks in the order they are kept, and the mass kept by each prefix.

    ``order``: int64 ``[B, H, nq, L]``, the first ``L <= nk`` blocks of each row's ranking:
    forced blocks first, then by descending mass. ``cum``: fp32 ``[B, H, nq, L]``, mass of
    ``order[..., : j + 1]``. ``forced``: how many leading entries of every row are forced.
    """

    order: torch.Tensor
    cum: torch.Tensor
    forced: int
    num_k_blocks: int


def text_key_blocks(layout: TokenLayout, block: int) -> range:
    """Key blocks holding at least one text token: AdaSpa always keeps them (attention sink)."""
    if not layout.text_len:
        return range(0)
    text = layout.text_slice
    return range(text.start // block, (text.stop - 1) // block + 1)


def rank_blocks(mass: torch.Tensor, forced: range, limit: int | None = None) -> RankedMass:
    """Rank each row's key blocks: ``forced`` first, then by descending ``mass`` (ties to the
    lower index); kept mass is a share of the row's total (`kernels.reference.normalize_mass`).

    ``limit`` keeps only the first ``limit`` of each row (no selection may keep more): the
    ranking is then ``[B, H, nq, limit]``, which the later steps read.
    """
    nk = mass.shape[-1]
    order, cum = rank_key_blocks(mass, forced, nk if limit is None else limit)
    return RankedMass(order, cum, len(forced), nk)


def keep_count(density: float, num_k_blocks: int, forced: int) -> int:
    """Key blocks per row for a density: nearest whole block (half up), at least one, never
    fewer than the forced blocks (which therefore win over a smaller budget)."""
    count = min(num_k_blocks, max(1, math.floor(density * num_k_blocks + 0.5)))
    return max(count, forced)


def hierarchical_levels(sparsity: float) -> tuple[float, float, float]:
    """The three sparsity levels of head-adaptive hierarchical sparsity.

    ``(sparser, base, denser) = ((1 + s) / 2, s, (3 s - 1) / 2)``: moving one head up and one
    down keeps the mean at ``s``. For ``s < 1/3`` the denser level would fall below 0 and is
    clamped to 0 (dense), so the mean sparsity is then above ``s``.
    """
    return (1.0 + sparsity) / 2.0, sparsity, max(0.0, (3.0 * sparsity - 1.0) / 2.0)


def hierarchical_groups(recall: torch.Tensor, threshold: float) -> torch.Tensor:
    """Which level of `hierarchical_levels` each head gets, int64 ``[B, H]``.

    With ``n`` the number of heads of a batch item whose ``recall`` (``[B, H]``, mass kept at
    the base sparsity) exceeds ``threshold``: the ``n`` highest-recall heads get 0 (sparser),
    the ``n`` lowest get 2 (denser), the rest 1 (base). ``n`` is capped at ``H // 2`` so that
    the two groups never overlap and stay the same size; ties keep head order.
    """
    heads = recall.shape[-1]
    n = (recall > threshold).sum(-1, keepdim=True).clamp(max=heads // 2)
    order = torch.sort(recall, dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(
        -1, order, torch.arange(heads, device=recall.device).expand_as(order)
    )
    groups = torch.ones_like(rank)
    groups = torch.where(rank < n, 0, groups)
    return torch.where(rank >= heads - n, 2, groups)


def coverage_counts(
    ranked: RankedMass, coverage: float, min_count: int, max_count: int
) -> torch.Tensor:
    """int32 ``[B, H, nq]``: per row, the fewest blocks of the ranking whose mass reaches
    ``coverage`` (forced blocks always in), clamped to ``[min_count, max_count]``
    (``max_count`` at most the ranking's length)."""
    # A block is needed while the mass of the blocks ranked before it is below the target.
    before = torch.cat([torch.zeros_like(ranked.cum[..., :1]), ranked.cum[..., :-1]], dim=-1)
    counts = (before < coverage).sum(-1).clamp_min(ranked.forced)
    return counts.clamp(min_count, max_count).to(torch.int32)


def kept_mass(ranked: RankedMass, counts: torch.Tensor) -> torch.Tensor:
    """fp32 ``[B, H, nq]``: mass held by the first ``counts`` (``>= 1``) blocks of each row."""
    index = (counts.long() - 1).clamp_min(0).unsqueeze(-1)
    return ranked.cum.gather(-1, index.expand(*ranked.cum.shape[:-1], 1)).squeeze(-1)


def head_coverage(kept: torch.Tensor, seq_len: int, block: int) -> torch.Tensor:
    """fp32 ``[B, H]``: kept mass averaged over query tokens (a ragged last block weighs less)."""
    starts = torch.arange(kept.shape[-1], device=kept.device) * block
    rows = torch.clamp(seq_len - starts, max=block).to(kept.dtype)
    return (kept * rows).sum(-1) / seq_len


def plan_from_ranking(
    ranked: RankedMass, counts: torch.Tensor, max_kv: int, block: int, seq_len: int
) -> BlockPlan:
    """The plan keeping the first ``counts[b, h, i]`` blocks of each row's ranking.

    ``max_kv`` must be at least ``counts.max()``; passing a bound known on the host avoids a
    device sync. Kept indices are written ascending, as `BlockPlan` requires.
    """
    counts = counts.to(torch.int32).contiguous()
    return BlockPlan(
        kept_blocks_ascending(ranked.order, counts, max_kv),
        counts,
        block,
        block,
        seq_len,
    )
