"""Sparse VideoGen 2's semantic-aware permutation as batched torch functions.

Every function works on all (batch, head) pairs at once, flattened to one leading dimension
``G = B * H``; nothing loops over heads. The steps, in the order `SparseVideoGen2` runs them:

1. `kmeans`: Lloyd iterations (`dit_sparse.kernels.lloyd_step`: Triton on CUDA, never writing
   the distance matrix, ``[40, 75,600, 1,000]`` at 720p; the torch reference elsewhere) over
   the query (or key) vectors of each head, warm-started from given centroids;
2. `cluster_probabilities`: each query centroid's estimated attention over the key
   clusters (softmax of scaled centroid dot products, each key cluster weighted by its size);
3. `cluster_map`: per row of such an estimate, the fewest entries, largest first, covering
   ``top_p`` of it (at least ``min_keep``): the kept (query cluster, key cluster) pairs;
4. `ClusterOrder`: tokens sorted by cluster (stable, so a cluster keeps its tokens' original
   order), key clusters placed by `key_cluster_rank`;
5. the block mask of the sorted orders, either `cluster_block_mask` (every block holding a
   kept pair: blocks that straddle clusters keep the union of their pairs) or `cluster_map`
   over `block_probabilities` (the estimate summed per block, top-p per query block), and
   `mask_plan`, its `BlockPlan` (built without a device sync).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels import lloyd_step
from ..kernels.kmeans import narrow_labels
from ..plan import BlockPlan, num_blocks


@dataclass(frozen=True, eq=False)
class KMeansResult:
    """One clustering of ``[G, S, D]`` vectors into ``C`` clusters.

    Attributes:
        labels: int64 ``[G, S]``: each vector's cluster.
        centroids: fp32 ``[G, C, D]``: the mean of each cluster's vectors (an empty cluster
            keeps its previous centroid).
        sizes: int64 ``[G, C]``: vectors per cluster.
    """

    labels: torch.Tensor
    centroids: torch.Tensor
    sizes: torch.Tensor


def initial_centroids(
    x: torch.Tensor,
    clusters: int,
    generator: torch.Generator,
    heads: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """fp32 ``[G, C, D]``: ``C`` of each group's vectors ``x`` (``[G, S, D]``), drawn at random.

    Drawn on the CPU from ``generator``, so one seed picks the same vectors on every device.
    ``heads`` = ``(offset, local, total)`` says that the groups are ``B`` batch elements of
    ``local`` heads out of ``total`` starting at ``offset`` (Ulysses): the draw is made for all
    ``total`` heads and sliced, so every head draws the same tokens however heads are split.
    """
    groups, seq_len, dim = x.shape
    offset, local, total = (0, groups, groups) if heads is None else heads
    index = torch.randint(seq_len, (groups // local, total, clusters), generator=generator)
    index = index[:, offset : offset + local].reshape(groups, clusters).to(x.device)
    return x.gather(1, index[..., None].expand(-1, -1, dim)).float()


def kmeans(x: torch.Tensor, centroids: torch.Tensor, iterations: int) -> KMeansResult:
    """``iterations`` (>= 1) Lloyd iterations (`lloyd_step`) of ``x`` ``[G, S, D]`` from fp32
    ``centroids`` ``[G, C, D]``. The labels and sizes are the last assignment's and the
    centroids their means, so that sizes and centroids describe the same clusters. A fixed
    number of iterations: no convergence test, which would sync with the device at every
    iteration.
    """
    if iterations < 1:
        raise ValueError(f"kmeans needs at least one iteration, got {iterations}")
    x = x.contiguous()  # once, not per iteration (q and k often come as transposed views)
    for _ in range(iterations):
        labels, centroids, sizes = lloyd_step(x, centroids)
    return KMeansResult(labels, centroids, sizes)


@dataclass(frozen=True, eq=False)
class ClusterOrder:
    """Tokens of each group sorted by cluster, clusters in a chosen order.

    Attributes:
        perm: int64 ``[G, S]``: position ``p`` of the sorted order holds token ``perm[g, p]``.
        labels: int64 ``[G, S]``: the cluster at each sorted position (each cluster's
            positions are one contiguous range).
        sizes: int64 ``[G, C]``: tokens per cluster.
    """

    perm: torch.Tensor
    labels: torch.Tensor
    sizes: torch.Tensor

    @staticmethod
    def of(result: KMeansResult, rank: torch.Tensor | None = None) -> ClusterOrder:
        """Clusters by id, or by ``rank`` (int64 ``[G, C]``, a permutation of ``0..C-1``
        per group: the place of each cluster in the sorted order)."""
        keys = result.labels if rank is None else rank.gather(1, result.labels)
        # Stable: inside a cluster tokens keep their original (frame-major) order.
        perm = torch.sort(narrow_labels(keys, result.sizes.shape[1]), dim=-1, stable=True).indices
        return ClusterOrder(perm, result.labels.gather(1, perm), result.sizes)


def key_cluster_rank(kept: torch.Tensor, q_sizes: torch.Tensor) -> torch.Tensor:
    """int64 ``[G, Ck]``: an order of the key clusters in which those kept by the same query
    clusters tend to be neighbours, so that fewer key blocks straddle a kept and a dropped
    cluster.

    Key clusters are grouped by their *owner*, the largest query cluster (by tokens) that
    keeps them, and ordered within a group by how many query clusters keep them, most first.
    Any order is exact (pairs are kept whatever their place); this one only lowers the block
    density (see `cluster_block_mask`).
    """
    q_clusters = kept.shape[1]
    owner = (kept * q_sizes[:, :, None].float()).argmax(1)
    # Owners apart by more than any count: one group after another, larger counts first.
    value = kept.sum(1) - owner * (q_clusters + 1)
    order = torch.sort(value, dim=-1, descending=True, stable=True).indices
    places = torch.arange(order.shape[-1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, places)


def cluster_probabilities(
    q_centroids: torch.Tensor, k_centroids: torch.Tensor, k_sizes: torch.Tensor, scale: float
) -> torch.Tensor:
    """fp32 ``[G, Cq, Ck]``: each query centroid's estimated attention over the key clusters.

    The softmax of the centroids' scaled dot products, each key cluster weighted by its size
    (as if all of its keys were its centroid); an empty key cluster gets 0.
    """
    scores = torch.bmm(q_centroids.float(), k_centroids.float().transpose(1, 2)) * scale
    weights = k_sizes.float()[:, None, :]
    # Empty clusters are left out of the max: their centroid may be stale.
    top = torch.where(weights > 0, scores, float("-inf")).amax(-1, keepdim=True)
    weighted = weights * torch.exp(scores - top)
    return weighted / weighted.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)


def cluster_map(probabilities: torch.Tensor, top_p: float, min_keep: int = 0) -> torch.Tensor:
    """bool ``[G, Cq, Ck]``: per query cluster, the fewest key clusters, largest estimated
    attention first, whose attention adds up to ``top_p`` of the row, and at least the
    ``min_keep`` largest. ``top_p >= 1`` keeps every pair.
    """
    if top_p >= 1.0:
        return torch.ones_like(probabilities, dtype=torch.bool)
    ranked, order = torch.sort(probabilities, dim=-1, descending=True, stable=True)
    # A key cluster is kept while the ones ranked above it cover less than top_p.
    before = ranked.cumsum(-1) - ranked
    keep = before < top_p
    if min_keep > 0:
        keep[..., :min_keep] = True
    return torch.zeros_like(keep).scatter_(-1, order, keep)


def block_counts(labels: torch.Tensor, clusters: int, block: int) -> torch.Tensor:
    """fp32 ``[G, n_blocks, C]``: how many tokens of each cluster each block of the sorted
    order holds (``labels`` ``[G, S]``: the cluster at each sorted position)."""
    groups, seq_len = labels.shape
    blocks = num_blocks(seq_len, block)
    block_of = torch.arange(seq_len, device=labels.device) // block
    counts = torch.zeros(groups, blocks * clusters, device=labels.device)
    counts.scatter_add_(
        1, block_of * clusters + labels, torch.ones_like(labels, dtype=counts.dtype)
    )
    return counts.view(groups, blocks, clusters)


def cluster_block_mask(
    kept: torch.Tensor, q_labels: torch.Tensor, k_labels: torch.Tensor, block_q: int, block_k: int
) -> torch.Tensor:
    """bool ``[G, nq, nk]``: the blocks of the sorted orders that hold a kept pair.

    ``kept`` (``[G, Cq, Ck]``, `cluster_map`) in the query and key orders whose labels at
    each sorted position are ``q_labels`` and ``k_labels`` (``[G, S]``): query block ``i`` x
    key block ``j`` is computed when a query cluster with a token in block ``i`` keeps a key
    cluster with a token in block ``j``. Two products of 0/1 matrices (counts of such pairs).
    """
    q_member = block_counts(q_labels, kept.shape[1], block_q) > 0
    k_member = block_counts(k_labels, kept.shape[2], block_k) > 0
    # bf16 counts of non-negative terms are > 0 exactly when some term is (no cancellation).
    dtype = torch.bfloat16 if kept.is_cuda else torch.float32
    rows = torch.bmm(q_member.to(dtype), kept.to(dtype))
    return torch.bmm(rows, k_member.to(dtype).transpose(1, 2)) > 0


def block_probabilities(
    probabilities: torch.Tensor,
    q_labels: torch.Tensor,
    k_labels: torch.Tensor,
    k_sizes: torch.Tensor,
    block_q: int,
    block_k: int,
) -> torch.Tensor:
    """fp32 ``[G, nq, nk]``: the cluster estimate (`cluster_probabilities`, ``[G, Cq, Ck]``)
    per block of the sorted orders: each query block's rows, and each key cluster's share
    spread evenly over its tokens. Each row sums to 1 (the mean over the block's queries)."""
    q_counts = block_counts(q_labels, probabilities.shape[1], block_q)
    k_share = (
        block_counts(k_labels, probabilities.shape[2], block_k)
        / k_sizes.clamp_min(1)[:, None, :].float()
    )
    rows = torch.bmm(q_counts, probabilities.float())
    mass = torch.bmm(rows, k_share.transpose(1, 2))
    return mass / mass.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)


