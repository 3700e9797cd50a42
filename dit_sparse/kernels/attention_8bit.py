"""8-bit block-sparse attention in Triton: INT8 Q K^T and FP8 e4m3 P V, fp32 accumulation.

The recipe of SageAttention-2, over a `BlockPlan`:

- K is smoothed: its per-(batch, head) mean over tokens is subtracted. Each row's scores then
  shift by one constant (``q . mean``), which softmax ignores; the LSE gets it back, from
  unquantised Q. Without it a per-channel offset of K (as real DiTs have) dominates K's range
  and the INT8 codes of what differs between keys get few levels.
- Q and smoothed K are INT8 with one scale per `QUANT_ROWS` rows of each head, in plan order
  (permuted heads are quantised in their permuted order, Q's ``perm`` and K's ``key_perm`` or
  else ``perm``, which is also the order the kernel reads). The Q scales carry
  ``scale * log2(e)``; scores are the exact int32 products times the two scales.
- V is FP8 e4m3 with one scale per channel of each head, stored transposed (``[B, H, D, S]``),
  so that each tile is the K-major operand that FP8 tensor cores take.
- Each tile's probabilities (relative to the running row max, at most 1) are scaled by 448 and
  rounded to e4m3 for P V; the row sums stay fp32, and O is divided by them, by 448 and by V's
  scales once at the end.

Two passes before the attention kernel: `_kv_stats` sums K and takes |V|'s max per channel
(atomics across chunks of rows), and `_quantize_qkv` writes the 8-bit Q, K, V and their scales
in one pass (the permutations of permuted heads fused into its loads). Buffers are padded to a
whole number of tiles with zeros, so that only scores past the sequence end need masking.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..plan import BlockPlan, num_blocks
from .block_sparse_attention import (
    PlanLookups,
    _broadcast_strides,
    _plan_head,
    plan_lookups,
    tile_counts,
)
from .launch import INTERPRETED, KernelConfig, tl, triton
from .reference import QUANT_ROWS

# Per head dim on CUDA. A key tile takes one K scale, so it is at most `QUANT_ROWS` keys.
_GPU_CONFIGS = {
    32: KernelConfig(128, 64, 4, 3),
    64: KernelConfig(128, 64, 4, 3),
    128: KernelConfig(128, 64, 8, 3),
    256: KernelConfig(64, 64, 4, 2),
}
_INTERPRETER_CONFIG = KernelConfig(128, 64, 4, 1)
# 1.5 * 2^23: added to an int32 below 2^22 in magnitude, its bits read as fp32 are this plus
# the integer, exactly.
_MAGIC = tl.constexpr(12582912.0)
_LOG2_448 = tl.constexpr(8.807354922057604)
# Rows per program of the statistics pass.
_STATS_ROWS = 256
# 8-bit dots take at least 32 along the reduced dim: D and the key tile.
MIN_8BIT_DIM = 32


def default_config_8bit(
    head_dim: int, block_q: int, block_k: int, device: torch.device
) -> KernelConfig:
    """Launch parameters of the 8-bit kernel for ``head_dim`` and a plan's blocks."""
    config = _INTERPRETER_CONFIG if device.type == "cpu" else _GPU_CONFIGS[head_dim]
    return KernelConfig(
        min(config.block_m, block_q), min(config.block_n, block_k), config.num_warps,
        config.num_stages,
    )  # fmt: skip


def check_8bit_device(device: torch.device) -> None:
    """Raise unless ``device`` has 8-bit tensor cores for the kernel (FP8: sm_89 or newer)."""
    if device.type != "cuda":
        return
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        raise RuntimeError(
            f'precision="8bit" needs FP8 tensor cores (compute capability 8.9 or newer: Ada, '
            f"Hopper, Blackwell); {torch.cuda.get_device_name(device)} is sm_{major}{minor}. "
            'Use precision="bf16".'
        )


@triton.jit
def _e4m3(x, EMULATE: tl.constexpr):
    """``x`` (fp32, within +-448) as FP8 e4m3, rounded to nearest. ``EMULATE`` rounds in fp32
    first: the interpreter's own conversion drops the carry when rounding up crosses a power
    of two (124.2 becomes 64)."""
    if EMULATE:
        biased = (x.to(tl.int32, bitcast=True) >> 23) & 0xFF
        # e4m3 has 3 mantissa bits; below 2^-6 the spacing stays 2^-9 (subnormals).
        ulp = ((tl.maximum(biased, 127 - 6) - 3) << 23).to(tl.float32, bitcast=True)
        x = tl.floor(x / ulp + 0.5) * ulp
    return x.to(tl.float8e4nv)


