"""Dense attention that also returns the row log-sum-exps (for LSE-cached searches), or also
the block attention mass against a cached LSE (AdaSpa's fused search)."""

from __future__ import annotations

import torch

from ..plan import BlockPlan
from .block_mass import MassPartials, block_attention_mass_inputs
from .block_sparse_attention import (
    FusedMass,
    block_sparse_attention,
    default_config,
    launch_block_sparse_attention,
)
from .launch import INTERPRETED, check_qkv, resolve_scale, triton_runs_on, warn_fallback
from .reference import block_attention_mass_reference, block_sparse_attention_reference


def dense_attention_with_lse(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense attention, ``[B, H, S, D]`` in and out, plus fp32 LSE ``[B, H, S]`` (natural log).

    On Hopper or newer with fp16/bf16 and ``D <= 128`` this is cuDNN's fused attention asked for
    its log-sum-exp (the kernel `F.scaled_dot_product_attention` picks there); otherwise it is
    `block_sparse_attention` with a dense plan (Triton on CUDA, the torch reference on CPU).
    """
    check_qkv(q=q, k=k, v=v)
    scale = resolve_scale(scale, q.shape[-1])
    if _cudnn_takes(q):
        out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(
            q, k, v, None, True, scale=scale
        )[:2]
        return out, lse.reshape(q.shape[:3])
    return block_sparse_attention(q, k, v, _dense_plan(q), scale=scale, return_lse=True)


def dense_attention_with_mass(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lse: torch.Tensor,
    block_q: int,
    block_k: int,
    *,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dense attention with its LSE, plus the block attention mass measured against a cached
    ``lse``, from one pass over K and V.

    Returns O (q's dtype), its fp32 LSE ``[B, H, S]``, and the fp32 mass ``[B, H, nq, nk]`` that
    `block_attention_mass(q, k, lse, block_q, block_k)` would return. The pass already has each
    score's ``exp(s - running max)``; one factor per row turns it into ``exp(s - lse)``, so the
    mass costs a per-tile reduction, not a second ``Q K^T``. On CUDA that is our Triton kernel
    (not cuDNN); elsewhere the torch references, with a one-time warning.
    """
    check_qkv(q=q, k=k, v=v)
    scale = block_attention_mass_inputs(q, k, lse, block_q, block_k, scale)
    if not triton_runs_on(q.device):
        warn_fallback("dense_attention_with_mass", q.device)
        out, new_lse = block_sparse_attention_reference(
            q, k, v, _dense_plan(q), scale, return_lse=True
        )
        mass = block_attention_mass_reference(q, k, lse, block_q, block_k, scale=scale)
        return out, new_lse, mass
    dtype = q.dtype
    if INTERPRETED and dtype == torch.bfloat16:
        # The interpreter's bf16 dot is wrong (numpy has no bf16): compute in fp32 there.
        q, k, v = q.float(), k.float(), v.float()
    plan = _dense_plan(q)
    out = torch.empty_like(q)
    new_lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    config = default_config(q.shape[-1], plan.block_q, plan.block_k, q.device)
    partials = MassPartials.allocate(q, k.shape[2], block_q, block_k, config, plan.block_k)
    launch_block_sparse_attention(
        q, k, v, plan, scale, out, new_lse, config, FusedMass(partials, lse)
    )
    return out.to(dtype), new_lse, partials.total()


def _dense_plan(q: torch.Tensor) -> BlockPlan:
    seq_len = q.shape[2]
    block = 128 if seq_len >= 128 else 16
    return BlockPlan.dense(1, 1, seq_len, block, block, device=q.device)


def _cudnn_takes(q: torch.Tensor) -> bool:
    return (
        q.is_cuda
        and q.dtype in (torch.float16, torch.bfloat16)
        and q.shape[-1] <= 128
        and torch.backends.cudnn.is_available()
        and torch.backends.cuda.cudnn_sdp_enabled()
        and torch.cuda.get_device_capability(q.device) >= (9, 0)
    )
