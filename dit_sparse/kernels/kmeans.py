"""One Lloyd iteration of batched k-means (Euclidean) in Triton, for Sparse VideoGen 2.

Per iteration, for ``G`` groups (batch x heads) of ``S`` vectors and ``C`` centroids each:

1. `_nearest_centroid`: a program takes a tile of vectors and walks the group's centroids in
   tiles, scoring ``||c||^2 - 2 x.c`` with ``tl.dot`` (fp32 accumulation) and keeping a running
   minimum and its index: the ``[G, S, C]`` distance matrix is never written, where the torch
   reference writes and rereads it chunk by chunk (as flash-kmeans and the official SVG2
   assignment kernel do, ``svg/kmeans_utils.py``);
2. the labels sorted per group (a stable torch sort, on the narrowest integer keys that hold
   them: `narrow_labels`) and each cluster's range in that order (``searchsorted``), whose
   lengths are the cluster sizes;
3. `_cluster_means`: one program per (group, cluster) sums its range's vectors in fp32 and
   writes the mean (an empty cluster keeps its centroid). No atomics: the official update adds
   each run of equal labels into the sums with float atomics, whose order, and so whose
   rounding, changes from run to run; here every sum is taken in one fixed order. A program
   loops over its cluster alone, so one very large cluster makes one long program (its rows
   are read once either way).
"""

from __future__ import annotations

import torch

from .launch import (
    DTYPES,
    HEAD_DIMS,
    INTERPRETED,
    KernelConfig,
    tl,
    triton,
    triton_runs_on,
    warn_fallback,
)
from .reference import lloyd_step_reference

# Assignment tiles by head dim: ``block_m`` vectors a program, ``block_n`` centroids a step.
# D = 128: the fastest of the tiles benchmarks/probes/svg2_kmeans.py tries, for q and k at
# Wan 480p and 720p (timings: docs/BENCHMARKS.md); the other head dims are untuned.
ASSIGN_CONFIGS = {
    16: KernelConfig(128, 64, 4, 3),
    32: KernelConfig(128, 64, 4, 3),
    64: KernelConfig(128, 64, 4, 3),
    128: KernelConfig(256, 64, 8, 3),
    256: KernelConfig(64, 64, 8, 2),
}
# Small tiles under the interpreter, so that tests cross tile edges at small sizes.
_INTERPRETER_ASSIGN = KernelConfig(32, 16, 4, 1)
# Rows a means program adds per step.
_MEANS_ROWS = 64


