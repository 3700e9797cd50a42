"""Where the Triton kernels run, and the torch fallback when they cannot.

Triton kernels run on CUDA tensors, and on CPU tensors under Triton's interpreter: when
``TRITON_INTERPRET=1`` was set as this module was imported (that is when ``triton.jit`` picks the
interpreter) and is still set at the call. Anything else (CPU without the interpreter, other
devices, no Triton installed) runs the torch reference, with one warning per kernel.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import torch

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # Triton ships with torch on Linux only.
    HAS_TRITON = False

    class _Absent:
        """Stands in for ``triton`` and ``tl`` so that the kernel modules still import."""

        def __getattr__(self, name: str) -> _Absent:
            return self

        def __call__(self, *args, **kwargs):
            # `@triton.jit` leaves the function as it is; `@triton.jit(...)` returns a decorator.
            if len(args) == 1 and callable(args[0]) and not kwargs:
                return args[0]
            return self

    triton = tl = _Absent()

INTERPRETED = HAS_TRITON and os.environ.get("TRITON_INTERPRET") == "1"
# The kernels take exp2 of scores pre-scaled by log2(e): exp2 is the GPU's native exponential.
LOG2E = 1.4426950408889634

_warned: set[str] = set()


@dataclass(frozen=True)
class KernelConfig:
    """Launch parameters of a kernel: ``block_m`` query rows per program, ``block_n`` keys per
    inner step, warps per program and software-pipeline depth."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


def triton_runs_on(device: torch.device) -> bool:
    """Whether the Triton kernels can run on tensors of ``device`` now."""
    if not HAS_TRITON:
        return False
    if device.type == "cuda":
        return not INTERPRETED
    return device.type == "cpu" and INTERPRETED and os.environ.get("TRITON_INTERPRET") == "1"


def warn_fallback(kernel: str, device: torch.device) -> None:
    """Warn, once per kernel, that the torch reference runs instead of the Triton kernel."""
    if kernel in _warned:
        return
    _warned.add(kernel)
    reason = "Triton is not installed" if not HAS_TRITON else f"tensors are on {device.type}"
    warnings.warn(
        f"dit_sparse: {kernel} runs its torch reference ({reason}); it is correct but slow. "
        "The Triton kernel runs on CUDA tensors (or on CPU with TRITON_INTERPRET=1, for tests).",
        stacklevel=3,
    )


HEAD_DIMS = (16, 32, 64, 128, 256)
DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_qkv(**tensors: torch.Tensor) -> None:
    """Raise unless the named tensors (q, k[, v]) are ``[B, H, S, D]`` of one shape, dtype and
    device that the kernels take."""
    names = ", ".join(tensors)
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor [B, H, S, D], got {type(t).__name__}")
    shapes = [tuple(t.shape) for t in tensors.values()]
    if len(shapes[0]) != 4 or len(set(shapes)) != 1:
        raise ValueError(f"{names} must be [B, H, S, D] of one shape, got {shapes}")
    dtypes = [t.dtype for t in tensors.values()]
    if dtypes[0] not in DTYPES or len(set(dtypes)) != 1:
        raise TypeError(
            f"{names} must share one dtype of float16, bfloat16 or float32, got {dtypes}"
        )
    devices = [t.device for t in tensors.values()]
    if len(set(devices)) != 1:
        raise ValueError(f"{names} must be on one device, got {devices}")
    if shapes[0][-1] not in HEAD_DIMS:
        raise ValueError(f"head dim must be one of {HEAD_DIMS}, got {shapes[0][-1]}")
    if shapes[0][2] == 0:
        raise ValueError(f"{names} must have at least one token (S >= 1)")


def check_block(name: str, block: int) -> None:
    """Raise unless ``block`` is a power of two >= 16 (the kernels' tiles divide it)."""
    if isinstance(block, bool) or not isinstance(block, int) or block < 16 or block & (block - 1):
        raise ValueError(f"{name} must be a power of two >= 16, got {block!r}")


def resolve_scale(scale: float | None, head_dim: int) -> float:
    """The score scale: ``1 / sqrt(D)`` by default; raise unless positive and finite."""
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < math.inf:
        raise ValueError(f"scale must be a positive finite number or None, got {scale!r}")
    return float(scale)
