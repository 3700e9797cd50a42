"""Torch reference for block-sparse attention: the CPU path and the oracle for the kernels."""

from __future__ import annotations

import math

import torch

from ..plan import BlockPlan

# Scores of one chunk of query rows against every key are materialised at a time; this bounds
# that chunk to about 256 MiB of fp32 whatever the sequence length.
_CHUNK_ELEMENTS = 1 << 26


def permute_tokens(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """``x[b, h, perm[b, h, p]]`` for ``x`` ``[B, H, S, D]`` and ``perm`` ``[B|1, H|1, S]``."""
    # Expanded to x's heads too: gather takes the index's shape, so one perm row for every
    # head would return that many heads only.
    index = perm.long().expand(*x.shape[:2], -1)[..., None].expand(-1, -1, -1, x.shape[-1])
    return x.gather(2, index)


def unpermute_tokens(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Inverse of `permute_tokens`: puts row ``p`` back at original position ``perm[b, h, p]``."""
    index = perm.long().expand(*x.shape[:2], -1)
    if x.dim() == 4:
        index = index[..., None].expand(-1, -1, -1, x.shape[-1])
    return torch.empty_like(x).scatter_(2, index, x)


def token_mask_rows(plan: BlockPlan, rows: slice, batch: int) -> torch.Tensor:
    """``bool[B, H, len(rows), S]``: which keys the query rows ``rows`` attend to."""
    block_mask = plan.to_block_mask().expand(batch, -1, -1, -1)
    q_block = torch.arange(rows.start, rows.stop, device=block_mask.device) // plan.block_q
    k_block = torch.arange(plan.seq_len, device=block_mask.device) // plan.block_k
    return block_mask[:, :, q_block][..., k_block]


def block_sparse_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plan: BlockPlan,
    scale: float | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Block-sparse attention in plain torch, ``[B, H, S, D]`` in and out.

    Computes in fp32 (fp64 inputs stay fp64). A query row with no key block gets output 0 and
    LSE ``-inf``. LSE, when asked, is the natural-log log-sum-exp of the scaled scores,
    fp32 ``[B, H, S]`` (fp64 for fp64 inputs).
    """
    batch, heads, seq_len, head_dim = q.shape
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    qc, kc, vc = (t.to(compute) for t in (q, k, v))
    plan = plan.expanded()
    perm, key_perm = plan.head_perms(), plan.head_key_perms()
    if perm is not None:
        qc = permute_tokens(qc, perm)
        kc, vc = permute_tokens(kc, key_perm), permute_tokens(vc, key_perm)
    attend = _attend_masked_flash_cpu if qc.device.type == "cpu" else _attend_gathered_blocks
    out, lse = attend(qc, kc, vc, plan, scale)
    if perm is not None:
        out, lse = unpermute_tokens(out, perm), unpermute_tokens(lse, perm)
    out = out.to(q.dtype)
    if return_lse:
        return out, (lse if compute == torch.float64 else lse.float())
    return out


def _attend_masked_flash_cpu(q, k, v, plan: BlockPlan, scale: float):
    """PyTorch's fused CPU attention with an additive mask of the plan, a chunk of query rows
    at a time: at a dense attention's speed and memory, with the LSE it returns."""
    batch, heads, seq_len, _ = q.shape
    block_mask = plan.to_block_mask()
    out, lse = torch.empty_like(q), torch.empty(q.shape[:3], dtype=q.dtype)
    rows_per_chunk = max(
        plan.block_q, _CHUNK_ELEMENTS // max(1, block_mask.shape[0] * heads * seq_len)
    )
    rows_per_chunk -= rows_per_chunk % plan.block_q
    for start in range(0, seq_len, rows_per_chunk):
        rows = slice(start, min(seq_len, start + rows_per_chunk))
        blocks = block_mask[:, :, start // plan.block_q : -(-rows.stop // plan.block_q)]
        keep = blocks.repeat_interleave(plan.block_q, 2)[:, :, : rows.stop - start]
        keep = keep.repeat_interleave(plan.block_k, 3)[..., :seq_len]
        bias = torch.zeros(keep.shape, dtype=q.dtype).masked_fill_(~keep, float("-inf"))
        out[:, :, rows], lse[:, :, rows] = (
            torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                q[:, :, rows], k, v, attn_mask=bias.expand(batch, heads, -1, -1), scale=scale
            )[:2]
        )
        # The fused op gives a row with no key output 0 but LSE 0; it must be -inf.
        lse[:, :, rows].masked_fill_(~keep.any(-1).expand(batch, heads, -1), float("-inf"))
    return out, lse


def _attend_gathered_blocks(q, k, v, plan: BlockPlan, scale: float):
    """Any device: each query block meets only its listed key blocks, gathered next to it, so
    the cost follows the plan's density and no S x S score matrix is built."""
    batch, heads, seq_len, head_dim = q.shape
    nq, nk, bq, bk = plan.num_q_blocks, plan.num_k_blocks, plan.block_q, plan.block_k
    q_blocks = _pad_rows(q, nq * bq).view(batch, heads, nq, bq, head_dim)
    k_blocks = _pad_rows(k, nk * bk).view(batch, heads, nk, bk, head_dim)
    v_blocks = _pad_rows(v, nk * bk).view(batch, heads, nk, bk, head_dim)
    key_in_range = (torch.arange(nk * bk, device=q.device) < seq_len).view(nk, bk)
    # Padding entries may hold any value; clamped, they gather a real block that is masked.
    kv_indices = plan.kv_indices.long().clamp(0, nk - 1).expand(batch, heads, -1, -1)
    in_list = torch.arange(plan.max_kv, device=q.device) < plan.kv_counts[..., None]
    in_list = in_list.expand(batch, heads, -1, -1)
    out = torch.empty_like(q_blocks)
    lse = torch.empty(batch, heads, nq, bq, dtype=q.dtype, device=q.device)
    per_block = batch * heads * bq * max(1, plan.max_kv) * bk
    chunk = max(1, _CHUNK_ELEMENTS // per_block)
    for start in range(0, nq, chunk):
        rows = slice(start, min(nq, start + chunk))
        index = kv_indices[:, :, rows]  # [B, H, c, max_kv]
        keys, values = (_gather_blocks(t, index) for t in (k_blocks, v_blocks))
        valid = (in_list[:, :, rows, :, None] & key_in_range[index]).flatten(-2)
        scores = q_blocks[:, :, rows] @ keys.transpose(-1, -2) * scale
        scores.masked_fill_(~valid[:, :, :, None, :], float("-inf"))
        block_lse = torch.logsumexp(scores, dim=-1)
        weights = torch.exp(scores - block_lse.nan_to_num(neginf=0.0)[..., None])
        out[:, :, rows] = weights @ values
        lse[:, :, rows] = block_lse
    out = out.view(batch, heads, nq * bq, head_dim)[:, :, :seq_len]
    lse = lse.view(batch, heads, nq * bq)[:, :, :seq_len]
    return out, lse


def _pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """``x`` ``[B, H, S, D]`` with zero rows appended up to ``rows``."""
    return torch.nn.functional.pad(x, (0, 0, 0, rows - x.shape[2]))


def _gather_blocks(blocks: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``blocks[b, h, index[b, h, i, j]]`` for ``blocks`` ``[B, H, n, bk, D]``, as
    ``[B, H, c, max_kv * bk, D]`` (``index`` ``[B, H, c, max_kv]``)."""
    b, h, c, m = index.shape
    flat = blocks.gather(2, index.reshape(b, h, c * m, 1, 1).expand(-1, -1, -1, *blocks.shape[3:]))
    return flat.view(b, h, c, m * blocks.shape[3], blocks.shape[4])


def block_attention_mass_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    lse: torch.Tensor,
    block_q: int,
    block_k: int,
    scale: float | None = None,
) -> torch.Tensor:
    """Torch reference of `block_attention_mass`: fp32 ``[B, H, nq, nk]`` (fp64 for fp64 q).

    ``mass[b, h, i, j]`` sums ``exp(q k^T * scale - lse)`` over the rows of query block ``i``
    and the keys of key block ``j``, divided by the rows in block ``i``. Rows with LSE ``-inf``
    add nothing. ``q`` and ``lse`` may have fewer rows than ``k`` (sampled ones). Scores are
    materialised one chunk of query blocks at a time.
    """
    batch, heads, q_len, head_dim = q.shape
    k_len = k.shape[2]
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    qc, kc = q.to(compute), k.to(compute)
    lse = lse.to(compute).masked_fill(lse == float("-inf"), float("inf"))
    nq, nk = -(-q_len // block_q), -(-k_len // block_k)
    key_block = torch.arange(k_len, device=q.device) // block_k
    mass = torch.zeros(batch, heads, nq, nk, dtype=compute, device=q.device)
    rows_per_chunk = max(block_q, _CHUNK_ELEMENTS // max(1, batch * heads * k_len))
    rows_per_chunk -= rows_per_chunk % block_q
    for start in range(0, q_len, rows_per_chunk):
        rows = slice(start, min(q_len, start + rows_per_chunk))
        weights = torch.exp(qc[:, :, rows] @ kc.transpose(-1, -2) * scale - lse[:, :, rows, None])
        per_key_block = torch.zeros(*weights.shape[:3], nk, dtype=compute, device=q.device)
        per_key_block.index_add_(-1, key_block, weights)
        query_block = torch.arange(rows.start, rows.stop, device=q.device) // block_q
        mass.index_add_(2, query_block, per_key_block)
    rows_in_block = torch.full((nq,), float(block_q), dtype=compute, device=q.device)
    rows_in_block[-1] = q_len - (nq - 1) * block_q
    return mass / rows_in_block[:, None]


def rows_token_masks(
    token_blocks: torch.Tensor, block_masks: torch.Tensor, rows: torch.Tensor
) -> torch.Tensor:
    """bool ``[M, R, S]``: the keys (original order) mask ``i`` keeps for original rows ``rows``.

    ``token_blocks`` ``[M, S]`` is each token's block in mask ``i``'s token order,
    ``block_masks`` ``[M, nq, nk]`` the masks in those orders.
    """
    row_blocks = token_blocks[:, rows]  # [M, R]
    kinds = torch.arange(block_masks.shape[0], device=rows.device)[:, None]
    block_rows = block_masks[kinds, row_blocks]  # [M, R, nk]
    index = token_blocks[:, None, :].expand(-1, rows.numel(), -1)
    return block_rows.gather(2, index)


def masked_row_errors_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rows: torch.Tensor,
    token_blocks: torch.Tensor,
    block_masks: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Torch reference of `masked_row_errors`: fp32 ``[B, H, M]`` (fp64 for fp64 q), the mean
    squared error of the ``rows``' outputs under each mask against their exact outputs.

    One ``[R, S]`` score matrix per head and ``M`` masked copies of it.
    """
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    qc, kc, vc = (t.to(compute) for t in (q.index_select(2, rows), k, v))
    probs = torch.softmax((qc * scale) @ kc.transpose(-1, -2), dim=-1)  # [B, H, R, S]
    exact = probs @ vc
    masks = rows_token_masks(token_blocks, block_masks, rows)
    kept = probs.unsqueeze(2) * masks.to(compute)  # [B, H, M, R, S]
    masked = (kept.flatten(2, 3) @ vc).unflatten(2, (masks.shape[0], rows.numel()))
    masked = masked / kept.sum(-1).clamp_min(torch.finfo(compute).tiny)[..., None]
    return (masked - exact.unsqueeze(2)).square().mean((-1, -2))


def normalize_mass(mass: torch.Tensor) -> torch.Tensor:
    """Rescale each query-block row of block mass to sum to 1.

    With the exact LSE the rows already do; with an LSE cached from an earlier step they sum
    to about 1, and rescaling keeps coverage targets such as 0.95 reachable.
    """
    return mass / mass.sum(-1, keepdim=True).clamp_min(torch.finfo(mass.dtype).tiny)


def rank_key_blocks_reference(
    mass: torch.Tensor, forced: range, limit: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch `rank_key_blocks`: a stable descending sort with the forced blocks set to inf."""
    score = mass.clone()
    score[..., forced.start : forced.stop] = float("inf")
    # A full sort, then the first `limit`: on the GPU no slower than topk at Wan's sizes
    # (benchmarks/probes/gpu_checks-h100.json).
    order = torch.sort(score, dim=-1, descending=True, stable=True).indices[..., :limit]
    order = order.contiguous()  # frees the full [B, H, nq, nk] index tensor
    return order, normalize_mass(mass).gather(-1, order).cumsum(-1)


def kept_blocks_ascending_reference(
    order: torch.Tensor, counts: torch.Tensor, max_kv: int
) -> torch.Tensor:
    """Torch `kept_blocks_ascending`: the first ``counts`` entries of each row sorted, the
    other slots holding the largest index (so they sort last), then zeroed."""
    take = torch.arange(max_kv, device=order.device) < counts.unsqueeze(-1)
    last = torch.iinfo(order.dtype).max
    index = torch.where(take, order[..., :max_kv], last).sort(-1).values
    return torch.where(take, index, 0).to(torch.int32).contiguous()


# --- k-means ---------------------------------------------------------------------------------

# Distance-matrix entries per chunk of `lloyd_step_reference`'s assignment (fp32: 1 GiB).
_KMEANS_CHUNK_ELEMENTS = 1 << 28


def lloyd_step_reference(
    x: torch.Tensor, centroids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Torch `lloyd_step`: each vector's nearest centroid from chunks of the distance matrix
    (`_KMEANS_CHUNK_ELEMENTS` entries each, in ``x``'s dtype, bf16 for fp16), sums by
    ``index_add_`` in fp32 (float64 for float64 ``x``)."""
    groups, seq_len, dim = x.shape
    clusters = centroids.shape[1]
    # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; ||x||^2 does not change the argmin. fp16's
    # range could overflow on ||c||^2: fp16 inputs are compared in bf16.
    compute = torch.bfloat16 if x.dtype == torch.float16 else x.dtype
    wide = torch.float64 if x.dtype == torch.float64 else torch.float32
    norms = centroids.to(wide).square().sum(-1)[:, None, :].to(compute)
    transposed = centroids.to(compute).transpose(1, 2)
    first = clusters * torch.arange(groups, device=x.device)[:, None]  # each group's clusters
    chunk = max(1, _KMEANS_CHUNK_ELEMENTS // max(1, groups * clusters))
    labels = torch.empty(groups, seq_len, dtype=torch.long, device=x.device)
    sums = torch.zeros(groups * clusters, dim, dtype=wide, device=x.device)
    # Counted by index_add_: torch.bincount on CUDA syncs to size its output.
    sizes = torch.zeros(groups * clusters, dtype=torch.long, device=x.device)
    for start in range(0, seq_len, chunk):
        part = x[:, start : start + chunk]
        nearest = torch.baddbmm(norms, part.to(compute), transposed, alpha=-2.0).argmin(-1)
        labels[:, start : start + chunk] = nearest
        index = (nearest + first).reshape(-1)
        sums.index_add_(0, index, part.reshape(-1, dim).to(wide))
        sizes.index_add_(0, index, torch.ones_like(index))
    sizes = sizes.view(groups, clusters)
    means = sums.view(groups, clusters, dim) / sizes.clamp_min(1)[..., None]
    return labels, torch.where(sizes[..., None] > 0, means, centroids.to(wide)), sizes


# --- 8-bit attention ------------------------------------------------------------------------

# Largest magnitudes of the 8-bit codes: INT8 for Q and K, FP8 e4m3 for P and V.
INT8_MAX = 127.0
E4M3_MAX = 448.0
# Rows that share one quantisation scale of Q (and of K) in plan order, per (batch, head).
QUANT_ROWS = 64


def quantize_rows_int8(x: torch.Tensor, rows: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric INT8 codes of ``x`` ``[B, H, S, D]`` (as float) and their fp32 scales, one
    per ``rows`` consecutive rows of each head (``[B, H, ceil(S / rows)]``), or per tensor
    (``rows=None``, shape ``[1, 1, 1]``); ``x ~ codes * scale`` row by row."""
    batch, heads, seq_len, dim = x.shape
    x = x.float()
    if rows is None:
        amax = x.abs().amax().reshape(1, 1, 1)
    else:
        padded = _pad_rows(x, -(-seq_len // rows) * rows)
        amax = padded.abs().reshape(batch, heads, -1, rows * dim).amax(-1)
    scale = (amax / INT8_MAX).clamp_min(torch.finfo(torch.float32).tiny)
    codes = torch.round(x / _row_scales(scale, rows, seq_len)[..., None])
    codes = codes.clamp(-INT8_MAX, INT8_MAX)
    return codes, scale


def to_e4m3(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to FP8 e4m3 (saturating at +-448), back in ``x``'s dtype."""
    return x.clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).to(x.dtype)


def block_sparse_attention_8bit_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plan: BlockPlan,
    scale: float | None = None,
    return_lse: bool = False,
    *,
    q_rows: int | None = QUANT_ROWS,
    k_rows: int | None = QUANT_ROWS,
    smooth_k: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """`block_sparse_attention(..., precision="8bit")` in plain torch: the same quantisation
    as the Triton kernel, ``[B, H, S, D]`` in and out.

    K loses its per-(batch, head) mean over tokens (each row's scores shift by one constant,
    which softmax ignores; the LSE gets it back from unquantised Q). Q and smoothed K become
    INT8 with one scale per ``q_rows`` / ``k_rows`` rows of each head in plan order (None: one
    per tensor); their product is exact. The probabilities of each row, relative to its max,
    are scaled by 448 and rounded to FP8 e4m3; V is e4m3 with one scale per channel of each
    head; P V is summed in fp32 and divided by the row sum of unrounded probabilities.
    O comes back in q's dtype, LSE (natural log) in fp32; a row without key blocks gets 0 and
    ``-inf``, as `block_sparse_attention_reference`.
    """
    batch, heads, seq_len, head_dim = q.shape
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    qf, kf, vf = (t.float() for t in (q, k, v))
    k_mean = kf.mean(2, keepdim=True) if smooth_k else torch.zeros_like(kf[:, :, :1])
    lse_shift = (qf @ k_mean.transpose(-1, -2))[..., 0] * scale  # [B, H, S]
    plan = plan.expanded()
    perm, key_perm = plan.head_perms(), plan.head_key_perms()
    kf = kf - k_mean
    if perm is not None:
        qf = permute_tokens(qf, perm)
        kf, vf = permute_tokens(kf, key_perm), permute_tokens(vf, key_perm)
    q8, q_scale = quantize_rows_int8(qf, q_rows)
    k8, k_scale = quantize_rows_int8(kf, k_rows)
    q_row_scale = _row_scales(q_scale, q_rows, seq_len).expand(batch, heads, -1)
    k_row_scale = _row_scales(k_scale, k_rows, seq_len).expand(batch, heads, -1)
    v_scale = (vf.abs().amax(2, keepdim=True) / E4M3_MAX).clamp_min(torch.finfo(torch.float32).tiny)
    v8 = to_e4m3(vf / v_scale)
    out = torch.zeros_like(qf)
    lse = torch.full(qf.shape[:3], float("-inf"), device=q.device)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(1, batch * heads * seq_len))
    for start in range(0, seq_len, rows_per_chunk):
        rows = slice(start, min(seq_len, start + rows_per_chunk))
        scores = (q8[:, :, rows] @ k8.transpose(-1, -2)) * (
            q_row_scale[:, :, rows, None] * k_row_scale[:, :, None, :] * scale
        )
        keep = token_mask_rows(plan, rows, batch)
        scores = scores.masked_fill(~keep, float("-inf"))
        row_max = scores.amax(-1, keepdim=True).nan_to_num(neginf=0.0)
        probs = torch.exp(scores - row_max)
        row_sum = probs.sum(-1)
        p8 = to_e4m3(probs * E4M3_MAX)
        has_keys = row_sum > 0
        out[:, :, rows] = (p8 @ v8) * v_scale / (E4M3_MAX * row_sum.clamp_min(1e-30)[..., None])
        lse[:, :, rows] = torch.where(has_keys, row_max[..., 0] + row_sum.log(), float("-inf"))
    if perm is not None:
        out, lse = unpermute_tokens(out, perm), unpermute_tokens(lse, perm)
    lse = lse + lse_shift
    out = out.to(q.dtype)
    return (out, lse) if return_lse else out


def _row_scales(scales: torch.Tensor, rows: int | None, seq_len: int) -> torch.Tensor:
    """Per-group scales ``[B|1, H|1, groups]`` spread to one per row ``[.., S]``."""
    if rows is None:
        return scales.expand(-1, -1, seq_len)
    return scales.repeat_interleave(rows, -1)[..., :seq_len]
