"""Block-sparse attention forward in Triton: each query tile attends only to its plan's key blocks.

One program computes ``BLOCK_M`` query rows of one (batch, head) with the online softmax of
FlashAttention-2: it walks the key blocks that ``plan.kv_indices`` lists for its query block, in
tiles of ``BLOCK_N`` keys, and keeps the running max in log2 units (``log2(e)`` is folded into
the scale, so the exponentials are ``exp2``). Only the last key block of a row can be the ragged
tail of the sequence (blocks are listed in ascending order), so only that block pays for masking.
With ``plan.perm``, the K and V of permuted heads are first gathered into permuted copies (one
pass that skips the heads ``plan.permuted`` leaves in place), through ``plan.key_perm`` when
the plan has one and ``plan.perm`` otherwise, so every key tile still loads from consecutive
rows; Q rows are gathered through ``plan.perm`` as they are loaded and O and LSE scattered
back through it as they are stored. The copies are full ``[B, H, S, D]`` buffers (the heads
left in place are not written), allocated per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..plan import BlockPlan, num_blocks
from .block_mass import MassPartials, add_block_mass, block_mass_rows, chunk_sums
from .launch import (
    INTERPRETED,
    LOG2E,
    KernelConfig,
    check_block,
    check_qkv,
    resolve_scale,
    tl,
    triton,
    triton_runs_on,
    warn_fallback,
)
from .reference import block_sparse_attention_8bit_reference, block_sparse_attention_reference

# Per head dim, for fp16/bf16 on CUDA. At D = 128 the fastest that `benchmarks/kernel.py --tune`
# found (timings: docs/BENCHMARKS.md); TMA loads and Triton's warp specialization gained
# nothing there. D = 256 needs smaller tiles to fit shared memory.
_GPU_CONFIGS = {
    16: KernelConfig(128, 64, 4, 3),
    32: KernelConfig(128, 64, 4, 3),
    64: KernelConfig(128, 64, 4, 3),
    128: KernelConfig(128, 128, 8, 3),
    256: KernelConfig(64, 64, 4, 2),
}
# Rows per program of the pass that gathers permuted heads' K and V.
_PERMUTE_ROWS = 64
# The interpreter runs one program at a time in numpy: bigger tiles mean fewer steps.
_INTERPRETER_CONFIG = KernelConfig(128, 128, 4, 1)


def default_config(head_dim: int, block_q: int, block_k: int, device: torch.device) -> KernelConfig:
    """The launch parameters used for ``head_dim`` and a plan's ``block_q`` x ``block_k``."""
    config = _INTERPRETER_CONFIG if device.type == "cpu" else _GPU_CONFIGS[head_dim]
    block_m, block_n = min(config.block_m, block_q), min(config.block_n, block_k)
    num_warps = config.num_warps if block_m * block_n >= 128 * 64 else 4
    return KernelConfig(block_m, block_n, num_warps, config.num_stages)


