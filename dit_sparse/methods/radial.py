"""Radial Attention: a static O(n log n) block mask whose band narrows with temporal distance."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..kernels import block_sparse_attention
from ..layout import TokenLayout
from ..plan import BlockPlan, num_blocks
from ..utils import warn_once
from .base import AttentionCall, SparseMethod

MODEL_TYPES = ("wan", "hunyuan")
# Smallest block the mask is drawn with when frames are smaller than `block_size`.
MIN_BLOCK_SIZE = 16


@dataclass
class Radial(SparseMethod):
    """Radial Attention (Li et al., 2025): each frame pair keeps a diagonal band of tokens
    whose width halves as the temporal distance doubles, so the kept share falls like
    ``log n / n``. Static: the mask depends only on the token layout and these options.

    Reference: mit-han-lab/radial-attention, ``radial_attn/attn_mask.py``
    (``get_window_width``, ``get_diagonal_split_mask``, ``gen_log_mask_shrinked``).
    For query frame ``i``, key frame ``j``, distance ``d = |i - j|``, ``T`` tokens per frame,
    block size ``B``, ``P = 2 ** T.bit_length()`` and ``g = d.bit_length()``:

    - band: tokens ``r`` of frame ``i`` and ``c`` of frame ``j`` (indices inside their frames)
      pair up when ``|r - c| <= w``; ``w = T`` for ``d = 0``, for ``d = 1`` ``T // 2`` (wan)
      or ``T`` (hunyuan), else ``max(P / 2**g * decay_factor, B)``;
    - split: once the undecayed band ``P / 2**g`` is narrower than a block, only every
      ``int(B / (P / 2**g))``-th distance keeps its pair; the others drop whole;
    - sink (wan only): every query frame attends to all of frame 0;
    - blocks: each pair's token mask becomes blocks separately, as upstream does: a block is
      kept when more than 60% of its non-empty key columns have more than a third of the
      query block's tokens set as rows of this pair; the pairs' blocks are ORed;
    - text: any block holding a text token is a dense row and column (upstream does the
      same for HunyuanVideo's trailing text).

    The band, split and block rule are evaluated in closed form (lengths of intervals) for
    every (frame pair, query block, key block) at once, not token by token.

    Where this mask differs from upstream, and why:

    - A frame whose tokens spill into one block more than ``ceil(T / B)`` (``T`` not a
      multiple of ``B``): upstream judges each pair on only ``ceil(T / B)`` blocks from the
      frame's first block, so the spilled rows and columns count only through the next
      frame's pairs (at the sequence end, through none). Here every block a frame touches
      is judged. Identical when ``T`` is a multiple of ``B`` (Wan and HunyuanVideo at
      768x1280); else a few more boundary blocks (Wan 480p, 16 frames of 1560 tokens:
      density 0.3638 vs upstream 0.3625).
    - Any token count, text first or last at any offset; upstream needs a multiple of 128
      video tokens. A ragged last block is judged against its real size (a third of its
      tokens), not against ``B`` as zero padding would: a tail of under ``B / 3`` tokens
      would otherwise attend to nothing. For the same reason every query block keeps its own
      (diagonal) block, which the rule already does unless frames have under 6 tokens.
    - The split threshold is ``block_size``; upstream hardcodes 128, its block size.
    - Frames smaller than ``block_size`` tokens: the block shrinks to the largest power of
      two <= tokens per frame (at least 16), with a warning. At 128 such layouts (the tiny
      presets) collapse into one dense block; upstream requires 128-token blocks.
    - Wan's adjacent frames keep half the band (``T // 2``) as in the code released with the
      paper; upstream later switched to whole adjacent frames (commit 72788d4), a little
      denser (Wan 480p, 21 frames: 0.339 vs 0.320).

    Fields (defaults: the official Wan2.1-14B script):
        dense_steps: leading steps run dense: 0.24 of the steps (Wan2.1-14B 12 of 50;
            Wan2.2-A14B uses 11 of 40, HunyuanVideo 12 of 50); an int counts steps.
        dense_final_steps: trailing steps run dense (0; users of upstream ask for this).
        dense_layers: leading layers run dense (Wan 1, HunyuanVideo 0).
        decay_factor: scales the band beyond adjacent frames (Wan2.1-14B 0.2, Wan2.2 0.8,
            HunyuanVideo 0.95); higher is denser.
        block_size: token block of the mask and the kernel, a power of two >= 16 (128).
        model_type: the near-frame rule: ``"wan"`` (adjacent frames half band, frame 0 an
            attention sink) or ``"hunyuan"`` (adjacent frames whole, no sink).
    """

    name = "radial"

    dense_steps: int | float = 0.24
    dense_layers: int | float = 1
    decay_factor: float = 0.2
    block_size: int = 128
    model_type: Literal["wan", "hunyuan"] = "wan"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.decay_factor > 0:
            raise ValueError(f"decay_factor must be > 0, got {self.decay_factor}")
        if self.block_size < MIN_BLOCK_SIZE or self.block_size & (self.block_size - 1):
            raise ValueError(
                f"block_size must be a power of two >= {MIN_BLOCK_SIZE}, got {self.block_size}"
            )
        if self.model_type not in MODEL_TYPES:
            raise ValueError(
                f"model_type must be one of {', '.join(MODEL_TYPES)}, got {self.model_type!r}"
            )
        # Not dataclass fields, so `options()` and equality see only the config.
        self._masks: dict[TokenLayout, torch.Tensor] = {}
        self._plans: dict[tuple[TokenLayout, torch.device], tuple[BlockPlan, float]] = {}

    def check_layout(self, layout: TokenLayout) -> None:
        if layout.frames < 2:
            raise ValueError(
                f"Radial needs >= 2 frames, got a 1-frame layout ({layout.describe()}); "
                "for images use adaspa"
            )

    def block_size_for(self, layout: TokenLayout) -> int:
        """The block size the mask of ``layout`` uses: ``block_size``, smaller for tiny frames."""
        tokens = layout.tokens_per_frame
        if tokens >= self.block_size:
            return self.block_size
        block = max(MIN_BLOCK_SIZE, 1 << (tokens.bit_length() - 1))
        warn_once(
            f"radial-small-frames:{tokens}:{self.block_size}",
            f"Radial: frames of {tokens} tokens are smaller than block_size {self.block_size}; "
            f"using {block}-token blocks so the mask stays sparse.",
        )
        return block

    def block_mask(self, layout: TokenLayout) -> torch.Tensor:
        """``bool[nq, nk]`` on the CPU, blocks of `block_size_for(layout)` tokens (cached)."""
        if not isinstance(layout, TokenLayout):
            raise TypeError(f"layout must be a TokenLayout, got {type(layout).__name__}")
        if layout not in self._masks:
            self.check_layout(layout)
            self._masks[layout] = _radial_block_mask(
                layout,
                self.block_size_for(layout),
                self.decay_factor,
                self.model_type,
            )
        return self._masks[layout].clone()

    def density(self, layout: TokenLayout) -> float:
        """Share of (query, key) token pairs the mask of ``layout`` computes."""
        return self._plan_and_density(layout, torch.device("cpu"))[1]

    def plan(self, layout: TokenLayout, device: torch.device | str = "cpu") -> BlockPlan:
        """The mask as a `BlockPlan` on ``device``, batch and heads 1 (broadcast); cached."""
        return self._plan_and_density(layout, torch.device(device))[0]

    def _plan_and_density(
        self, layout: TokenLayout, device: torch.device
    ) -> tuple[BlockPlan, float]:
        key = (layout, device)
        if key not in self._plans:
            mask = self.block_mask(layout)
            block = self.block_size_for(layout)
            # Density is read on the CPU once per plan, so attention calls never sync.
            density = _token_density(mask, block, layout.seq_len)
            plan = BlockPlan.from_block_mask(mask, block, block, layout.seq_len).to(device)
            self._plans[key] = (plan, density)
        return self._plans[key]

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, call: AttentionCall
    ) -> torch.Tensor:
        """Radial block-sparse attention, ``[B, H, S, D]`` in and out, ``S = layout.seq_len``."""
        if q.shape[-2] != call.layout.seq_len:
            raise ValueError(
                f"q has {q.shape[-2]} tokens but the layout ({call.layout.describe()}) has "
                f"{call.layout.seq_len}"
            )
        plan, density = self._plan_and_density(call.layout, q.device)
        call.info.update(kind="radial", density=density, frames=call.layout.frames)
        return block_sparse_attention(q, k, v, plan, scale=call.scale, precision=self.precision)

    def reset(self) -> None:
        self._masks.clear()
        self._plans.clear()

    def report_lines(self, records: list[dict[str, Any]]) -> list[str]:
        """Density by frame count: the layouts run, then the same frames at 2x and 4x length."""
        runs = {(r["frames"], r["seq_len"]): r["density"] for r in records if r["kind"] == "radial"}
        lines = []
        for (frames, seq_len), density in sorted(runs.items()):
            entries = [f"{frames} -> {density:.3f} (run)"]
            layout = next(
                (lay for lay in self._masks if (lay.frames, lay.seq_len) == (frames, seq_len)),
                None,
            )
            # The projection needs the frame size, known while the layout's mask is cached.
            if layout is not None:
                block = self.block_size_for(layout)
                for factor in (2, 4):
                    longer = TokenLayout(
                        frames * factor,
                        layout.height,
                        layout.width,
                        layout.text_len,
                        layout.text_first,
                    )
                    mask = _radial_block_mask(longer, block, self.decay_factor, self.model_type)
                    entries.append(
                        f"{longer.frames} -> {_token_density(mask, block, longer.seq_len):.3f}"
                    )
            lines.append(
                f"radial density by latent frames (O(n log n): falls as frames double): "
                f"{' | '.join(entries)}"
            )
        return lines


def _band_rules(
    frames: int, tokens: int, block: int, decay_factor: float, model_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame distance ``d``: band half-width (int32) and whether the pair is kept (bool)."""
    scale = 2 ** tokens.bit_length()
    widths, kept = [], []
    # One entry per distance (O(frames)), not per frame pair.
    for d in range(frames):
        undecayed = scale / 2 ** d.bit_length()
        if d == 0 or (d == 1 and model_type == "hunyuan"):
            width = tokens
        elif d == 1:
            width = tokens // 2
        else:
            # |r - c| <= w over integers is |r - c| <= floor(w).
            width = math.floor(max(undecayed * decay_factor, block))
        widths.append(width)
        kept.append(undecayed >= block or d % int(block / undecayed) == 0)
    return torch.tensor(widths, dtype=torch.int32), torch.tensor(kept)


def _radial_block_mask(
    layout: TokenLayout, block: int, decay_factor: float, model_type: str
) -> torch.Tensor:
    """The radial mask, ``bool[nq, nk]``, evaluated for all frame pairs and blocks at once."""
    frames, tokens = layout.frames, layout.tokens_per_frame
    n = num_blocks(layout.seq_len, block)
    widths, kept = _band_rules(frames, tokens, block, decay_factor, model_type)
    frame = torch.arange(frames)
    distance = (frame[:, None] - frame[None, :]).abs()
    width, pair_kept = widths[distance], kept[distance]
    if model_type == "wan":
        # Attention sink: a band as wide as the frame is the whole frame.
        width[:, 0] = tokens
        pair_kept[:, 0] = True

    # Blocks each frame touches, [frames, per_frame], and the frame-local token range
    # [lo, hi) of each (empty, hi <= lo, past the frame's last block). int32 halves the
    # memory traffic of the [frames, frames, per_frame, per_frame] arithmetic below.
    start = layout.video_start + frame.int() * tokens
    per_frame = num_blocks(tokens, block) + 1
    blocks = start[:, None] // block + torch.arange(per_frame, dtype=torch.int32)
    lo = (blocks * block - start[:, None]).clamp(min=0)
    hi = (blocks * block + block - start[:, None]).clamp(max=tokens)

    # Axes: [query frame, key frame, query block, key block]. Key column c has
    # count(c) = |[c - w, c + w] ∩ [r0, r1)| query rows set; count > 0 on [r0 - w, r1 - 1 + w]
    # and count >= m on [r0 + m - 1 - w, r1 - m + w] (empty unless 2w + 1 >= m and
    # r1 - r0 >= m), so the block rule needs only interval overlaps with [c0, c1).
    r0, r1 = lo[:, None, :, None], hi[:, None, :, None]
    c0, c1 = lo[None, :, None, :], hi[None, :, None, :]
    w = width[:, :, None, None]
    # count > a third of the query block's tokens: its real size, so that a ragged last block
    # of a few tokens can still pass (upstream pads it to `block` and it never would).
    size = (layout.seq_len - blocks * block).clamp(min=1, max=block)
    m = (size // 3 + 1)[:, None, :, None]
    nonzero = (torch.minimum(r1 + w, c1) - torch.maximum(r0 - w, c0)).clamp_(min=0)
    high = (torch.minimum(r1 - m + w + 1, c1) - torch.maximum(r0 + m - 1 - w, c0)).clamp_(min=0)
    # Dropped pairs and empty row ranges count no high column, so they keep no block.
    high *= (2 * w + 1 >= m) & (r1 - r0 >= m) & pair_kept[:, :, None, None]
    keep = 5 * high > 3 * nonzero  # high / nonzero > 0.6, in exact integers
    i, j, a, b = keep.nonzero(as_tuple=True)
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[blocks[i, a].long(), blocks[j, b].long()] = True
    # Every query block attends at least to itself. The rule above already keeps the
    # diagonal whenever frames have more than a third of a block of tokens; this covers
    # frames of under 6 tokens, which the minimum 16-token block groups several to a block.
    mask.diagonal().fill_(True)

    if layout.text_len:
        text = layout.text_slice
        text_blocks = slice(text.start // block, (text.stop - 1) // block + 1)
        mask[text_blocks] = True
        mask[:, text_blocks] = True
    return mask


def _token_density(mask: torch.Tensor, block: int, seq_len: int) -> float:
    """Share of token pairs a block mask covers (the ragged last block counts its real size)."""
    sizes = torch.full((mask.shape[0],), block, dtype=torch.float64)
    sizes[-1] = seq_len - block * (mask.shape[0] - 1)
    return float(sizes @ mask.double() @ sizes) / seq_len**2
