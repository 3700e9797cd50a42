"""`SparseVideoGen2`: semantic-aware permutation, k-means clusters of queries and keys per head.

After Yang et al., "Sparse VideoGen2: Accelerate Video Generation with Sparse Attention via
Semantic-Aware Permutation" (arXiv 2505.18875; code: svg-project/Sparse-VideoGen, the
``SAP`` pattern, read at commit 5ce7b01: ``WanAttn_SAPAttn_Processor`` in
``svg/models/wan/attention.py``, ``batch_kmeans_Euclid`` and ``identify_dynamic_map`` in
``svg/kmeans_utils.py``). At every sparse step and layer, for each (batch element, head):

1. k-means (Euclidean) over the query vectors and, separately, over the key vectors, started
   from the centroids this layer and guidance branch ended the previous sparse step with
   (``kmeans_iter_step`` iterations), or, at the first one, from randomly drawn tokens
   (``kmeans_iter_init`` iterations);
2. tokens sorted by cluster, queries by their clustering and keys and values by theirs, so
   that every cluster is a contiguous range (the plan's ``perm`` and ``key_perm``: the kernel
   gathers q, k and v through them and scatters the output back, with no torch pass);
3. each query cluster's estimated attention over the key clusters: the softmax of its
   centroid's scaled dot products with the key centroids, each key cluster weighted by its
   size (official: ``identify_dynamic_map``);
4. the kept blocks of the sorted orders, by ``selection``:

   - ``"blocks"`` (default): the estimate spread over blocks (a query block's rows are its
     clusters' rows, a key cluster's share is split evenly over its tokens), then per query
     block the fewest key blocks, most first, covering ``top_p`` of it (at least
     ``min_kc_ratio`` of the key blocks);
   - ``"clusters"``: the official rule, per query cluster the fewest key clusters covering
     ``top_p`` (at least ``min_kc_ratio`` of them), then every block that holds a kept pair
     (a block straddling clusters keeps the union of their pairs);

5. our block-sparse kernel computes those blocks and writes the output in the original order.

Why ``"blocks"`` by default: at Wan 720p's defaults a key cluster holds ~76 tokens, fewer
than a 128-token block, so a key block straddles ~2-3 clusters and ``"clusters"`` keeps it
when any of them is kept: its block density is well above the kept pairs' (on structured
inputs, ``benchmarks/probes/svg2_selection-cpu.json``: 0.50 of token pairs for a cluster-level
0.28 at top_p 0.5). ``"blocks"`` applies top-p to the blocks themselves: its density stays
near the cluster-level one (0.29 there), and at matched density its blocks hold more of the
exact attention (0.960 against 0.942 of it at a density of 0.49-0.50). Key clusters are
placed so that those kept by the same query clusters are neighbours (`key_cluster_rank`,
``order_key_clusters``), which lowers the density of either rule a little at the same
recall. Blocks of 64 hold more (0.923 against 0.877 at a density of 0.28-0.29) but run
narrower kernel tiles: to be measured on the GPU (``benchmarks/attention_layer.py``).

Defaults, from the official scripts (``scripts/wan/wan_t2v_720p_sap.sh``, Wan2.1-T2V-14B at
720p x 81 frames, 75,600 tokens, 50 steps): 300 query / 1000 key clusters
(``qc_kmeans``/``kc_kmeans``; 200 / 1000 in ``wan_i2v_480p_sap.sh``, 400 / 1000 for
HunyuanVideo), ``top_p_k=0.9``, ``min_kc_ratio=0.10``,
``kmeans_iter_init=50``, ``kmeans_iter_step=2``, ``first_times_fp=0.2`` (dense steps; 0.35 in
``wan_i2v_720p_sap.sh``, 0.1 for HunyuanVideo), ``first_layers_fp=0.03`` (dense layers).
``zero_step_kmeans_init`` (``hyvideo_t2v_inference.py``, off unless passed) also clusters
during the dense warm-up, so that the first sparse step starts from warm centroids.

The official counts are fixed whatever the resolution (~252 queries and ~76 keys a cluster at
720p). Counts scaled to keep those tokens per cluster were measured on ``wan-shapes`` (1,280
tokens: 5 / 17 clusters) and lost more quality than the fixed counts at every density
(``docs/BENCHMARKS.md``, svg2 on ``wan-shapes``), so the defaults stay the official ones.

Differences from the official code, on purpose: centroids are kept per guidance branch (the
official processor keeps one set per layer, which the conditional and unconditional passes
of a CFG step overwrite in turn) and per layout (a new resolution starts over); k-means runs
a fixed number of iterations (the official one also stops at a centroid shift below 1e-4,
which syncs with the device at every iteration); the first centroids are drawn from a seeded
CPU generator; batch > 1 is supported (the official one asserts batch 1); and the selection is
made on whole blocks of ``block_size`` tokens, since our kernel computes blocks (the
official kernel takes ranges of any size).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from ..kernels import block_sparse_attention
from ..layout import TokenLayout
from ..plan import BlockPlan
from ..utils import warn_once
from .base import AttentionCall, SparseMethod, _resolve_count
from .svg import _check_qkv
from .svg2_clusters import (
    ClusterOrder,
    KMeansResult,
    block_probabilities,
    cluster_block_mask,
    cluster_density,
    cluster_map,
    cluster_probabilities,
    initial_centroids,
    key_cluster_rank,
    kmeans,
    mask_plan,
)

_MIN_BLOCK = 16
_SELECTIONS = ("blocks", "clusters")
# Short sequences get smaller blocks, so that they have at least this many to choose from.
_MIN_BLOCKS_PER_SEQUENCE = 16


@dataclass(frozen=True, eq=False)
class _LayerState:
    """One layer's centroids for one guidance branch, and what they are valid for."""

    key: tuple[Any, ...]
    q_centroids: torch.Tensor
    k_centroids: torch.Tensor