@triton.jit
def _nearest_centroid(
    X,
    C,
    C_NORMS,
    LABELS,
    seq_len,
    clusters,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    tile = tl.program_id(0)
    group = tl.program_id(1).to(tl.int64)
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    x = tl.load(
        X + group * seq_len * HEAD_DIM + rows[:, None] * HEAD_DIM + dims[None, :],
        mask=rows[:, None] < seq_len,
        other=0.0,
    )
    best = tl.full([BLOCK_M], float("inf"), tl.float32)
    best_index = tl.zeros([BLOCK_M], tl.int32)
    for start in range(0, clusters, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        valid = cols < clusters
        c = tl.load(
            C + group * clusters * HEAD_DIM + cols[:, None] * HEAD_DIM + dims[None, :],
            mask=valid[:, None],
            other=0.0,
        )
        # Columns past the last centroid score +inf: never the minimum.
        norms = tl.load(C_NORMS + group * clusters + cols, mask=valid, other=float("inf"))
        score = norms[None, :] - 2.0 * tl.dot(x, tl.trans(c), input_precision=DOT_PRECISION)
        # Ties go to the lower index, within a tile (tie_break_left) and across tiles (strict <).
        tile_best, tile_index = tl.min(score, 1, return_indices=True)
        better = tile_best < best
        best = tl.where(better, tile_best, best)
        best_index = tl.where(better, start + tile_index, best_index)
    tl.store(LABELS + group * seq_len + rows, best_index, mask=rows < seq_len)


@triton.jit
def _cluster_means(
    X,
    ORDER,
    STARTS,
    OLD,
    NEW,
    seq_len,
    clusters,
    HEAD_DIM: tl.constexpr,
    ROWS: tl.constexpr,
):
    cluster = tl.program_id(0)
    group = tl.program_id(1).to(tl.int64)
    first = tl.load(STARTS + group * (clusters + 1) + cluster)
    end = tl.load(STARTS + group * (clusters + 1) + cluster + 1)
    dims = tl.arange(0, HEAD_DIM)
    acc = tl.zeros([ROWS, HEAD_DIM], tl.float32)
    for position in range(first, end, ROWS):
        slots = position + tl.arange(0, ROWS)
        take = slots < end
        token = tl.load(ORDER + group * seq_len + slots, mask=take, other=0)
        rows = tl.load(
            X + group * seq_len * HEAD_DIM + token[:, None] * HEAD_DIM + dims[None, :],
            mask=take[:, None],
            other=0.0,
        )
        acc += rows.to(tl.float32)
    count = end - first
    at = (group * clusters + cluster) * HEAD_DIM + dims
    old = tl.load(OLD + at)
    mean = tl.sum(acc, 0) / tl.maximum(count, 1).to(tl.float32)
    tl.store(NEW + at, tl.where(count > 0, mean, old))


def _check_inputs(x: torch.Tensor, centroids: torch.Tensor) -> None:
    if x.dim() != 3 or centroids.dim() != 3:
        raise ValueError(
            f"x must be [G, S, D] and centroids [G, C, D]; got {tuple(x.shape)}, "
            f"{tuple(centroids.shape)}"
        )
    groups, seq_len, dim = x.shape
    if centroids.shape[0] != groups or centroids.shape[2] != dim or centroids.shape[1] < 1:
        raise ValueError(
            f"centroids must be [G, C >= 1, D] = [{groups}, C, {dim}]; got {tuple(centroids.shape)}"
        )
    if x.dtype not in DTYPES or centroids.dtype != torch.float32:
        raise TypeError(
            f"x must be float16, bfloat16 or float32 and centroids float32; got {x.dtype}, "
            f"{centroids.dtype}"
        )
    if dim not in HEAD_DIMS or seq_len < 1 or x.device != centroids.device:
        raise ValueError(
            f"need D in {HEAD_DIMS}, S >= 1 and one device; got D = {dim}, S = {seq_len}, "
            f"{x.device} and {centroids.device}"
        )


def lloyd_step(
    x: torch.Tensor, centroids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Lloyd iteration: each vector's nearest (Euclidean) centroid, then each cluster's
    mean.

    Triton on CUDA (module docstring); elsewhere the torch reference
    (`lloyd_step_reference`), warned once.

    Args:
        x: ``[G, S, D]`` float16, bfloat16 or float32 (``D`` a head dim the kernels take).
        centroids: fp32 ``[G, C, D]``.

    Returns:
        ``labels`` int64 ``[G, S]`` (ties to the lower index), ``centroids`` fp32 ``[G, C, D]``
        (the means of those clusters; an empty one keeps its centroid) and ``sizes`` int64
        ``[G, C]``. Distances come from ``x`` and the centroids rounded to ``x``'s dtype, with
        fp32 dot products; sums are fp32.
    """
    _check_inputs(x, centroids)
    if not triton_runs_on(x.device):
        warn_fallback("lloyd_step", x.device)
        return lloyd_step_reference(x, centroids)
    config = _INTERPRETER_ASSIGN if INTERPRETED else ASSIGN_CONFIGS[x.shape[-1]]
    x, centroids = x.contiguous(), centroids.contiguous()
    labels = launch_nearest_centroid(x, centroids, config)
    groups, clusters = centroids.shape[:2]
    keys = narrow_labels(labels, clusters)
    sorted_labels, order = torch.sort(keys, dim=-1, stable=True)
    bounds = torch.arange(clusters + 1, dtype=keys.dtype, device=x.device)
    starts = torch.searchsorted(sorted_labels, bounds.expand(groups, -1).contiguous())
    means = torch.empty_like(centroids)
    _cluster_means[(clusters, groups)](
        x, order, starts, centroids, means, x.shape[1], clusters,
        HEAD_DIM=x.shape[-1], ROWS=_MEANS_ROWS, num_warps=4,
    )  # fmt: skip
    return labels.long(), means, starts.diff(dim=-1)


def narrow_labels(labels: torch.Tensor, clusters: int) -> torch.Tensor:
    """Cluster ids ``labels`` (``0..clusters - 1``) as int16 where ``0..clusters`` fits, else
    int32: the keys to sort them by. A radix sort makes a pass per digit of its keys, so
    narrower keys sort in fewer passes; the order is the same (a stable sort of equal values).
    """
    dtype = torch.int16 if clusters <= torch.iinfo(torch.int16).max else torch.int32
    return labels.to(dtype)


def launch_nearest_centroid(
    x: torch.Tensor, centroids: torch.Tensor, config: KernelConfig
) -> torch.Tensor:
    """int32 ``[G, S]``: each vector's nearest centroid, by `_nearest_centroid` with
    ``config`` on contiguous ``x`` and fp32 ``centroids``.

    No validation: `lloyd_step` checks inputs first; benchmarks call this directly to try
    other configs.
    """
    groups, seq_len, dim = x.shape
    rounded = centroids.to(x.dtype)
    # The norms of the centroids the dot products see, so that both terms score one point.
    norms = rounded.float().square().sum(-1)
    labels = torch.empty(groups, seq_len, dtype=torch.int32, device=x.device)
    grid = (triton.cdiv(seq_len, config.block_m), groups)
    _nearest_centroid[grid](
        x, rounded, norms, labels, seq_len, centroids.shape[1],
        HEAD_DIM=dim,
        BLOCK_M=config.block_m,
        BLOCK_N=config.block_n,
        DOT_PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )  # fmt: skip
    return labels
