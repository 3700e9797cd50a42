"""Sparse VideoGen's two masks and its layout transform, as pure functions of a `TokenLayout`.

Both head kinds share one rule, written in a kind-specific token order:

- **spatial** heads keep the original, frame-major order (frame, position);
- **temporal** heads use the *temporal order*: text stays where it is, frame 0 keeps its place
  at the start of the video, and frames ``1 .. N-1`` are rearranged position-major (position,
  frame), so that each spatial position's ``N - 1`` tokens are consecutive and a temporal
  head's stripes become dense blocks.

Every video token gets a band coordinate ``c``: its index in frame-major order
(``frame * F + position``) for spatial heads, in position-major order
(``position * N + frame``) for temporal heads, with ``F`` tokens per frame and ``N`` frames.
The sequence, in the kind's order, is cut into blocks of ``block`` tokens. A (query block,
key block) pair is computed when

- either block holds a text token (text rows and columns stay dense), or
- the key block holds a frame-0 token (the first frame is an attention sink), or
- the blocks' coordinate ranges ``[min c, max c]`` come within ``band`` of each other: a band
  of ``+-band / F`` frames, in frame-major order for spatial heads and in position-major order
  for temporal heads (there ``band / F`` frames' worth of tokens are ``band / N`` positions).

Why frame 0 stays in place for temporal heads: a block of ``>= N`` position-major tokens always
holds a frame-0 token, so with frame 0 interleaved a block-level first-frame sink would make
every key block dense (the official code's sink, "the first ``F`` tokens" of the reordered
sequence, is then not the first frame for temporal heads). With frame 0 in front the sink is
the same blocks in both orders, and frame-0 query blocks of a temporal head, whose
coordinates span their positions in every frame, still see those positions in all frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels.masked_rows import pack_keep_bits
from ..kernels.reference import rows_token_masks
from ..layout import TokenLayout
from ..plan import BlockPlan, num_blocks

SPATIAL = 0
TEMPORAL = 1


def temporal_permutation(layout: TokenLayout) -> torch.Tensor:
    """int64 ``[S]``: position ``p`` of the temporal order holds original token ``perm[p]``.

    Text tokens and frame 0 stay in place; frames ``1 .. N-1`` become position-major.
    """
    perm = torch.arange(layout.seq_len)
    frame_size, video = layout.tokens_per_frame, layout.video_tokens
    # Rows of the view are frames 1..N-1, columns positions; reading it column by column lists
    # each position's tokens frame after frame.
    later = torch.arange(frame_size, video).view(layout.frames - 1, frame_size).t().reshape(-1)
    perm[layout.video_slice] = torch.cat([torch.arange(frame_size), later]) + layout.video_start
    return perm


def band_coordinates(layout: TokenLayout, kind: int) -> torch.Tensor:
    """int64 ``[V]``: band coordinate of each video token, indexed in original (frame-major) order."""
    index = torch.arange(layout.video_tokens)
    if kind == SPATIAL:
        return index
    frame, position = index // layout.tokens_per_frame, index % layout.tokens_per_frame
    return position * layout.frames + frame


@dataclass(frozen=True, eq=False)
class _BlockFeatures:
    """Per block of one kind's token order: what the mask rule needs, ``[n_blocks]`` each."""

    has_text: torch.Tensor
    has_sink: torch.Tensor
    cmin: torch.Tensor
    cmax: torch.Tensor
    sizes: torch.Tensor

    def forced(self) -> torch.Tensor:
        """bool ``[nq, nk]``: pairs kept whatever the band (text rows/columns, sink columns)."""
        return self.has_text[:, None] | self.has_text[None, :] | self.has_sink[None, :]

    def gaps(self) -> torch.Tensor:
        """int64 ``[nq, nk]``: distance between the blocks' coordinate ranges (0 if they overlap)."""
        ahead = self.cmin[None, :] - self.cmax[:, None]
        behind = self.cmin[:, None] - self.cmax[None, :]
        return torch.maximum(ahead, behind).clamp_min(0)

    def mask(self, band: int) -> torch.Tensor:
        return self.forced() | (self.gaps() <= band)

    def pair_weights(self) -> torch.Tensor:
        return self.sizes[:, None] * self.sizes[None, :]