def block_lists(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A block mask ``bool[..., nk]`` as `BlockPlan` lists without a sync: int32 ``[..., nk]``
    kept blocks first, ascending (the rest is padding), and int32 counts ``[...]``."""
    nk = mask.shape[-1]
    position = torch.where(mask, mask.cumsum(-1, dtype=torch.int32) - 1, nk)
    columns = torch.arange(nk, dtype=torch.int32, device=mask.device).expand_as(mask)
    lists = torch.zeros(*mask.shape[:-1], nk + 1, dtype=torch.int32, device=mask.device)
    lists.scatter_(-1, position.long(), columns)
    return lists[..., :nk], mask.sum(-1, dtype=torch.int32)


def mask_plan(
    mask: torch.Tensor, batch: int, block_q: int, block_k: int, seq_len: int
) -> BlockPlan:
    """The `BlockPlan` (``[B, H]``, no ``perm``) of a block mask ``bool[B * H, nq, nk]``."""
    groups, nq, nk = mask.shape
    lists, counts = block_lists(mask.view(batch, groups // batch, nq, nk))
    return BlockPlan(lists, counts, block_q, block_k, seq_len)


def cluster_density(
    kept: torch.Tensor, q_sizes: torch.Tensor, k_sizes: torch.Tensor
) -> torch.Tensor:
    """fp32 ``[G]``: share of token pairs in kept cluster pairs (before rounding to blocks)."""
    pairs = q_sizes.float()[:, :, None] * k_sizes.float()[:, None, :]
    return (pairs * kept).sum((1, 2)) / pairs.sum((1, 2))