@triton.jit
def _kv_stats(
    K,
    V,
    K_SUM,
    V_MAX,
    stride_kb,
    stride_kh,
    stride_ks,
    stride_vb,
    stride_vh,
    stride_vs,
    heads,
    seq_len,
    HEAD_DIM: tl.constexpr,
    ROWS: tl.constexpr,
):
    """Add this chunk's column sums of K and column maxima of |V| into fp32 ``[B, H, D]``."""
    pid_s = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // heads).to(tl.int64)
    h = (pid_bh % heads).to(tl.int64)
    offs = pid_s * ROWS + tl.arange(0, ROWS)
    offs_d = tl.arange(0, HEAD_DIM)
    valid = (offs < seq_len)[:, None]
    k = tl.load(K + b * stride_kb + h * stride_kh + offs[:, None] * stride_ks + offs_d[None, :],
                mask=valid, other=0.0).to(tl.float32)  # fmt: skip
    v = tl.load(V + b * stride_vb + h * stride_vh + offs[:, None] * stride_vs + offs_d[None, :],
                mask=valid, other=0.0).to(tl.float32)  # fmt: skip
    tl.atomic_add(K_SUM + pid_bh.to(tl.int64) * HEAD_DIM + offs_d, tl.sum(k, 0))
    tl.atomic_max(V_MAX + pid_bh.to(tl.int64) * HEAD_DIM + offs_d, tl.max(tl.abs(v), 0))


