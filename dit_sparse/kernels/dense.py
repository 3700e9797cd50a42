"""Dense attention that also returns the row log-sum-exps (for LSE-cached searches)."""

from __future__ import annotations

import torch

from ..plan import BlockPlan
from ._runtime import check_qkv, resolve_scale
from .block_sparse_attention import block_sparse_attention


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
    seq_len = q.shape[2]
    block = 128 if seq_len >= 128 else 16
    plan = BlockPlan.dense(1, 1, seq_len, block, block, device=q.device)
    return block_sparse_attention(q, k, v, plan, scale=scale, return_lse=True)


def _cudnn_takes(q: torch.Tensor) -> bool:
    return (
        q.is_cuda
        and q.dtype in (torch.float16, torch.bfloat16)
        and q.shape[-1] <= 128
        and torch.backends.cudnn.is_available()
        and torch.backends.cuda.cudnn_sdp_enabled()
        and torch.cuda.get_device_capability(q.device) >= (9, 0)
    )