@dataclass(frozen=True, eq=False)
class SVG2Arrangement:
    """What `SparseVideoGen2.arrange` decided for one call: both clusterings, their token
    orders, the kept cluster pairs and the plan over the sorted orders (``[B, H]``, without
    ``perm``: for q, k, v already sorted; `sorting_plan` takes the original ones)."""

    q: KMeansResult
    k: KMeansResult
    q_order: ClusterOrder
    k_order: ClusterOrder
    kept: torch.Tensor
    plan: BlockPlan

    def cluster_density(self) -> torch.Tensor:
        """fp32 ``[B * H]``: share of token pairs in kept cluster pairs, before blocks."""
        return cluster_density(self.kept, self.q.sizes, self.k.sizes)

    def sorting_plan(self) -> BlockPlan:
        """`plan` for q, k, v in their original order: ``perm`` sorts the queries by their
        clusters and ``key_perm`` the keys and values by theirs."""
        heads = self.plan.kv_counts.shape[:2]
        return dataclasses.replace(
            self.plan,
            perm=self.q_order.perm.view(*heads, -1),
            key_perm=self.k_order.perm.view(*heads, -1),
        )


@dataclass
class SparseVideoGen2(SparseMethod):
    """Sparse VideoGen 2 (SVG2): per head, k-means clusters of queries and of keys, the cluster
    pairs with the most estimated attention (top-p), computed as blocks of the sorted tokens.

    Fields (defaults from the official Wan2.1-T2V 720p script, see the module docstring):
        dense_steps: leading steps run dense, default 0.2 of the steps (``first_times_fp``).
        dense_layers: leading layers run dense, default 0.03 (``first_layers_fp``).
        q_clusters: query clusters per head, default 300 (at most the sequence length).
        k_clusters: key clusters per head, default 1000 (at most the sequence length).
        top_p: share of each query block's (``selection="clusters"``: query cluster's)
            estimated attention its kept key blocks (clusters) cover, in (0, 1], default 0.9;
            1 keeps every pair (dense, in a permuted order).
        min_kc_ratio: share of key blocks (clusters) every query block (cluster) keeps at
            least, default 0.1.
        kmeans_iter_init: k-means iterations of a layer's first clustering, default 50.
        kmeans_iter_step: k-means iterations from the previous step's centroids, default 2.
        zero_step_kmeans_init: also cluster during the dense warm-up steps (their output
            stays exact) of layers that run sparse later, so that the first sparse step starts
            warm; default False.
        order_key_clusters: place key clusters kept by the same query clusters next to each
            other (`key_cluster_rank`) rather than by id; default True.
        selection: ``"blocks"`` (default) or ``"clusters"``, how kept pairs become blocks
            (module docstring).
        block_size: query and key block of the plans, a power of two >= 16, default 128.
            Sequences of fewer than 16 such blocks use smaller ones (at least 16 tokens).
        seed: seeds the first centroids (one draw per layer).
    """

    name = "svg2"

    dense_steps: int | float = 0.2
    dense_layers: int | float = 0.03
    q_clusters: int = 300
    k_clusters: int = 1000
    top_p: float = 0.9
    min_kc_ratio: float = 0.1
    kmeans_iter_init: int = 50
    kmeans_iter_step: int = 2
    zero_step_kmeans_init: bool = False
    order_key_clusters: bool = True
    selection: str = "blocks"
    block_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        # Bumped by `reset`: centroids cached before it no longer match. Not a config field.
        self._epoch = 0
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0.0 <= self.min_kc_ratio <= 1.0:
            raise ValueError(f"min_kc_ratio must be in [0, 1], got {self.min_kc_ratio}")
        for name in ("q_clusters", "k_clusters", "kmeans_iter_init", "kmeans_iter_step"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.selection not in _SELECTIONS:
            raise ValueError(f"selection must be one of {_SELECTIONS}, got {self.selection!r}")
        if self.block_size < _MIN_BLOCK or self.block_size & (self.block_size - 1):
            raise ValueError(
                f"block_size must be a power of two >= {_MIN_BLOCK}, got {self.block_size}"
            )

    def reset(self) -> None:
        self._epoch += 1

    def cluster_counts(self, seq_len: int) -> tuple[int, int]:
        """Query and key clusters per head at ``seq_len`` tokens: ``q_clusters`` and
        ``k_clusters``, at most ``seq_len`` each."""
        return min(self.q_clusters, seq_len), min(self.k_clusters, seq_len)

    def block_for(self, seq_len: int) -> int:
        """The block size used at ``seq_len`` tokens: ``block_size``, or the largest power of
        two that still cuts the sequence into 16 blocks (at least 16 tokens)."""
        fits = 1 << max(0, (seq_len // _MIN_BLOCKS_PER_SEQUENCE).bit_length() - 1)
        block = max(_MIN_BLOCK, min(self.block_size, fits))
        if block != self.block_size:
            warn_once(
                f"svg2-block:{self.block_size}:{seq_len}",
                f"SparseVideoGen2: {seq_len} tokens make fewer than {_MIN_BLOCKS_PER_SEQUENCE} "
                f"blocks of {self.block_size}; using blocks of {block}.",
            )
        return block

    # --- clustering ------------------------------------------------------------------------

    def cluster(
        self, q: torch.Tensor, k: torch.Tensor, call: AttentionCall
    ) -> tuple[KMeansResult, KMeansResult, str]:
        """k-means of ``q`` and of ``k`` (``[B, H, S, D]``) per (batch element, head), warm
        started from ``call.cache``'s centroids for this layer, which it then updates.
        Returns both clusterings and the kind of call: ``"svg2-init"`` (first clustering,
        ``kmeans_iter_init`` iterations) or ``"svg2"`` (``kmeans_iter_step``)."""
        batch, heads, seq_len, dim = q.shape
        q_clusters, k_clusters = self.cluster_counts(seq_len)
        slot = ("svg2", call.layer)
        key = (call.layout, tuple(q.shape), q.device, q_clusters, k_clusters, self._epoch)
        state: _LayerState | None = call.cache.get(slot)
        qx, kx = q.reshape(-1, seq_len, dim), k.reshape(-1, seq_len, dim)
        if state is None or state.key != key:
            generator = torch.Generator().manual_seed(self.seed + 10_007 * call.layer)
            part = call.heads
            split = None if part is None else (part.offset, part.local, part.total)
            q_start = initial_centroids(qx, q_clusters, generator, split)
            k_start = initial_centroids(kx, k_clusters, generator, split)
            iterations, kind = self.kmeans_iter_init, "svg2-init"
        else:
            q_start, k_start = state.q_centroids, state.k_centroids
            iterations, kind = self.kmeans_iter_step, "svg2"
        q_result, k_result = kmeans(qx, q_start, iterations), kmeans(kx, k_start, iterations)
        call.cache[slot] = _LayerState(key, q_result.centroids, k_result.centroids)
        return q_result, k_result, kind

    def arrange(
        self, q_result: KMeansResult, k_result: KMeansResult, batch: int, scale: float
    ) -> SVG2Arrangement:
        """The token orders, kept cluster pairs and plan for two clusterings of ``batch``
        elements' heads (``scale``: the attention's score scale)."""
        probabilities = cluster_probabilities(
            q_result.centroids, k_result.centroids, k_result.sizes, scale
        )
        min_keep = int(self.min_kc_ratio * k_result.sizes.shape[1])
        kept = cluster_map(probabilities, self.top_p, min_keep)
        rank = key_cluster_rank(kept, q_result.sizes) if self.order_key_clusters else None
        q_order, k_order = ClusterOrder.of(q_result), ClusterOrder.of(k_result, rank)
        seq_len = q_order.labels.shape[1]
        block = self.block_for(seq_len)
        if self.selection == "clusters":
            mask = cluster_block_mask(kept, q_order.labels, k_order.labels, block, block)
        else:
            estimate = block_probabilities(
                probabilities, q_order.labels, k_order.labels, k_result.sizes, block, block
            )
            mask = cluster_map(estimate, self.top_p, int(self.min_kc_ratio * estimate.shape[-1]))
        plan = mask_plan(mask, batch, block, block, seq_len)
        return SVG2Arrangement(q_result, k_result, q_order, k_order, kept, plan)

    # --- attention -------------------------------------------------------------------------

    def attend_dense(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, call: AttentionCall
    ) -> torch.Tensor | None:
        # Warm-up steps of layers that run sparse later; dense layers and final steps never use
        # centroids (the official code clusters at every dense call).
        warm_up = call.step < _resolve_count(self.dense_steps, call.num_steps)
        sparse_layer = call.layer >= _resolve_count(self.dense_layers, call.num_layers)
        if self.zero_step_kmeans_init and warm_up and sparse_layer:
            self.cluster(q, k, call)
            call.info["kind"] = "dense-kmeans"
        return None

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, call: AttentionCall
    ) -> torch.Tensor:
        _check_qkv(q, k, v, call.layout)
        batch, dim = q.shape[0], q.shape[3]
        scale = call.scale if call.scale is not None else dim**-0.5
        q_result, k_result, kind = self.cluster(q, k, call)
        arranged = self.arrange(q_result, k_result, batch, scale)
        out = block_sparse_attention(q, k, v, arranged.sorting_plan(), scale=scale)
        call.info.update(
            kind=kind,
            density=arranged.plan.density_per_head().mean(),
            cluster_density=arranged.cluster_density().mean(),
            block=arranged.plan.block_q,
        )
        return out

    def check_layout(self, layout: TokenLayout) -> None:
        """Any layout: clusters need no frames."""