@triton.jit
def _quantize_qkv(
    Q,
    K,
    V,
    K_SUM,
    V_MAX,
    PERM,
    KEY_PERM,
    PERMUTED,
    HEAD_PLANS,
    Q8,
    K8,
    VT8,
    Q_SCALE,
    K_SCALE,
    LSE_SHIFT,
    stride_qb,
    stride_qh,
    stride_qs,
    stride_kb,
    stride_kh,
    stride_ks,
    stride_vb,
    stride_vh,
    stride_vs,
    stride_pb,
    stride_ph,
    stride_kpb,
    stride_kph,
    stride_fb,
    stride_fh,
    stride_hb,
    stride_hh,
    heads,
    seq_len,
    padded_len,
    scale,
    HEAD_DIM: tl.constexpr,
    ROWS: tl.constexpr,
    HAS_PERM: tl.constexpr,
    HAS_HEAD_PLANS: tl.constexpr,
    EMULATE_E4M3: tl.constexpr,
):
    """One group of ``ROWS`` rows (plan order: Q's through ``PERM``, K's and V's through
    ``KEY_PERM``) of one head: INT8 Q and smoothed K with one scale each, e4m3 V (transposed)
    with the per-channel scales, and ``scale * q . mean(K)`` of each row for the LSE. Padding
    rows (past ``seq_len``) are written as zeros."""
    pid_g = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // heads).to(tl.int64)
    h = (pid_bh % heads).to(tl.int64)
    offs = pid_g * ROWS + tl.arange(0, ROWS)
    offs_d = tl.arange(0, HEAD_DIM)
    valid = offs < seq_len
    q_rows = offs
    k_rows = offs
    if HAS_PERM:
        plan_h = _plan_head(HEAD_PLANS, b, h, stride_hb, stride_hh, HAS_HEAD_PLANS)
        if tl.load(PERMUTED + b * stride_fb + plan_h * stride_fh) != 0:
            q_rows = tl.load(
                PERM + b * stride_pb + plan_h * stride_ph + offs, mask=valid, other=0
            ).to(tl.int32)
            k_rows = tl.load(
                KEY_PERM + b * stride_kpb + plan_h * stride_kph + offs, mask=valid, other=0
            ).to(tl.int32)
    stats = pid_bh.to(tl.int64) * HEAD_DIM + offs_d
    k_mean = tl.load(K_SUM + stats) / seq_len
    v_scale = tl.maximum(tl.load(V_MAX + stats), 1e-30) / 448.0
    mask = valid[:, None]
    q = tl.load(Q + b * stride_qb + h * stride_qh + q_rows[:, None] * stride_qs + offs_d[None, :],
                mask=mask, other=0.0).to(tl.float32)  # fmt: skip
    k = tl.load(K + b * stride_kb + h * stride_kh + k_rows[:, None] * stride_ks + offs_d[None, :],
                mask=mask, other=0.0).to(tl.float32)  # fmt: skip
    v = tl.load(V + b * stride_vb + h * stride_vh + k_rows[:, None] * stride_vs + offs_d[None, :],
                mask=mask, other=0.0).to(tl.float32)  # fmt: skip
    k = tl.where(mask, k - k_mean[None, :], 0.0)
    out = pid_bh.to(tl.int64) * padded_len + offs
    tl.store(LSE_SHIFT + out, tl.sum(q * k_mean[None, :], 1) * scale)
    group = pid_bh.to(tl.int64) * (padded_len // ROWS) + pid_g
    q_scale = tl.maximum(tl.max(tl.max(tl.abs(q), 1), 0), 1e-30) / 127.0
    k_scale = tl.maximum(tl.max(tl.max(tl.abs(k), 1), 0), 1e-30) / 127.0
    # INT8 codes rounded to nearest (floor of x + 1/2), within +-127.
    q8 = tl.minimum(tl.maximum(tl.floor(q / q_scale + 0.5), -127.0), 127.0).to(tl.int8)
    k8 = tl.minimum(tl.maximum(tl.floor(k / k_scale + 0.5), -127.0), 127.0).to(tl.int8)
    tile = out[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(Q8 + tile, q8)
    tl.store(K8 + tile, k8)
    tl.store(Q_SCALE + group, q_scale * scale * 1.4426950408889634)
    tl.store(K_SCALE + group, k_scale)
    v8 = _e4m3(tl.minimum(tl.maximum(v / v_scale[None, :], -448.0), 448.0), EMULATE_E4M3)
    transposed = (pid_bh.to(tl.int64) * HEAD_DIM + offs_d[None, :]) * padded_len + offs[:, None]
    tl.store(VT8 + transposed, v8)


@triton.jit
def _attend_tiles_8bit(
    acc,
    l_i,
    m_i,
    q8,
    q_scale,
    k_ptr,
    vt_ptr,
    k_scale_ptr,
    kv_idx_ptr,
    first,
    last,
    seq_len,
    padded_len,
    HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    ROWS: tl.constexpr,
    MASK: tl.constexpr,
    EMULATE_E4M3: tl.constexpr,
):
    """Online-softmax update over key tiles ``first..last`` (see `_attend_tiles` of the bf16
    kernel for the tile walk), with 8-bit dots."""
    tl.static_assert(ROWS % BLOCK_N == 0, "a key tile must lie within one K scale's rows")
    sub_tiles: tl.constexpr = BLOCK_K // BLOCK_N
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    k_offsets = offs_n[:, None] * HEAD_DIM + offs_d[None, :]
    vt_offsets = offs_d[:, None] * padded_len + offs_n[None, :]
    block_1 = tl.load(kv_idx_ptr + first // sub_tiles, mask=first < last, other=0)
    for t in tl.range(first, last):
        start = block_1 * BLOCK_K + (t % sub_tiles) * BLOCK_N
        block_1 = tl.load(kv_idx_ptr + (t + 1) // sub_tiles, mask=t + 1 < last, other=0)
        k8 = tl.load(k_ptr + start.to(tl.int64) * HEAD_DIM + k_offsets)
        vt8 = tl.load(vt_ptr + start + vt_offsets)
        # Exact int32 scores as fp32 plus 1.5 * 2^23: adding the constant to the integer and
        # reinterpreting the bits is exact while |scores| < 2^22 (127^2 * D is, up to D = 256),
        # and cheaper than an int-to-float conversion. Scale factors are positive, so the row
        # max is taken on these raw values; scaling, the max and P's factor 448 then make one
        # FMA before exp2 (p holds 448 * the probability, e4m3's largest value at the max).
        raw = (tl.dot(q8, tl.trans(k8)) + 0x4B400000).to(tl.float32, bitcast=True)
        if MASK:
            raw = tl.where((start + offs_n < seq_len)[None, :], raw, float("-inf"))
        # One K scale per tile. Floored: a zero product would turn the masked
        # keys' -inf into NaN.
        s = tl.maximum(q_scale * tl.load(k_scale_ptr + start // ROWS), 1e-30)
        m_new = tl.maximum(m_i, (tl.max(raw, 1) - _MAGIC) * s)
        p = tl.math.exp2(raw * s[:, None] - (s * _MAGIC + m_new - _LOG2_448)[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        p8 = _e4m3(p, EMULATE_E4M3)
        # A fresh fp32 product per tile, added to the rescaled sum.
        acc = acc * alpha[:, None] + tl.dot(p8, tl.trans(vt8))
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attention_8bit_fwd(
    Q8,
    K8,
    VT8,
    Q_SCALE,
    K_SCALE,
    V_MAX,
    LSE_SHIFT,
    Out,
    LSE,
    KV_IDX,
    KV_CNT,
    PERM,
    PERMUTED,
    HEAD_PLANS,
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
    heads,
    seq_len,
    padded_len,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr,
    ROWS: tl.constexpr,
    EVEN_K: tl.constexpr,
    HAS_PERM: tl.constexpr,
    HAS_HEAD_PLANS: tl.constexpr,
    RETURN_LSE: tl.constexpr,
    EMULATE_E4M3: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // heads).to(tl.int64)
    h = (pid_bh % heads).to(tl.int64)
    bh = pid_bh.to(tl.int64)
    plan_h = _plan_head(HEAD_PLANS, b, h, stride_hb, stride_hh, HAS_HEAD_PLANS)
    q_block = pid_m // (BLOCK_Q // BLOCK_M)
    kv_idx_ptr = KV_IDX + b * stride_ib + plan_h * stride_ih + q_block * stride_iq
    count = tl.load(KV_CNT + b * stride_cb + plan_h * stride_ch + q_block * stride_cq)

    # Rows in plan order: the 8-bit buffers hold every head in its plan's order.
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_valid = offs_m < seq_len
    q8 = tl.load(Q8 + (bh * padded_len + offs_m[:, None]) * HEAD_DIM + offs_d[None, :])
    q_scale = tl.load(Q_SCALE + bh * (padded_len // ROWS) + offs_m // ROWS)
    k_ptr = K8 + bh * padded_len * HEAD_DIM
    vt_ptr = VT8 + bh * HEAD_DIM * padded_len
    k_scale_ptr = K_SCALE + bh * (padded_len // ROWS)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    tiles, unmasked = tile_counts(kv_idx_ptr, count, seq_len, BLOCK_K, BLOCK_N, EVEN_K)
    acc, l_i, m_i = _attend_tiles_8bit(
        acc, l_i, m_i, q8, q_scale, k_ptr, vt_ptr, k_scale_ptr, kv_idx_ptr, 0, unmasked,
        seq_len, padded_len, HEAD_DIM, BLOCK_N, BLOCK_K, ROWS, False, EMULATE_E4M3,
    )  # fmt: skip
    if not EVEN_K:
        acc, l_i, m_i = _attend_tiles_8bit(
            acc, l_i, m_i, q8, q_scale, k_ptr, vt_ptr, k_scale_ptr, kv_idx_ptr, unmasked,
            tiles, seq_len, padded_len, HEAD_DIM, BLOCK_N, BLOCK_K, ROWS, True, EMULATE_E4M3,
        )  # fmt: skip

    q_rows = offs_m
    if HAS_PERM:  # noqa: SIM102 (a constexpr guard; the inner test runs on the device)
        if tl.load(PERMUTED + b * stride_fb + plan_h * stride_fh) != 0:
            q_rows = tl.load(PERM + b * stride_pb + plan_h * stride_ph + offs_m, mask=row_valid).to(
                tl.int32
            )
    has_keys = l_i > 0.0
    l_safe = tl.where(has_keys, l_i, 1.0)
    # l_i sums 448 p (see `_attend_tiles_8bit`); V's codes are its values * 448 / max |V|.
    v_scale = tl.load(V_MAX + bh * HEAD_DIM + offs_d) / 448.0
    out = acc * v_scale[None, :] / l_safe[:, None]
    o_ptrs = Out + b * stride_ob + h * stride_oh + q_rows[:, None] * stride_os + offs_d[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_valid[:, None])
    if RETURN_LSE:
        shift = tl.load(LSE_SHIFT + bh * padded_len + offs_m)
        lse = (m_i + tl.math.log2(l_safe) - _LOG2_448) / 1.4426950408889634 + shift
        lse = tl.where(has_keys, lse, float("-inf"))
        tl.store(LSE + bh * seq_len + q_rows, lse, mask=row_valid)


@dataclass(frozen=True)
class Quantized:
    """What `quantize_8bit` writes for the kernel, every head in its plan's token order and
    padded to ``padded_len`` rows (``[B * H, ...]``): INT8 Q and K ``[., padded_len, D]``,
    e4m3 V transposed ``[., D, padded_len]``, fp32 scales per `QUANT_ROWS` rows of Q (times
    ``scale * log2(e)``) and K, fp32 max |V| per channel ``[., D]`` and the LSE shift
    ``scale * q . mean(K)`` per row."""

    q8: torch.Tensor
    k8: torch.Tensor
    vt8: torch.Tensor
    q_scale: torch.Tensor
    k_scale: torch.Tensor
    v_max: torch.Tensor
    lse_shift: torch.Tensor
    padded_len: int


def quantize_8bit(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plan: BlockPlan,
    scale: float,
    lookups: PlanLookups | None = None,
) -> Quantized:
    """The statistics pass and the fused quantisation pass (see the module docstring).
    ``lookups``: the plan's `plan_lookups`, when the caller has them already."""
    batch, heads, seq_len, head_dim = q.shape
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    device = q.device
    pad = max(128, plan.block_q, plan.block_k)
    padded = num_blocks(seq_len, pad) * pad
    bh = batch * heads
    k_sum = torch.zeros(bh, head_dim, dtype=torch.float32, device=device)
    v_max = torch.zeros_like(k_sum)
    _kv_stats[(num_blocks(seq_len, _STATS_ROWS), bh)](
        k, v, k_sum, v_max, *k.stride()[:3], *v.stride()[:3], heads, seq_len,
        HEAD_DIM=head_dim, ROWS=_STATS_ROWS, num_warps=4,
    )  # fmt: skip
    result = Quantized(
        q8=torch.empty(bh, padded, head_dim, dtype=torch.int8, device=device),
        k8=torch.empty(bh, padded, head_dim, dtype=torch.int8, device=device),
        vt8=torch.empty(bh, head_dim, padded, dtype=torch.float8_e4m3fn, device=device),
        q_scale=torch.empty(bh, padded // QUANT_ROWS, dtype=torch.float32, device=device),
        k_scale=torch.empty(bh, padded // QUANT_ROWS, dtype=torch.float32, device=device),
        v_max=v_max,
        lse_shift=torch.empty(bh, padded, dtype=torch.float32, device=device),
        padded_len=padded,
    )
    lookups = plan_lookups(plan) if lookups is None else lookups
    _quantize_qkv[(padded // QUANT_ROWS, bh)](
        q, k, v, k_sum, v_max, lookups.perm, lookups.key_perm, lookups.permuted,
        lookups.head_plans, result.q8, result.k8, result.vt8, result.q_scale, result.k_scale,
        result.lse_shift, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
        *lookups.perm_strides, *lookups.key_perm_strides, *lookups.permuted_strides,
        *lookups.head_plan_strides, heads, seq_len, padded, scale, HEAD_DIM=head_dim,
        ROWS=QUANT_ROWS, HAS_PERM=lookups.perm is not None,
        HAS_HEAD_PLANS=lookups.head_plans is not None, EMULATE_E4M3=INTERPRETED, num_warps=4,
    )  # fmt: skip
    return result


def launch_attention_8bit(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plan: BlockPlan,
    scale: float,
    out: torch.Tensor,
    lse: torch.Tensor | None,
    config: KernelConfig,
) -> None:
    """Quantise q, k, v (`quantize_8bit`) and run the 8-bit kernel into ``out`` and ``lse``.

    No validation: `block_sparse_attention(..., precision="8bit")` checks inputs first.
    """
    batch, heads, seq_len, head_dim = q.shape
    lookups = plan_lookups(plan)
    x = quantize_8bit(q, k, v, plan, scale, lookups)
    kv_indices = (
        plan.kv_indices if plan.kv_indices.stride(-1) == 1 else plan.kv_indices.contiguous()
    )
    _attention_8bit_fwd[(num_blocks(seq_len, config.block_m), batch * heads)](
        x.q8, x.k8, x.vt8, x.q_scale, x.k_scale, x.v_max, x.lse_shift, out, lse, kv_indices,
        plan.kv_counts, lookups.perm, lookups.permuted, lookups.head_plans, *out.stride()[:3],
        *_broadcast_strides(kv_indices, 3), *_broadcast_strides(plan.kv_counts, 3),
        *lookups.perm_strides, *lookups.permuted_strides, *lookups.head_plan_strides, heads,
        seq_len, x.padded_len, HEAD_DIM=head_dim, BLOCK_M=config.block_m,
        BLOCK_N=config.block_n, BLOCK_Q=plan.block_q, BLOCK_K=plan.block_k, ROWS=QUANT_ROWS,
        EVEN_K=seq_len % plan.block_k == 0, HAS_PERM=lookups.perm is not None,
        HAS_HEAD_PLANS=lookups.head_plans is not None, RETURN_LSE=lse is not None,
        EMULATE_E4M3=INTERPRETED, num_warps=config.num_warps, num_stages=config.num_stages,
    )  # fmt: skip