@triton.jit
def _attend_tiles(
    acc,
    l_i,
    m_i,
    q,
    k_ptr,
    v_ptr,
    kv_idx_ptr,
    first,
    last,
    seq_len,
    qk_scale,
    stride_ks,
    stride_vs,
    mass_lse2,
    mass_group_ptrs,
    stride_sc,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    MASK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    MASS_ROWS: tl.constexpr,
    MASS_CHUNK: tl.constexpr,
):
    """Online-softmax update over key tiles ``first..last`` of this row's block list.

    Tile ``t`` is sub-tile ``t % (BLOCK_K // BLOCK_N)`` of the key block listed at
    ``t // (BLOCK_K // BLOCK_N)``. ``MASK`` masks keys past the sequence end. With ``MASS_ROWS``
    (> 0) each tile's probabilities, rescaled from the running max to the cached LSE
    ``mass_lse2``, also go into the block-mass partial sums (`add_block_mass`).
    """
    sub_tiles: tl.constexpr = BLOCK_K // BLOCK_N
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    # A tile's rows are consecutive: its pointers are one scalar base plus these loop-invariant
    # 32-bit offsets, a single instruction per address. Row arithmetic per element in the loop
    # (gathering rows through a permutation) measurably slowed the whole kernel.
    k_offsets = offs_n[:, None] * stride_ks + offs_d[None, :]
    v_offsets = offs_n[:, None] * stride_vs + offs_d[None, :]
    # The block index is loaded one tile ahead, so that no load in the loop depends on another
    # load of the same iteration: Triton's pipeliner then keeps K and V tiles two iterations
    # ahead (three buffers), as for dense attention; indices loaded in the iteration that used
    # them held K and V to one tile ahead, waited on at every step.
    block_1 = tl.load(kv_idx_ptr + first // sub_tiles, mask=first < last, other=0)
    for t in tl.range(first, last):
        start = block_1 * BLOCK_K + (t % sub_tiles) * BLOCK_N
        block_1 = tl.load(kv_idx_ptr + (t + 1) // sub_tiles, mask=t + 1 < last, other=0)
        valid = start + offs_n < seq_len
        # Unmasked tiles load without a mask (None), which keeps their loads unpredicated.
        tile_mask = None
        fill = None
        if MASK:
            tile_mask = valid[:, None]
            fill = 0
        # Loads are written out here, not in a helper: the interpreter re-patches Triton's
        # language module on every nested jit call, which would dominate CPU test time.
        k = tl.load(
            (k_ptr + start.to(tl.int64) * stride_ks) + k_offsets, mask=tile_mask, other=fill
        )
        v = tl.load(
            (v_ptr + start.to(tl.int64) * stride_vs) + v_offsets, mask=tile_mask, other=fill
        )
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
        if MASK:
            qk = tl.where(valid[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        p = tl.math.exp2(qk * qk_scale - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        if MASS_ROWS > 0:
            sums = chunk_sums(p, BLOCK_M, BLOCK_N, MASS_CHUNK)
            l_i = l_i * alpha + tl.sum(sums, 1)
            # exp(s - lse) = p * exp(m - lse): one factor per row, not per score.
            add_block_mass(
                sums, tl.math.exp2(m_new - mass_lse2), mass_group_ptrs, start, stride_sc,
                BLOCK_M, MASS_ROWS, MASS_CHUNK, BLOCK_N // MASS_CHUNK,
            )  # fmt: skip
        else:
            l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def tile_counts(
    kv_idx_ptr, count, seq_len, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, EVEN_K: tl.constexpr
):
    """Key tiles of a row's ``count`` listed blocks, and how many of them, from the first, need
    no mask: all, unless the sequence's last block is partial (``EVEN_K`` false) and listed.
    Having the highest index, it is then listed last (lists ascend). Rows that do not list
    it skip the second, masked loop.
    """
    tiles = count * (BLOCK_K // BLOCK_N)
    unmasked = tiles
    if not EVEN_K:
        last = tl.load(kv_idx_ptr + count - 1, mask=count > 0, other=0)
        partial = (count > 0) & (last == (seq_len - 1) // BLOCK_K)
        unmasked = tl.where(partial, tiles - BLOCK_K // BLOCK_N, tiles)
    return tiles, unmasked


@triton.jit
def _plan_head(HEAD_PLANS, b, h, stride_hb, stride_hh, HAS_HEAD_PLANS: tl.constexpr):
    """Which of the plan tensors' heads head ``(b, h)`` runs: its own, or its ``head_plans``
    entry (the plan tensors' batch strides are then 0)."""
    if HAS_HEAD_PLANS:
        return tl.load(HEAD_PLANS + b * stride_hb + h * stride_hh).to(tl.int64)
    return h


@triton.jit
def _permute_kv(
    K,
    V,
    KP,
    VP,
    KEY_PERM,
    PERMUTED,
    HEAD_PLANS,
    stride_kb,
    stride_kh,
    stride_ks,
    stride_vb,
    stride_vh,
    stride_vs,
    stride_kpb,
    stride_kph,
    stride_fb,
    stride_fh,
    stride_hb,
    stride_hh,
    heads,
    seq_len,
    HEAD_DIM: tl.constexpr,
    BLOCK_S: tl.constexpr,
    HAS_HEAD_PLANS: tl.constexpr,
):
    """``KP[b, h, p] = K[b, h, key_perm[b, h, p]]`` (and V) for the heads ``PERMUTED`` marks;
    KP and VP are contiguous ``[B, H, S, D]``."""
    pid_s = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // heads).to(tl.int64)
    h = (pid_bh % heads).to(tl.int64)
    plan_h = _plan_head(HEAD_PLANS, b, h, stride_hb, stride_hh, HAS_HEAD_PLANS)
    if tl.load(PERMUTED + b * stride_fb + plan_h * stride_fh) != 0:
        offs = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
        valid = offs < seq_len
        rows = tl.load(KEY_PERM + b * stride_kpb + plan_h * stride_kph + offs, mask=valid, other=0)
        offs_d = tl.arange(0, HEAD_DIM)
        k = tl.load(K + b * stride_kb + h * stride_kh + rows[:, None] * stride_ks + offs_d[None, :])
        v = tl.load(V + b * stride_vb + h * stride_vh + rows[:, None] * stride_vs + offs_d[None, :])
        out = (pid_bh.to(tl.int64) * seq_len + offs[:, None]) * HEAD_DIM + offs_d[None, :]
        tl.store(KP + out, k, mask=valid[:, None])
        tl.store(VP + out, v, mask=valid[:, None])


@triton.jit
def _block_sparse_attention_fwd(
    Q,
    K,
    V,
    Out,
    LSE,
    KV_IDX,
    KV_CNT,
    PERM,
    PERMUTED,
    HEAD_PLANS,
    KP,
    VP,
    MASS_SUMS,
    MASS_LSE,
    stride_qb,
    stride_qh,
    stride_qs,
    stride_kb,
    stride_kh,
    stride_ks,
    stride_vb,
    stride_vh,
    stride_vs,
    stride_ob,
    stride_oh,
    stride_os,
    stride_ib,
    stride_ih,
    stride_iq,
    stride_cb,
    stride_ch,
    stride_cq,
    stride_pb,
    stride_ph,
    stride_fb,
    stride_fh,
    stride_hb,
    stride_hh,
    stride_copy_s,
    stride_mlb,
    stride_mlh,
    stride_mls,
    stride_sb,
    stride_sh,
    stride_sg,
    stride_sc,
    heads,
    seq_len,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr,
    EVEN_K: tl.constexpr,
    HAS_PERM: tl.constexpr,
    HAS_HEAD_PLANS: tl.constexpr,
    RETURN_LSE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    MASS_ROWS: tl.constexpr,
    MASS_CHUNK: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // heads).to(tl.int64)
    h = (pid_bh % heads).to(tl.int64)
    q_ptr = Q + b * stride_qb + h * stride_qh
    k_ptr = K + b * stride_kb + h * stride_kh
    v_ptr = V + b * stride_vb + h * stride_vh
    # The plan's strides are 0 along the dims it broadcasts.
    plan_h = _plan_head(HEAD_PLANS, b, h, stride_hb, stride_hh, HAS_HEAD_PLANS)
    q_block = pid_m // (BLOCK_Q // BLOCK_M)
    kv_idx_ptr = KV_IDX + b * stride_ib + plan_h * stride_ih + q_block * stride_iq
    count = tl.load(KV_CNT + b * stride_cb + plan_h * stride_ch + q_block * stride_cq)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_valid = offs_m < seq_len
    q_rows = offs_m
    stride_ks_used = stride_ks
    stride_vs_used = stride_vs
    if HAS_PERM:  # noqa: SIM102 (a constexpr guard; the inner test runs on the device)
        if tl.load(PERMUTED + b * stride_fb + plan_h * stride_fh) != 0:
            # Q rows through the permutation; K and V from their permuted copies.
            perm_rows = tl.load(PERM + b * stride_pb + plan_h * stride_ph + offs_m, mask=row_valid)
            q_rows = perm_rows.to(tl.int32)
            k_ptr = KP + pid_bh.to(tl.int64) * seq_len * stride_copy_s
            v_ptr = VP + pid_bh.to(tl.int64) * seq_len * stride_copy_s
            stride_ks_used = stride_copy_s
            stride_vs_used = stride_copy_s
    q_ptrs = q_ptr + q_rows[:, None] * stride_qs + tl.arange(0, HEAD_DIM)[None, :]
    q = tl.load(q_ptrs, mask=row_valid[:, None], other=0.0)

    mass_lse2, mass_group_ptrs = 0.0, MASS_SUMS
    if MASS_ROWS > 0:
        mass_lse2, mass_group_ptrs = block_mass_rows(
            MASS_LSE + b * stride_mlb + h * stride_mlh, stride_mls,
            MASS_SUMS + b * stride_sb + h * stride_sh, stride_sg, pid_m, seq_len, BLOCK_M,
            MASS_ROWS,
        )  # fmt: skip

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    tiles, unmasked = tile_counts(kv_idx_ptr, count, seq_len, BLOCK_K, BLOCK_N, EVEN_K)
    acc, l_i, m_i = _attend_tiles(
        acc, l_i, m_i, q, k_ptr, v_ptr, kv_idx_ptr, 0, unmasked, seq_len, qk_scale,
        stride_ks_used, stride_vs_used, mass_lse2, mass_group_ptrs, stride_sc, HEAD_DIM,
        BLOCK_M, BLOCK_N, BLOCK_K, False, DOT_PRECISION, MASS_ROWS, MASS_CHUNK,
    )  # fmt: skip
    if not EVEN_K:
        acc, l_i, m_i = _attend_tiles(
            acc, l_i, m_i, q, k_ptr, v_ptr, kv_idx_ptr, unmasked, tiles, seq_len, qk_scale,
            stride_ks_used, stride_vs_used, mass_lse2, mass_group_ptrs, stride_sc, HEAD_DIM,
            BLOCK_M, BLOCK_N, BLOCK_K, True, DOT_PRECISION, MASS_ROWS, MASS_CHUNK,
        )  # fmt: skip

    # A row with no key block (l = 0) gets O = 0 and LSE = -inf, as the reference does.
    has_keys = l_i > 0.0
    l_safe = tl.where(has_keys, l_i, 1.0)
    out = acc / l_safe[:, None]
    o_ptrs = (
        Out + b * stride_ob + h * stride_oh + q_rows[:, None] * stride_os
        + tl.arange(0, HEAD_DIM)[None, :]
    )  # fmt: skip
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_valid[:, None])
    if RETURN_LSE:
        lse = tl.where(has_keys, (m_i + tl.math.log2(l_safe)) / 1.4426950408889634, float("-inf"))
        tl.store(LSE + pid_bh.to(tl.int64) * seq_len + q_rows, lse, mask=row_valid)


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plan: BlockPlan,
    *,
    scale: float | None = None,
    return_lse: bool = False,
    out: torch.Tensor | None = None,
    precision: str = "bf16",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention of ``q`` to the key blocks ``plan`` lists, ``[B, H, S, D]`` in and out.

    Args:
        q, k, v: ``[B, H, S, D]``, fp16 or bf16 (fp32 is accepted, for tests), one device;
            ``D`` in 16, 32, 64, 128, 256. Any strides with a contiguous last dim.
        plan: ``seq_len == S``; its batch and head dims are ``B``/``H`` or 1 (broadcast).
            With ``plan.perm`` the plan is in permuted token order (keys and values in that of
            ``plan.key_perm`` if given); O and LSE still come back in the original order.
            ``plan.head_plans`` entries are not bounds-checked (that would cost a device sync).
        scale: score scale, default ``1 / sqrt(D)``; must be positive.
        return_lse: also return the natural-log log-sum-exp of each row's scaled scores.
        out: optional ``[B, H, S, D]`` buffer of q's dtype and device to write O into.
        precision: ``"bf16"`` (default): scores and P V in the input dtype's tensor-core
            precision. ``"8bit"``: INT8 Q K^T and FP8 e4m3 P V with fp32 accumulation
            (`dit_sparse.kernels.attention_8bit`); needs ``D >= 32``, ``plan.block_k >= 32``
            and, on CUDA, FP8 tensor cores (compute capability 8.9 or newer).

    Returns:
        O in q's dtype, and with ``return_lse`` also fp32 LSE ``[B, H, S]``. A row whose query
        block lists no key block gets O = 0 and LSE = -inf.

    On CUDA this is the Triton kernel; on CPU (unless ``TRITON_INTERPRET=1``) or without Triton
    the torch reference runs, with a one-time warning. Inside ``torch.compile`` it is the custom
    op ``torch.ops.dit_sparse.block_sparse_attention`` (the plan's tensors and sizes as its
    arguments): one graph node, no break, the same dispatch at run time.
    """
    if torch.compiler.is_compiling():
        result, lse = _block_sparse_attention_op(
            q, k, v, plan.kv_indices, plan.kv_counts, plan.perm, plan.permuted, plan.head_plans,
            plan.block_q, plan.block_k, plan.seq_len, scale, return_lse, precision, plan.key_perm,
        )  # fmt: skip
        if out is not None:
            result = out.copy_(result)
        return (result, lse) if return_lse else result
    return _block_sparse_attention(q, k, v, plan, scale, return_lse, out, precision)


def _block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plan: BlockPlan,
    scale: float | None,
    return_lse: bool,
    out: torch.Tensor | None,
    precision: str,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    scale = _check_inputs(q, k, v, plan, scale, out)
    eight_bit = _check_precision(precision, q.shape[-1], plan)
    if not triton_runs_on(q.device):
        warn_fallback("block_sparse_attention", q.device)
        reference = (
            block_sparse_attention_8bit_reference
            if eight_bit
            else (block_sparse_attention_reference)
        )
        result = reference(q, k, v, plan, scale, return_lse=True)
        if out is not None:
            out.copy_(result[0])
            result = (out, result[1])
        return result if return_lse else result[0]
    dtype = q.dtype
    if INTERPRETED and dtype == torch.bfloat16:
        # The interpreter's bf16 dot is wrong (numpy has no bf16): compute in fp32 there.
        q, k, v = q.float(), k.float(), v.float()
    kernel_out = out if out is not None and out.dtype == q.dtype else torch.empty_like(q)
    lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device) if return_lse else None
    if eight_bit:
        check_8bit_device(q.device)
        config = default_config_8bit(q.shape[-1], plan.block_q, plan.block_k, q.device)
        launch_attention_8bit(q, k, v, plan, scale, kernel_out, lse, config)
    else:
        config = default_config(q.shape[-1], plan.block_q, plan.block_k, q.device)
        launch_block_sparse_attention(q, k, v, plan, scale, kernel_out, lse, config)
    if out is None:
        out = kernel_out.to(dtype)
    elif out is not kernel_out:
        out.copy_(kernel_out)
    return (out, lse) if return_lse else out


@torch.library.custom_op("dit_sparse::block_sparse_attention", mutates_args=())
def _block_sparse_attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_indices: torch.Tensor,
    kv_counts: torch.Tensor,
    perm: torch.Tensor | None,
    permuted: torch.Tensor | None,
    head_plans: torch.Tensor | None,
    block_q: int,
    block_k: int,
    seq_len: int,
    scale: float | None,
    return_lse: bool,
    precision: str = "bf16",
    key_perm: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`block_sparse_attention` as a custom op: O with q's strides, and the LSE (or an empty
    tensor without ``return_lse``), as the fake implementation below says."""
    plan = BlockPlan(
        kv_indices, kv_counts, block_q, block_k, seq_len, perm, permuted, head_plans, key_perm
    )
    result = _block_sparse_attention(q, k, v, plan, scale, return_lse, None, precision)
    out, lse = result if return_lse else (result, q.new_empty(0, dtype=torch.float32))
    if out.stride() != torch.empty_like(q, device="meta").stride():
        out = torch.empty_like(q).copy_(out)
    return out, lse.contiguous()


@_block_sparse_attention_op.register_fake
def _(q, k, v, kv_indices, kv_counts, perm, permuted, head_plans, block_q, block_k, seq_len,
      scale, return_lse, precision="bf16", key_perm=None):  # fmt: skip
    lse_shape = q.shape[:3] if return_lse else (0,)
    return torch.empty_like(q), q.new_empty(lse_shape, dtype=torch.float32)


def launch_block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plan: BlockPlan,
    scale: float,
    out: torch.Tensor,
    lse: torch.Tensor | None,
    config: KernelConfig,
    mass: FusedMass | None = None,
) -> None:
    """Run the kernel into ``out`` (``[B, H, S, D]``) and ``lse`` (fp32 ``[B, H, S]``, or None),
    storing the block-mass partial sums into ``mass.partials`` on the way if given (indexed,
    like ``mass.lse``, by the plan's query and key positions: permuted ones with ``perm``).

    No validation: `block_sparse_attention` and `dense_attention_with_mass` check inputs first;
    benchmarks call this directly to try other configs.
    """
    batch, heads, seq_len, head_dim = q.shape
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    kv_indices = (
        plan.kv_indices if plan.kv_indices.stride(-1) == 1 else plan.kv_indices.contiguous()
    )
    kv_counts = plan.kv_counts
    looked_up = plan_lookups(plan)
    perm, permuted, head_plans = looked_up.perm, looked_up.permuted, looked_up.head_plans
    perm_and_flag_strides = (*looked_up.perm_strides, *looked_up.permuted_strides)
    k_perm, v_perm = None, None
    if perm is not None:
        k_perm = torch.empty((batch, heads, seq_len, head_dim), dtype=k.dtype, device=k.device)
        v_perm = torch.empty_like(k_perm)
        _permute_kv[(num_blocks(seq_len, _PERMUTE_ROWS), batch * heads)](
            k, v, k_perm, v_perm, looked_up.key_perm, permuted, head_plans, *k.stride()[:3],
            *v.stride()[:3], *looked_up.key_perm_strides, *looked_up.permuted_strides,
            *looked_up.head_plan_strides, heads, seq_len, HEAD_DIM=head_dim,
            BLOCK_S=_PERMUTE_ROWS, HAS_HEAD_PLANS=head_plans is not None, num_warps=4,
        )  # fmt: skip
    mass_args: tuple = (None, None, 0, 0, 0, 0, 0, 0, 0)
    if mass is not None:
        sums = mass.partials.sums
        mass_args = (sums, mass.lse, *mass.lse.stride(), *sums.stride())
    grid = (num_blocks(seq_len, config.block_m), batch * heads)
    _block_sparse_attention_fwd[grid](
        q, k, v, out, lse, kv_indices, kv_counts, perm, permuted, head_plans, k_perm, v_perm,
        *mass_args[:2], *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
        *_broadcast_strides(kv_indices, 3), *_broadcast_strides(kv_counts, 3),
        *perm_and_flag_strides, *looked_up.head_plan_strides, head_dim, *mass_args[2:], heads,
        seq_len, scale * LOG2E,
        HEAD_DIM=head_dim,
        BLOCK_M=config.block_m,
        BLOCK_N=config.block_n,
        BLOCK_Q=plan.block_q,
        BLOCK_K=plan.block_k,
        EVEN_K=seq_len % plan.block_k == 0,
        HAS_PERM=perm is not None,
        HAS_HEAD_PLANS=head_plans is not None,
        RETURN_LSE=lse is not None,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        MASS_ROWS=0 if mass is None else mass.partials.group_rows,
        MASS_CHUNK=0 if mass is None else mass.partials.chunk_keys,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )  # fmt: skip


@dataclass(frozen=True)
class FusedMass:
    """Block attention mass for the kernel to add up as it goes (`dense_attention_with_mass`):
    the partial sums to store (allocated for the launch's config), and the fp32 ``[B, H, S]``
    LSE the probabilities are measured against (a cached one)."""

    partials: MassPartials
    lse: torch.Tensor


class PlanLookups(NamedTuple):
    """The plan tensors that the kernels look up per head, with their broadcast ``(batch,
    head)`` strides: the kernels' arguments for them. ``key_perm`` is the plan's, or ``perm``
    when it has none; ``permuted`` is uint8, all set when the plan has no flags. Without a
    ``perm`` the tensors are None and the strides 0."""

    perm: torch.Tensor | None
    perm_strides: tuple[int, int]
    key_perm: torch.Tensor | None
    key_perm_strides: tuple[int, int]
    permuted: torch.Tensor | None
    permuted_strides: tuple[int, int]
    head_plans: torch.Tensor | None
    head_plan_strides: tuple[int, int]


def plan_lookups(plan: BlockPlan) -> PlanLookups:
    """The plan's permutations, per-head flags and ``head_plans`` as `PlanLookups`."""
    perm, key_perm, permuted = plan.perm, None, None
    if perm is not None:
        key_perm = perm if plan.key_perm is None else plan.key_perm
        permuted = plan.permuted
        if permuted is None:
            permuted = torch.ones(perm.shape[:2], dtype=torch.bool, device=perm.device)
        permuted = permuted.view(torch.uint8)

    def strides(t: torch.Tensor | None) -> tuple[int, int]:
        return (0, 0) if t is None else _broadcast_strides(t, 2)

    return PlanLookups(
        perm, strides(perm), key_perm, strides(key_perm), permuted, strides(permuted),
        plan.head_plans, strides(plan.head_plans),
    )  # fmt: skip


def _broadcast_strides(t: torch.Tensor, dims: int) -> tuple[int, ...]:
    """Strides of the first ``dims`` dims, 0 where the size is 1 (broadcast)."""
    return tuple(0 if t.shape[d] == 1 else t.stride(d) for d in range(dims))


PRECISIONS = ("bf16", "8bit")


def _check_precision(precision: str, head_dim: int, plan: BlockPlan) -> bool:
    """Raise unless ``precision`` is one the kernel takes (and the 8-bit kernel can take this
    head dim and plan); return whether it is ``"8bit"``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16":
        return False
    if head_dim < MIN_8BIT_DIM or plan.block_k < MIN_8BIT_DIM:
        raise ValueError(
            f'precision="8bit" needs head dim and plan.block_k >= {MIN_8BIT_DIM} (8-bit tensor '
            f"cores reduce over at least {MIN_8BIT_DIM}); got D = {head_dim}, "
            f"block_k = {plan.block_k}"
        )
    return True


def _check_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plan: BlockPlan,
    scale: float | None,
    out: torch.Tensor | None,
) -> float:
    """Raise on anything the kernel cannot take; return the scale to use."""
    check_qkv(q=q, k=k, v=v)
    batch, heads, seq_len, head_dim = q.shape
    if not isinstance(plan, BlockPlan):
        raise TypeError(f"plan must be a BlockPlan, got {type(plan).__name__}")
    if plan.seq_len != seq_len:
        raise ValueError(f"plan is for seq_len {plan.seq_len}, but q has S = {seq_len}")
    if plan.batch not in (1, batch) or plan.heads not in (1, heads):
        raise ValueError(
            f"plan is for [B, H] = [{plan.batch}, {plan.heads}]; q needs [{batch}, {heads}], "
            "or 1 in a dim to broadcast it"
        )
    for name in ("perm", "permuted", "key_perm"):
        t = getattr(plan, name)
        if t is not None and t.shape[0] not in (1, batch):
            raise ValueError(f"plan.{name} batch dim must be 1 or {batch}, got {t.shape[0]}")
    check_block("plan.block_q", plan.block_q)
    check_block("plan.block_k", plan.block_k)
    plan_tensors = [
        plan.kv_indices, plan.kv_counts, plan.perm, plan.permuted, plan.head_plans, plan.key_perm
    ]  # fmt: skip
    for t in (t for t in plan_tensors if t is not None):
        if t.device != q.device:
            raise ValueError(f"plan is on {t.device} but q is on {q.device}: use plan.to(device)")
        # `permuted` is bool (BlockPlan checks it); the rest are indices.
        if t is not plan.permuted and t.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"plan index tensors must be int32 or int64, got {t.dtype}")
    if out is not None and (
        out.shape != q.shape
        or out.dtype != q.dtype
        or out.device != q.device
        or out.stride(-1) != 1
    ):
        raise ValueError(
            f"out must be {tuple(q.shape)} {q.dtype} on {q.device} with a contiguous last dim, "
            f"got {tuple(out.shape)} {out.dtype} on {out.device} with strides {out.stride()}"
        )
    return resolve_scale(scale, head_dim)


# Imported last: the 8-bit kernel module reuses this one's jit helpers.
from .attention_8bit import (  # noqa: E402
    MIN_8BIT_DIM,
    check_8bit_device,
    default_config_8bit,
    launch_attention_8bit,
)
