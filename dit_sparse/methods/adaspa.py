"""`AdaSpa`: blockified adaptive sparse attention found by an online search, reused across steps.

After Xia et al., "Training-free and Adaptive Sparse Attention for Efficient Long Video
Generation" (AdaSpa, arXiv 2502.21079; no public code). Which key blocks a head needs, and
each row's log-sum-exp (LSE), barely change across denoising steps, so:

- steps before ``dense_steps`` run dense (the shared schedule); with ``warmup_lse`` (by
  default when the run has at least `WARMUP_LSE_MIN_STEPS` steps) the last of them also keeps
  each row's LSE;
- the first search computes exact attention (that step's output is exact) with its LSE, and
  the block attention mass: per (query block, key block) tile the sum of
  ``exp(q k * scale - LSE)``, from which the plan is chosen: a second pass with the step's
  own LSE, as the paper describes (without ``warmup_lse``), or, with a warm-up step's LSE, out
  of the same pass (`dense_attention_with_mass`);
- later searches (``search_steps``) reuse the LSE stored at the previous search and need only
  the mass pass (``search_rows`` estimates it from fewer rows); the new plan then computes
  that step's output;
- every other step reuses the layer's plan: no search work at all.

Plans and LSE live in ``call.cache`` (one dict per guidance branch and generation) under
``("adaspa", layer)``, tagged with the layout and q's shape: a call with another layout or
shape searches afresh and replaces them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..kernels import (
    block_attention_mass,
    block_sparse_attention,
    dense_attention_with_lse,
    dense_attention_with_mass,
)
from ..layout import TokenLayout
from ..parallel import HeadPartition
from ..plan import BlockPlan, num_blocks
from ..utils import warn_once
from .adaspa_select import (
    coverage_counts,
    head_coverage,
    hierarchical_groups,
    hierarchical_levels,
    keep_count,
    kept_mass,
    plan_from_ranking,
    rank_blocks,
    text_key_blocks,
)
from .base import AttentionCall, SparseMethod

DEFAULT_SPARSITY = 0.8
# Runs of at least this many steps keep the last warm-up step's LSE for the first search by
# default: their steps are close enough that it picks the plans the step's own LSE would.
WARMUP_LSE_MIN_STEPS = 20
# Short sequences (small previews, tiny test models) get smaller blocks so that a row still has
# enough blocks to choose among; blocks stay powers of two of at least _MIN_BLOCK tokens.
_MIN_BLOCKS = 8
_MIN_BLOCK = 16


@dataclass
class _LayerState:
    """One layer's search result for one branch, valid while ``key`` matches; before the first
    search only the LSE of the last warm-up step (``plan`` None)."""

    key: tuple[Any, ...]
    lse: torch.Tensor  # fp32 [B, H, S], from the last dense pass
    plan: BlockPlan | None = None
    density: torch.Tensor | None = None  # 0-d, the plan's mean density


@dataclass
class AdaSpa(SparseMethod):
    """AdaSpa: per-head block plans found online from the exact attention mass.

    Fields (the paper's defaults):
        dense_steps: leading steps run dense; default 0.2 of the steps (10 of 50).
        sparsity: share of key blocks each query-block row drops, default 0.8. Every row of a
            head keeps the same number of blocks, its top ones by mass. Heads then move between
            three levels (head-adaptive hierarchical sparsity): with ``n`` heads whose recall
            (mass kept at ``sparsity``) exceeds ``recall_threshold``, the ``n`` highest-recall
            heads get ``(1 + s) / 2`` and the ``n`` lowest ``(3 s - 1) / 2``, so the mean stays
            ``s`` (up to whole blocks; ``n`` is capped at half the heads; for ``s < 1/3`` the
            denser level is clamped to dense).
        coverage: instead of ``sparsity`` (not both): per head and query block, keep the fewest
            key blocks whose mass reaches this share (e.g. 0.9); density then adapts per head.
        search_steps: steps at which plans are searched again, reusing the LSE of the previous
            search. A float in [0, 1] is a share of the pipeline's steps (rounded), an int an
            absolute step index; default (0.2, 0.6) = steps 10 and 30 of 50. Shares resolve to
            nothing when the step count is unknown. Whatever this says, the first sparse step
            of a layer (no plan yet, or a new layout) runs a full search.
        block_size: tokens per block, a power of two >= 16; default 64. A sequence of fewer
            than 8 blocks gets halved blocks (down to 16), with a one-time warning.
        min_density, max_density: optional bounds on each head's share of key blocks per row
            (in coverage mode they bound each row).
        recall_threshold: the recall above which a head counts toward ``n``; default 0.8.
        warmup_lse: keep the LSE of the last dense warm-up step (its attention then runs
            `dense_attention_with_lse` instead of the model's own), so that the first search
            measures the block mass against it inside its dense pass instead of in a second
            pass over K, which the search step then saves (``attention_layer-*.json``,
            docs/BENCHMARKS.md). The output is the same exact attention either way; the plan
            follows last step's LSE, which is as good as the step's own when steps are close
            and not when they are far apart. On ``wan-shapes``
            (``benchmarks/probes/stale_lse_plans.py``) at 20 and 50 steps every layer's heads
            keep their levels and its plan the same mass with either LSE; at 8 steps some
            heads change level, the plans keep less of the mass, and the videos drift further
            from dense (``bench-wan-shapes-warmup-lse``). Default None: True for runs of at least
            `WARMUP_LSE_MIN_STEPS` steps, else False (the paper's two passes); True or False
            forces it.
        search_rows: estimate the block mass of a separate mass pass (cached searches, and a
            first search without a warm-up LSE) from this many evenly spaced rows of every
            query block (a power of two) instead of all of them (None, the default: the paper's
            exact search). Fewer rows make the pass cheaper; on the trained ``wan-shapes``
            model the chosen plans keep a little less of the attention mass and the videos
            drift further from dense (``benchmarks/search_rows.py``,
            ``bench-wan-shapes-search-rows-16``; figures in docs/BENCHMARKS.md).
        dense_final_steps, dense_layers: the shared schedule (see `SparseMethod`).

    Text key blocks (joint-attention models) are always kept, as the attention sink; they count
    toward a row's budget, and win over it when there are more of them. Under Ulysses context
    parallelism the hierarchical budget ranks the heads of the whole group, as one process
    would.
    """

    name = "adaspa"

    dense_steps: int | float = 0.2
    sparsity: float | None = None
    coverage: float | None = None
    search_steps: int | float | Sequence[int | float] = (0.2, 0.6)
    block_size: int = 64
    min_density: float | None = None
    max_density: float | None = None
    recall_threshold: float = 0.8
    search_rows: int | None = None
    warmup_lse: bool | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sparsity is not None and self.coverage is not None:
            raise ValueError("AdaSpa takes either sparsity or coverage, not both")
        if self.coverage is None:
            self.sparsity = DEFAULT_SPARSITY if self.sparsity is None else self.sparsity
            if not 0.0 <= self.sparsity < 1.0:
                raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")
        elif not 0.0 < self.coverage <= 1.0:
            raise ValueError(f"coverage must be in (0, 1], got {self.coverage}")
        steps = (
            (self.search_steps,)
            if isinstance(self.search_steps, (int, float))
            else tuple(self.search_steps)
        )
        for step in steps:
            if isinstance(step, float) and not 0.0 <= step <= 1.0:
                raise ValueError(
                    f"a float search step is a share of the steps, in [0, 1]; got {step}"
                )
            if step < 0:
                raise ValueError(f"search_steps entries must be >= 0, got {step}")
        self.search_steps = steps
        if (
            isinstance(self.block_size, bool)
            or not isinstance(self.block_size, int)
            or self.block_size < _MIN_BLOCK
            or self.block_size & (self.block_size - 1)
        ):
            raise ValueError(
                f"block_size must be a power of two >= {_MIN_BLOCK}, got {self.block_size}"
            )
        for name in ("min_density", "max_density"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if (self.min_density or 0.0) > (1.0 if self.max_density is None else self.max_density):
            raise ValueError(
                f"min_density {self.min_density} is above max_density {self.max_density}"
            )
        if not 0.0 < self.recall_threshold < 1.0:
            raise ValueError(f"recall_threshold must be in (0, 1), got {self.recall_threshold}")
        rows = self.search_rows
        if rows is not None and (
            isinstance(rows, bool) or not isinstance(rows, int) or rows < 1 or rows & (rows - 1)
        ):
            raise ValueError(f"search_rows must be a power of two or None, got {rows!r}")

    # --- schedule ----------------------------------------------------------------------------

    def search_step_indices(self, num_steps: int | None) -> frozenset[int]:
        """The step indices ``search_steps`` names for a run of ``num_steps`` steps."""
        steps = set()
        for step in self.search_steps:
            if isinstance(step, float):
                if num_steps is not None:
                    steps.add(round(step * num_steps))
            else:
                steps.add(step)
        return frozenset(steps)

    def block_for(self, seq_len: int) -> int:
        """Block size used for a sequence: ``block_size``, halved while the sequence would have
        fewer than 8 blocks, but not below 16 tokens."""
        block = self.block_size
        while block > _MIN_BLOCK and num_blocks(seq_len, block) < _MIN_BLOCKS:
            block //= 2
        if block != self.block_size:
            warn_once(
                f"adaspa-block:{self.block_size}:{seq_len}",
                f"AdaSpa: a {seq_len}-token sequence has fewer than {_MIN_BLOCKS} blocks of "
                f"{self.block_size} tokens; using blocks of {block} for it.",
            )
        return block

    def uses_warmup_lse(self, num_steps: int | None) -> bool:
        """Whether a run of ``num_steps`` steps keeps the warm-up LSE (see ``warmup_lse``)."""
        if self.warmup_lse is not None:
            return self.warmup_lse
        return num_steps is not None and num_steps >= WARMUP_LSE_MIN_STEPS

    # --- search ------------------------------------------------------------------------------

    def search(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        layout: TokenLayout,
        *,
        scale: float | None = None,
        lse: torch.Tensor | None = None,
        heads: HeadPartition | None = None,
    ) -> tuple[BlockPlan, torch.Tensor]:
        """Choose a plan for ``q``, ``k``, ``v`` (``[B, H, S, D]``, ``S = layout.seq_len``).

        Without ``lse`` it runs the dense pass for the exact LSE first (``v`` is needed only
        then); with ``lse`` (fp32 ``[B, H, S]``, e.g. cached from an earlier step) only the
        mass pass runs. ``heads`` is this process's slice of the heads under Ulysses context
        parallelism: the hierarchical budget then ranks the heads of the whole group (one
        all-gather of their recall), so the plans equal those of one process. Returns the plan
        (batch and heads of ``q``) and the coverage it achieves per head, fp32 ``[B, H]``: the
        share of the attention mass its kept blocks hold, measured with the LSE used.
        """
        _check_inputs(q, k, v, layout)
        if lse is None:
            _, lse = dense_attention_with_lse(q, k, v, scale=scale)
        elif lse.shape != q.shape[:3]:
            raise ValueError(
                f"lse must be [B, H, S] = {tuple(q.shape[:3])}, got {tuple(lse.shape)}"
            )
        return self._select(self._mass(q, k, lse, layout, scale), layout, heads)

    def _mass(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        lse: torch.Tensor,
        layout: TokenLayout,
        scale: float | None,
    ) -> torch.Tensor:
        """The block mass pass (exact, or from ``search_rows`` rows of every block)."""
        block = self.block_for(layout.seq_len)
        rows = None if self.search_rows is None else min(self.search_rows, block)
        return block_attention_mass(q, k, lse, block, block, scale=scale, rows=rows)

    def _select(
        self, mass: torch.Tensor, layout: TokenLayout, heads: HeadPartition | None
    ) -> tuple[BlockPlan, torch.Tensor]:
        """The plan and the coverage per head chosen from block mass ``[B, H, nq, nk]``."""
        seq_len = layout.seq_len
        block = self.block_for(seq_len)
        forced = text_key_blocks(layout, block)
        nk = mass.shape[-1]
        if self.coverage is not None:
            min_count, max_count = (self._keep(d, nk, len(forced)) for d in (0.0, 1.0))
            ranked = rank_blocks(mass, forced, limit=max_count)
            counts = coverage_counts(ranked, self.coverage, min_count, max_count)
            max_kv = int(counts.max())  # one device sync, at search steps only
        else:
            levels = hierarchical_levels(self.sparsity)
            keeps = [self._keep(1.0 - level, nk, len(forced)) for level in levels]
            max_kv = max(keeps)  # known on the host: no device sync
            ranked = rank_blocks(mass, forced, limit=max_kv)
            base = torch.full(mass.shape[:3], keeps[1], device=mass.device)
            recall = head_coverage(kept_mass(ranked, base), seq_len, block)
            groups = _group_heads(recall, self.recall_threshold, heads)
            # From scalars: a host-to-device copy of ``keeps`` would wait for the mass pass.
            head_keep = sum((groups == level) * keep for level, keep in enumerate(keeps))
            counts = head_keep.unsqueeze(-1).expand(mass.shape[:3])
        plan = plan_from_ranking(ranked, counts, max_kv, block, seq_len)
        return plan, head_coverage(kept_mass(ranked, counts), seq_len, block)

    def _keep(self, density: float, num_k_blocks: int, forced: int) -> int:
        """Blocks per row for a density, after the ``min_density``/``max_density`` bounds."""
        if self.min_density is not None:
            density = max(density, self.min_density)
        if self.max_density is not None:
            density = min(density, self.max_density)
        return keep_count(density, num_k_blocks, forced)

    # --- attention ---------------------------------------------------------------------------

    def attend_dense(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, call: AttentionCall
    ) -> torch.Tensor | None:
        """On the last dense step before this layer's first sparse one (`uses_warmup_lse`),
        compute the exact output with `dense_attention_with_lse` and keep the LSE for the first
        search; any other dense call runs as ``dense_precision`` says (the base's). Reported
        as kind ``"dense-lse"``."""
        following = replace(call, step=call.step + 1, info={})
        if (
            not self.uses_warmup_lse(call.num_steps)
            or (call.num_steps is not None and following.step >= call.num_steps)
            or self.runs_dense(following)
        ):
            return super().attend_dense(q, k, v, call)
        out, lse = dense_attention_with_lse(q, k, v, scale=call.scale)
        call.cache[("adaspa", call.layer)] = _LayerState(_state_key(q, call), lse)
        call.info.update(kind="dense-lse", density=1.0)
        return out

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, call: AttentionCall
    ) -> torch.Tensor:
        """One self-attention call, ``[B, H, S, D]``: search, LSE-cached search or reuse.

        ``call.info`` gets ``kind`` (``"search"``, ``"cached-search"``, ``"reuse"``),
        ``density`` (1.0 for a full search, whose output is dense; otherwise the plan's, a 0-d
        tensor), ``dense_passes`` and ``mass_passes`` (passes done by this call; a search with
        the warm-up LSE does one dense pass with the mass fused in, 1 and 0), and at searches
        ``head_density``, ``head_coverage`` (fp32 ``[H]``, mean over the batch) and ``block``.
        """
        slot = ("adaspa", call.layer)
        key = _state_key(q, call)
        state: _LayerState | None = call.cache.get(slot)
        if state is not None and state.key != key:
            state = None
        if state is None:
            out, lse = dense_attention_with_lse(q, k, v, scale=call.scale)
            mass = self._mass(q, k, lse, call.layout, call.scale)
            kind, dense_passes, mass_passes = "search", 1, 1
        elif state.plan is None:
            block = self.block_for(call.layout.seq_len)
            out, lse, mass = dense_attention_with_mass(
                q, k, v, state.lse, block, block, scale=call.scale
            )
            kind, dense_passes, mass_passes = "search", 1, 0
        elif call.step in self.search_step_indices(call.num_steps):
            lse = state.lse
            mass = self._mass(q, k, lse, call.layout, call.scale)
            kind, dense_passes, mass_passes = "cached-search", 0, 1
        else:
            out = block_sparse_attention(
                q, k, v, state.plan, scale=call.scale, precision=self.precision
            )
            call.info.update(kind="reuse", density=state.density, dense_passes=0, mass_passes=0)
            return out
        plan, coverage = self._select(mass, call.layout, call.heads)
        if kind == "cached-search":
            out = block_sparse_attention(q, k, v, plan, scale=call.scale, precision=self.precision)
        head_density = plan.density_per_head()
        state = _LayerState(key, lse, plan, head_density.mean())
        call.cache[slot] = state
        call.info.update(
            kind=kind,
            density=1.0 if kind == "search" else state.density,
            dense_passes=dense_passes,
            mass_passes=mass_passes,
            head_density=head_density.mean(0),
            head_coverage=coverage.mean(0),
            block=plan.block_q,
        )
        return out

    # --- report ------------------------------------------------------------------------------

    def report_lines(self, records: list[dict[str, Any]]) -> list[str]:
        """When each layer's plans were refreshed, and its latest plan's density and coverage
        per head."""
        refreshes: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
        for record in records:
            if record.get("kind") in ("search", "cached-search"):
                refreshes[(record["transformer"], record["branch"], record["layer"])].append(record)
        if not refreshes:
            return []
        lines = [
            "adaspa plans: refreshed at (step:kind); latest plan's density / coverage per head",
            f"{'transformer':<14} {'branch':<11} {'layer':>5} {'block':>5}  refreshed",
        ]
        for (name, branch, layer), rows in sorted(refreshes.items()):
            rows.sort(key=lambda r: r["step"])
            latest = rows[-1]
            steps = " ".join(f"{r['step']}:{r['kind']}" for r in rows)
            lines.append(f"{name:<14} {branch:<11} {layer:>5} {latest['block']:>5}  {steps}")
            lines.append(f"{'':<38}density  {_format_heads(latest['head_density'])}")
            lines.append(f"{'':<38}coverage {_format_heads(latest['head_coverage'])}")
        return lines


def _state_key(q: torch.Tensor, call: AttentionCall) -> tuple[Any, ...]:
    """What a cached plan or LSE is valid for: the layout and q's shape and device."""
    return (call.layout, tuple(q.shape), q.device)


def _group_heads(
    recall: torch.Tensor, threshold: float, heads: HeadPartition | None
) -> torch.Tensor:
    """`hierarchical_groups` over all heads of the Ulysses group, sliced to this process's."""
    if heads is None or not heads.is_split:
        return hierarchical_groups(recall, threshold)
    parts = [torch.empty_like(recall) for _ in range(heads.total // heads.local)]
    torch.distributed.all_gather(parts, recall.contiguous(), group=heads.group)
    groups = hierarchical_groups(torch.cat(parts, dim=-1), threshold)
    return groups[:, heads.offset : heads.offset + heads.local]


def _format_heads(values: list[float]) -> str:
    return " ".join(f"{value:.2f}" for value in values)


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: TokenLayout) -> None:
    if q.dim() != 4 or q.shape != k.shape or k.shape[:3] != v.shape[:3]:
        raise ValueError(
            "AdaSpa.search expects q, k, v [B, H, S, D] of one shape, got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[2] != layout.seq_len:
        raise ValueError(
            f"q has {q.shape[2]} tokens but the layout {layout.describe()} has {layout.seq_len}"
        )
