"""`SparseVideoGen`: per-head spatial or temporal block masks, chosen online by sampled error.

After Xi et al., "Sparse VideoGen: Accelerating Video Diffusion Transformers with
Spatial-Temporal Sparsity" (arXiv 2502.01776; code: svg-project/Sparse-VideoGen,
``svg/models/wan/attention.py``, ``placement.py``, ``utils.py``). A head is either *spatial*
(a token attends to its own and nearby frames) or *temporal* (a token attends to its spatial
position in every frame). At every sparse step and layer:

1. ``num_sampled_rows`` query rows, spread over the whole video (one per stratum, random
   within it), get their exact attention output and their outputs under the spatial and the
   temporal mask: one split-K Triton pass over the keys (`masked_row_errors`);
2. each (batch element, head) takes the kind whose output is closer (mean squared error);
3. one block-sparse kernel call computes every head; temporal heads read their tokens through
   the plan's permutation (`svg_masks.temporal_permutation`), which turns their stripes into
   dense blocks, and the kernel writes the output back in the original order.

The masks, the band that meets ``density`` and the permutation depend only on the layout:
`svg_masks` builds them once per layout and this method caches them until `reset`.

Differences from the official code, on purpose: rows are sampled from the whole sequence (it
samples only the first 10,000), profiling uses the masks the kernel then runs (it profiles a
fixed two-frame band), the band is chosen so that the measured density, sink and text
included, is closest to ``density`` (it solves a continuous formula that leaves the sink out),
and frame 0 keeps its place in the temporal order, so the first-frame sink is exact for both
kinds (see `svg_masks`).
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import Any

import torch

from ..kernels import block_sparse_attention, masked_row_errors
from ..layout import TokenLayout
from ..utils import warn_once
from .base import AttentionCall, SparseMethod
from .svg_masks import SPATIAL, TEMPORAL, SVGMasks, build_masks, effective_block

_MIN_BLOCK = 16
# Layouts whose masks stay cached. Runs with padded prompts (HunyuanVideo) see one layout per
# valid prompt length; the oldest are dropped rather than kept for the life of the process.
_CACHED_LAYOUTS = 8

__all__ = ["SPATIAL", "TEMPORAL", "SVGMasks", "SparseVideoGen"]


@dataclass
class SparseVideoGen(SparseMethod):
    """Sparse VideoGen (SVG): each head runs a spatial or a temporal block mask, chosen online.

    Fields (defaults from the official Wan scripts):
        dense_steps: leading steps run dense, default 0.2 of the steps (Wan 720p; the official
            HunyuanVideo scripts use 0.1).
        dense_layers: leading layers run dense, default 0.03 of the layers (1 of Wan's 30 or 40).
        density: target share of token pairs kept (the official code calls it ``--sparsity``, 0.25 to 0.3 in
            its scripts), default 0.25. The band of frames both kinds keep is the one whose
            density, first-frame sink and text included, comes closest;
            ``masks(layout).describe()`` shows the band and both kinds' densities.
        num_sampled_rows: query rows profiled per call to pick each head's kind, default 64.
        block_size: block size of the plans, a power of two >= 16, default 128. Layouts with
            fewer tokens per frame use the largest power of two that fits in a frame (at least
            16, with a one-time warning), so that small videos are still sparse: 4x4-token
            frames get blocks of 16, 8x8-token frames blocks of 64.
        seed: seeds the profiled rows, which differ by layer and step but repeat across runs.
    """

    name = "svg"

    dense_steps: int | float = 0.2
    dense_layers: int | float = 0.03
    density: float = 0.25
    num_sampled_rows: int = 64
    block_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        # Per (layout, device, options), most recent last; dropped by `reset`. Not a config field.
        self._masks: OrderedDict[tuple[Any, ...], SVGMasks] = OrderedDict()
        if not 0.0 < self.density <= 1.0:
            raise ValueError(
                f"density is the share of token pairs kept, in (0, 1]; got {self.density}"
            )
        if self.num_sampled_rows < 1:
            raise ValueError(f"num_sampled_rows must be >= 1, got {self.num_sampled_rows}")
        if self.block_size < _MIN_BLOCK or self.block_size & (self.block_size - 1):
            raise ValueError(
                f"block_size must be a power of two >= {_MIN_BLOCK}, got {self.block_size}"
            )

    def check_layout(self, layout: TokenLayout) -> None:
        if layout.frames < 2:
            raise ValueError(
                f"SparseVideoGen needs a video of at least 2 latent frames, got {layout.describe()}: "
                "its masks are built from frames. Methods that take single images: adaspa."
            )

    def reset(self) -> None:
        self._masks.clear()

    # --- masks ---------------------------------------------------------------------------

    def masks(self, layout: TokenLayout, device: torch.device | str = "cpu") -> SVGMasks:
        """Both kinds' masks and the temporal permutation for ``layout`` (cached per device).

        The first call for a layout builds them on ``device`` (a few device syncs); later calls
        return the cached object. The 8 most recently used layouts stay cached.
        """
        self.check_layout(layout)
        device = torch.device(device)
        key = (layout, str(device), self.block_size, self.density)
        if key in self._masks:
            self._masks.move_to_end(key)
        else:
            block = effective_block(layout, self.block_size, _MIN_BLOCK)
            if block != self.block_size:
                warn_once(
                    f"svg-block:{self.block_size}:{layout.tokens_per_frame}",
                    f"SparseVideoGen: frames of {layout.tokens_per_frame} tokens are smaller "
                    f"than blocks of {self.block_size}; using blocks of {block} for them.",
                )
            self._masks[key] = build_masks(layout, block, self.density, device)
            if len(self._masks) > _CACHED_LAYOUTS:
                self._masks.popitem(last=False)
        return self._masks[key]

    # --- profiling -------------------------------------------------------------------------

    def sample_rows(
        self, layout: TokenLayout, device: torch.device | str, generator: torch.Generator | None
    ) -> torch.Tensor:
        """int64 ``[R]`` on ``device``: one random video row per each of ``R`` equal strata.

        Drawn on the CPU (``generator`` is a CPU generator; None seeds one with ``seed``), so
        a seed picks the same rows on every device; a GPU gets them in one copy that does not
        wait for the device.
        """
        count = min(self.num_sampled_rows, layout.video_tokens)
        edges = torch.arange(count + 1) * layout.video_tokens // count
        sizes = edges[1:] - edges[:-1]
        if generator is None:
            generator = torch.Generator().manual_seed(self.seed)
        draw = torch.rand(count, generator=generator)
        offsets = torch.minimum((draw * sizes).long(), sizes - 1)  # rounding could reach size
        rows = layout.video_start + edges[:-1] + offsets
        if torch.device(device).type != "cuda":
            return rows.to(device)
        # From pinned memory the copy is queued behind the stream's work like a kernel. From
        # pageable memory CUDA first waits for the stream to drain, which can leave the GPU idle
        # while the host queues the rest of the call (profiled: back to back, such calls took
        # longer than their kernels' GPU time). PyTorch's pinned-memory cache keeps the block
        # until the copy is done.
        return rows.pin_memory().to(device, non_blocking=True)

    def sampled_errors(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        layout: TokenLayout,
        *,
        scale: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """fp32 ``[B, H, 2]``: mean squared error of the sampled rows' output under each kind.

        ``q, k, v`` are ``[B, H, S, D]``; index the last dimension with `SPATIAL`/`TEMPORAL`.
        On CUDA one split-K Triton pass (`masked_row_errors`) reads K and V once from memory;
        no device sync.
        """
        return self._profile(q, k, v, layout, scale, generator)[0]

    def classify(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        layout: TokenLayout,
        *,
        scale: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """int64 ``[B, H]``: each head's kind per batch element, `SPATIAL` (0) or `TEMPORAL` (1).

        ``q, k, v`` are ``[B, H, S, D]`` in the original token order. A head is temporal when
        its sampled rows' temporal-mask error is strictly lower (see `sampled_errors`).
        """
        return self._profile(q, k, v, layout, scale, generator)[1]

    def _profile(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        layout: TokenLayout,
        scale: float | None,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`masked_row_errors` with the choice: errors ``[B, H, 2]``, kinds int64 ``[B, H]``
        and the number of temporal heads (fp32 0-d), all on the device."""
        _check_qkv(q, k, v, layout)
        masks = self.masks(layout, q.device)
        rows = self.sample_rows(layout, q.device, generator)
        return masked_row_errors(
            q, k, v, rows, masks.token_blocks, masks.block_masks, scale=scale,
            keep_bits=masks.keep_bits, with_choice=True,
        )  # fmt: skip

    # --- attention -------------------------------------------------------------------------

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, call: AttentionCall
    ) -> torch.Tensor:
        masks = self.masks(call.layout, q.device)
        generator = torch.Generator().manual_seed(
            self.seed + 1_000_003 * call.step + 10_007 * call.layer
        )
        _, kinds, temporal = self._profile(q, k, v, call.layout, call.scale, generator)
        out = block_sparse_attention(
            q, k, v, masks.plan(kinds), scale=call.scale, precision=self.precision
        )
        call.info.update(
            kind="svg",
            density=masks.density_of(temporal, kinds.numel()),
            # Heads of this call that run temporal, averaged over the batch: 0 .. H.
            temporal_heads=temporal.mul(1 / kinds.shape[0]),
        )
        return out

    def report_lines(self, records: list[dict[str, Any]]) -> list[str]:
        """Temporal heads per layer (of the call's heads), one line per step and branch."""
        rows: dict[tuple, dict[int, float]] = defaultdict(dict)
        totals: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0.0])
        layers: dict[str, set[int]] = defaultdict(set)
        for r in records:
            layers[r["transformer"]].add(r["layer"])
            if r.get("kind") == "svg":
                key = (r["transformer"], r["step"], r["branch"])
                rows[key][r["layer"]] = r["temporal_heads"]
                totals[key][0] += r["temporal_heads"]
                totals[key][1] += r["heads"]
        if not rows:
            return []
        lines = [
            "svg head kinds: temporal heads per layer (the rest spatial; '-' = dense call)",
            f"{'transformer':<14} {'step':>4} {'branch':<11} {'temporal':>8}  per layer",
        ]
        for key in sorted(rows):
            name, step, branch = key
            cells = (
                f"{rows[key][layer]:g}" if layer in rows[key] else "-"
                for layer in sorted(layers[name])
            )
            share = totals[key][0] / totals[key][1]
            lines.append(f"{name:<14} {step:>4} {branch:<11} {share:>8.1%}  {' '.join(cells)}")
        return lines


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: TokenLayout) -> None:
    if not (q.dim() == 4 and q.shape == k.shape and q.shape[:3] == v.shape[:3]):
        raise ValueError(
            "q, k, v must be [B, H, S, D] with matching shapes, got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[2] != layout.seq_len:
        raise ValueError(
            f"q has {q.shape[2]} tokens, layout {layout.describe()} has {layout.seq_len}"
        )
