"""`SparseAttentionProcessor`: wraps a model's own attention processor and replaces only the
core attention call.

The wrapped processor still does everything it normally does (projections, norms, RoPE,
output projection). While it runs, a ``TorchFunctionMode`` catches its call to
``F.scaled_dot_product_attention`` (diffusers' native backend makes that call, and so do
processors that call SDPA directly) and routes the self-attention one, ``[B, H, S, D]``, to the
method. One wrapper serves every model instead of a copy of each model's processor.

Under ``torch.compile`` dynamo traces the same mode; the call it routes becomes one
``torch.ops.dit_sparse.attention`` (`ops`), which decides and computes the attention at run
time, so neither the interception nor the method's choices break or specialize the graph.
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from . import ops

if TYPE_CHECKING:
    from .runtime import SparseRuntime

# Attributes diffusers sets on a module's processor; they must reach the wrapped one.
_FORWARDED = frozenset({"_attention_backend", "_parallel_config"})


def _sdpa_arguments(
    query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False
) -> dict[str, Any]:
    """SDPA's arguments by name (plain Python, which dynamo traces, unlike `inspect`)."""
    return dict(
        query=query, key=key, value=value, attn_mask=attn_mask, dropout_p=dropout_p,
        is_causal=is_causal, scale=scale, enable_gqa=enable_gqa,
    )  # fmt: skip


class _AttentionInterceptor(TorchFunctionMode):
    def __init__(self, processor: SparseAttentionProcessor) -> None:
        super().__init__()
        self.processor = processor
        self.handled = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            arguments = _sdpa_arguments(*args, **kwargs)
            out = self.processor.runtime.attend(
                self.processor.layer, func, args, kwargs, **arguments
            )
            if out is not None:
                self.handled += 1
                return out
        return func(*args, **kwargs)


class _CompiledAttentionInterceptor(TorchFunctionMode):
    """The interceptor dynamo traces: a self-attention-shaped SDPA call (what the runtime may
    take; the rest it checks at run time) becomes ``torch.ops.dit_sparse.attention``."""

    def __init__(self, processor: SparseAttentionProcessor) -> None:
        super().__init__()
        self.processor = processor

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            a = _sdpa_arguments(*args, **kwargs)
            query, key = a["query"], a["key"]
            if query.dim() == 4 and query.shape[-2] == key.shape[-2]:
                return ops.attention(
                    query, key, a["value"], a["attn_mask"], a["dropout_p"], a["is_causal"],
                    a["scale"], a["enable_gqa"], self.processor.route,
                )  # fmt: skip
        if _is_python_tensor_method(func):
            # Called on the tensor, not as ``func``: dynamo before torch 2.12 cannot trace the
            # ``super().<name>(...)`` these methods end in when a mode hands them over
            # (``query.unflatten`` in Wan's processor), but knows the tensor method itself.
            return getattr(args[0], func.__name__)(*args[1:], **kwargs)
        return func(*args, **kwargs)


# Methods of ``torch.Tensor`` written in Python (``torch._tensor``), by name.
_PYTHON_TENSOR_METHODS = {
    name: value for name, value in vars(torch.Tensor).items() if inspect.isfunction(value)
}


def _is_python_tensor_method(func: Any) -> bool:
    """Whether ``func`` is one of `_PYTHON_TENSOR_METHODS` (a lookup dynamo can trace)."""
    return _PYTHON_TENSOR_METHODS.get(getattr(func, "__name__", None)) is func


class SparseAttentionProcessor:
    """Runs ``inner`` with its self-attention computed by the runtime's sparse method.

    Outside a tracked transformer forward (no layout known) it is exactly ``inner``.
    Use `wrap_processor` to build one: it keeps ``inner``'s call signature, which
    diffusers' older ``Attention`` class inspects to filter keyword arguments.
    """

    def __init__(self, inner: Any, layer: int, runtime: SparseRuntime) -> None:
        object.__setattr__(self, "inner", inner)
        object.__setattr__(self, "layer", layer)
        object.__setattr__(self, "runtime", runtime)
        # The custom op's handle on (runtime, layer): a tensor, so that compiled blocks share
        # one graph instead of specializing on the layer number.
        object.__setattr__(self, "route", ops.route_tensor(runtime.key, layer))

    def __call__(self, attn: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        if torch.compiler.is_compiling():
            # No Python state is read here: whether a forward is tracked is the op's question.
            with _CompiledAttentionInterceptor(self):
                return self.inner(attn, *args, **kwargs)
        if self.runtime.tracker.current is None:
            return self.inner(attn, *args, **kwargs)
        interceptor = _AttentionInterceptor(self)
        with interceptor:
            out = self.inner(attn, *args, **kwargs)
        if not interceptor.handled:
            self.runtime.warn_unhandled(self)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        target = self.inner if name in _FORWARDED else self
        object.__setattr__(target, name, value)

    def __repr__(self) -> str:
        return f"SparseAttentionProcessor(layer={self.layer}, inner={type(self.inner).__name__})"


@functools.cache
def _wrapper_class(inner_cls: type) -> type[SparseAttentionProcessor]:
    def __call__(self, attn, *args, **kwargs):
        return SparseAttentionProcessor.__call__(self, attn, *args, **kwargs)

    __call__.__signature__ = inspect.signature(inner_cls.__call__)
    return type(f"Sparse{inner_cls.__name__}", (SparseAttentionProcessor,), {"__call__": __call__})


def wrap_processor(inner: Any, layer: int, runtime: SparseRuntime) -> SparseAttentionProcessor:
    """A `SparseAttentionProcessor` around ``inner`` that reports ``inner``'s call signature."""
    return _wrapper_class(type(inner))(inner, layer, runtime)