def _block_features(
    layout: TokenLayout, kind: int, block: int, device: torch.device
) -> _BlockFeatures:
    seq_len, video = layout.seq_len, layout.video_tokens
    perm = temporal_permutation(layout) if kind == TEMPORAL else torch.arange(seq_len)
    video_index = perm.to(device) - layout.video_start
    is_video = (video_index >= 0) & (video_index < video)
    video_index = video_index.clamp(0, video - 1)
    coord = band_coordinates(layout, kind).to(device)[video_index]
    # Sentinels keep blocks without video tokens out of min/max; such blocks hold text, so they
    # are dense anyway. 4 V keeps every difference far from int64 overflow.
    far = 4 * video + 4
    n_blocks = num_blocks(seq_len, block)

    def blocked(values: torch.Tensor, fill) -> torch.Tensor:
        padded = values.new_full((n_blocks * block,), fill)
        padded[:seq_len] = values
        return padded.view(n_blocks, block)

    return _BlockFeatures(
        has_text=blocked(~is_video, False).any(1),
        has_sink=blocked(is_video & (video_index < layout.tokens_per_frame), False).any(1),
        cmin=blocked(torch.where(is_video, coord, far), far).amin(1),
        cmax=blocked(torch.where(is_video, coord, -far), -far).amax(1),
        sizes=blocked(torch.ones_like(video_index), 0).sum(1),
    )


def choose_band(features: tuple[_BlockFeatures, _BlockFeatures], density: float) -> int:
    """The band (in coordinate units) whose mean density over both kinds is closest to ``density``.

    Density counts token pairs, sink and text included; ties go to the narrower band. Only the
    distinct block gaps are candidates, since the mask changes nowhere else.
    """
    gaps, weights, forced_total, total = [], [], 0.0, 0.0
    for feats in features:
        forced, pair = feats.forced(), feats.pair_weights().double()
        gaps.append(feats.gaps()[~forced])
        weights.append(pair[~forced])
        forced_total += pair[forced].sum().item()
        total += pair.sum().item()
    gap, order = torch.sort(torch.cat(gaps))
    cumulative = torch.cat(weights)[order].cumsum(0)
    cumulative = torch.cat([cumulative.new_zeros(1), cumulative])
    # The narrowest band, 0, keeps only overlapping blocks and is a candidate even if no gap is 0.
    candidates = torch.unique_consecutive(torch.cat([gap.new_zeros(1), gap]))
    kept = cumulative[torch.searchsorted(gap, candidates, right=True)]
    densities = (forced_total + kept) / total
    return int(candidates[torch.argmin((densities - density).abs())].item())


def effective_block(layout: TokenLayout, block_size: int, min_block: int) -> int:
    """``block_size``, shrunk to the largest power of two <= tokens per frame (not below ``min_block``)."""
    per_frame = 1 << (layout.tokens_per_frame.bit_length() - 1)
    return max(min_block, min(block_size, per_frame))


