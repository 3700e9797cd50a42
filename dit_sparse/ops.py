"""dit_sparse's attention as a ``torch.library`` custom op, for ``torch.compile``.

Inside a compiled region dynamo traces the wrapped processor (projections, norms, RoPE) into
its graph, and the interceptor (`processor`) turns the self-attention SDPA call into one call
of ``torch.ops.dit_sparse.attention``. To dynamo and Inductor that op is opaque: its fake
implementation says only the output's shape, dtype and strides, so the graph has no break
at it, and nothing the method decides (the step, the guidance branch, dense or sparse, which
plan, a search or a reuse) is traced, guarded or baked into the graph. At run time the op's
body is eager Python: it finds the runtime and the layer from ``route`` (a CPU int64 tensor
``[runtime key, layer]`` that the processor holds: a graph input, not a constant, so every
transformer block shares one compiled graph) and runs `SparseRuntime.attend` with the step
tracking's state of this forward, exactly as the eager path does; the kernels dispatch as
they do in eager (Triton on CUDA, the torch reference or the interpreter on CPU).
"""

from __future__ import annotations

import itertools
import weakref
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from .runtime import SparseRuntime

# Live runtimes by key; the key is never reused, so a stale route finds nothing.
_RUNTIMES: weakref.WeakValueDictionary[int, SparseRuntime] = weakref.WeakValueDictionary()
_KEYS = itertools.count()


def register_runtime(runtime: SparseRuntime) -> int:
    """A fresh key for ``runtime``, under which the op finds it while it lives."""
    key = next(_KEYS)
    _RUNTIMES[key] = runtime
    return key


def unregister_runtime(key: int) -> None:
    _RUNTIMES.pop(key, None)


def route_tensor(runtime_key: int, layer: int) -> torch.Tensor:
    """What a processor passes the op to name its runtime and layer (see the module doc)."""
    return torch.tensor([runtime_key, layer], dtype=torch.int64)


def _output_like(
    query: torch.Tensor, value: torch.Tensor, device: torch.device | str | None = None
) -> torch.Tensor:
    """An empty SDPA output: q's shape with v's head dim, q's dtype, and q's stride order
    (diffusers' q is a ``[B, S, H, D]`` buffer seen as ``[B, H, S, D]``; so is the output,
    which makes the processor's transpose back free)."""
    if value.shape[-1] == query.shape[-1]:
        return torch.empty_like(query, device=device)
    return query.new_empty((*query.shape[:-1], value.shape[-1]), device=device)


@torch.library.custom_op("dit_sparse::attention", mutates_args=())
def attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None,
    dropout_p: float,
    is_causal: bool,
    scale: float | None,
    enable_gqa: bool,
    route: torch.Tensor,
) -> torch.Tensor:
    """``F.scaled_dot_product_attention(query, ...)``, computed by the attached method of the
    runtime and layer ``route`` names when it takes the call (else by SDPA itself)."""
    runtime_key, layer = route.tolist()
    runtime = _RUNTIMES.get(runtime_key)
    args = (query, key, value)
    kwargs = dict(
        attn_mask=attn_mask,
        dropout_p=dropout_p,
        is_causal=is_causal,
        scale=scale,
        enable_gqa=enable_gqa,
    )
    out = None
    if runtime is not None and runtime.tracker.current is not None:
        out = runtime.attend(
            layer, F.scaled_dot_product_attention, args, kwargs, query=query, key=key,
            value=value, **kwargs,
        )  # fmt: skip
    if out is None:
        out = F.scaled_dot_product_attention(*args, **kwargs)
    if out.stride() != _output_like(query, value, "meta").stride():
        # Inductor checks an op's output strides against the fake implementation's.
        out = _output_like(query, value).copy_(out)
    return out


@attention.register_fake
def _(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, route):
    return _output_like(query, value)