@dataclass(frozen=True, eq=False)
class SVGMasks:
    """Both kinds' masks for one layout, built once (see `build_masks`) and cached.

    Kind-indexed tensors have a leading dimension of 2: ``[SPATIAL]``, ``[TEMPORAL]``.

    Attributes:
        layout: the token layout these masks are for.
        block: block size (query and key) of the plans.
        band: band half-width in coordinate units (``band / tokens_per_frame`` frames).
        block_masks: bool ``[2, nq, nk]``, each in its kind's token order.
        perms: int64 ``[2, S]``: the identity and `temporal_permutation`.
        token_blocks: int64 ``[2, S]``: the block of each original token in each kind's order.
        keep_bits: uint8, `pack_keep_bits` of both masks, for the profiling kernel.
        kinds_permuted: bool ``[1, 2]``: which kind's plan reads through the permutation.
        kv_indices, kv_counts: int32 ``[1, 2, nq, max_kv]`` and ``[1, 2, nq]``: both kinds'
            lists, as the two shared plans of `plan`.
        densities: fp32 ``[2]``: share of token pairs each kind computes.
        density_gap: temporal minus spatial density, as a float (for `density` without a sync).
    """

    layout: TokenLayout
    block: int
    band: int
    block_masks: torch.Tensor
    perms: torch.Tensor
    token_blocks: torch.Tensor
    keep_bits: torch.Tensor
    kinds_permuted: torch.Tensor
    kv_indices: torch.Tensor
    kv_counts: torch.Tensor
    densities: torch.Tensor
    density_gap: float

    @property
    def band_frames(self) -> float:
        return self.band / self.layout.tokens_per_frame

    def plan(self, kinds: torch.Tensor) -> BlockPlan:
        """The plan for head kinds int ``[B, H]`` (0 spatial, 1 temporal): both kinds' lists
        as two shared plans that each head picks by its kind (``head_plans``, no copy), and the
        temporal permutation for the temporal one."""
        return BlockPlan(
            self.kv_indices,
            self.kv_counts,
            self.block,
            self.block,
            self.layout.seq_len,
            perm=self.perms[TEMPORAL][None, None],
            permuted=self.kinds_permuted,
            head_plans=kinds,
        )

    def density(self, kinds: torch.Tensor) -> torch.Tensor:
        """0-d fp32: mean share of token pairs computed by heads of kinds ``[B, H]`` (no sync)."""
        return self.density_of(kinds.sum(dtype=torch.float32), kinds.numel())

    def density_of(self, temporal: torch.Tensor, heads: int) -> torch.Tensor:
        """0-d fp32: mean density of ``heads`` heads of which ``temporal`` (0-d) run temporal;
        one launch, no sync."""
        return torch.add(self.densities[SPATIAL], temporal, alpha=self.density_gap / heads)

    def token_masks(self, rows: torch.Tensor) -> torch.Tensor:
        """bool ``[2, R, S]``: the keys (original order) each kind keeps for original rows ``rows``."""
        return rows_token_masks(self.token_blocks, self.block_masks, rows)

    def describe(self) -> str:
        spatial, temporal = self.densities.tolist()
        return (
            f"{self.layout.describe()}: blocks of {self.block}, band +-{self.band_frames:.2f} "
            f"frames, density spatial {spatial:.3f} / temporal {temporal:.3f}"
        )


def build_masks(
    layout: TokenLayout, block: int, density: float, device: torch.device | str = "cpu"
) -> SVGMasks:
    """Both kinds' block masks for ``layout`` on ``device``, with the band that best fits ``density``.

    Syncs with the device a few times: build once per layout and keep the result.
    """
    device = torch.device(device)
    features = tuple(_block_features(layout, kind, block, device) for kind in (SPATIAL, TEMPORAL))
    band = choose_band(features, density)
    block_masks = torch.stack([f.mask(band) for f in features])
    identity = torch.arange(layout.seq_len, device=device)
    perm = temporal_permutation(layout).to(device)
    inverse = torch.empty_like(perm)
    inverse[perm] = identity
    token_blocks = torch.stack([identity, inverse]) // block
    # Kinds ride on the head dimension, so both lists get one common width.
    plan = BlockPlan.from_block_mask(block_masks[None], block, block, layout.seq_len)
    densities = plan.density_per_head()[0]
    return SVGMasks(
        layout=layout,
        block=block,
        band=band,
        block_masks=block_masks,
        perms=torch.stack([identity, perm]),
        token_blocks=token_blocks,
        keep_bits=pack_keep_bits(token_blocks, block_masks),
        kinds_permuted=torch.tensor([[False, True]], device=device),
        kv_indices=plan.kv_indices,
        kv_counts=plan.kv_counts,
        densities=densities,
        density_gap=float(densities[TEMPORAL] - densities[SPATIAL]),
    )
