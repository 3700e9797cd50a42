"""`SparseRuntime`: one transformer, its method, its processors, its step tracking."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from . import ops
from .kernels.compile_errors import KernelCompileError, compile_failure
from .layout import TokenLayout
from .methods.base import AttentionCall, SparseMethod
from .parallel import head_partition
from .pipelines.registry import ModelAdapter
from .processor import SparseAttentionProcessor, wrap_processor
from .stats import AttentionRecord, CallTimer, ForwardRecord, StatsRecorder
from .text_padding import attend_without_padding, text_padding
from .tracking import StepTrackingHook, TransformerCall, attach_tracking, detach_tracking
from .utils import warn_once


class SparseRuntime:
    """Attaches ``method`` to one transformer; `detach` restores it exactly."""

    def __init__(
        self,
        transformer: torch.nn.Module,
        name: str,
        method: SparseMethod,
        adapter: ModelAdapter,
        stats: StatsRecorder,
        num_steps_fallback: Callable[[], int | None],
        on_layout: Callable[[TokenLayout], None] | None = None,
    ) -> None:
        self.transformer = transformer
        self.name = name
        self.method = method
        self.adapter = adapter
        self.stats = stats
        self.modules = adapter.attention_modules(transformer)
        self.tracker = StepTrackingHook(adapter, num_steps_fallback, self._record_forward)
        self._original: list[Any] = []
        self.layouts: set[TokenLayout] = set()  # every layout seen (and checked) so far
        self._on_layout = on_layout
        # Unique for the whole process (id() can be reused): the key of this runtime's
        # one-time warnings, and how compiled graphs' attention op finds it.
        self.key = ops.register_runtime(self)
        self._warn_key = f"runtime-{self.key}"

    def _record_forward(self, call: TransformerCall) -> None:
        self.stats.add_forward(
            ForwardRecord(self.name, call.step, call.branch, self.num_layers, call.layout.seq_len)
        )

    @property
    def num_layers(self) -> int:
        return len(self.modules)

    def attach(self) -> None:
        for layer, (_, module) in enumerate(self.modules):
            self._original.append(module.processor)
            module.set_processor(wrap_processor(module.processor, layer, self))
        attach_tracking(self.transformer, self.tracker)

    def detach(self) -> None:
        for (_, module), original in zip(self.modules, self._original):
            if isinstance(module.processor, SparseAttentionProcessor):
                module.set_processor(original)
        self._original.clear()
        detach_tracking(self.transformer)
        ops.unregister_runtime(self.key)
        self.method.reset()

    def _parallel_config(self, layer: int) -> Any:
        processor = self.modules[layer][1].processor
        return getattr(processor, "_parallel_config", None)

    def warn_unhandled(self, processor: SparseAttentionProcessor) -> None:
        backend = getattr(processor.inner, "_attention_backend", None)
        warn_once(
            f"unhandled:{self._warn_key}",
            f"dit_sparse saw no scaled_dot_product_attention call in {type(processor.inner).__name__} "
            f"(attention backend {backend!r}); that layer ran the model's own attention, dense. "
            "Use diffusers' native attention backend (the default) for sparse attention.",
        )

    def _check_layout(self, layout: TokenLayout) -> None:
        if layout not in self.layouts:
            self.method.check_layout(layout)
            if self._on_layout is not None:
                self._on_layout(layout)
            self.layouts.add(layout)

    def _attend_sparse(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, call: AttentionCall
    ) -> torch.Tensor:
        self._check_layout(call.layout)
        return self.method.attend(query, key, value, call)

    def attend(self, layer: int, func: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        """`_attend`, with a kernel that cannot be compiled for this GPU reported as a
        `KernelCompileError` naming it and the method. The generation's step and cache state
        is dropped first, so that the next call (or `remove`, which runs dense) starts clean
        instead of mid-schedule."""
        try:
            return self._attend(layer, func, *args, **kwargs)
        except Exception as error:
            kernel = compile_failure(error)
            if kernel is None:
                raise
            self.tracker.reset_state(self.transformer)
            self.tracker.current = None
            self.method.reset()
            raise KernelCompileError(kernel, self.method.name, error) from error

    def _attend(
        self,
        layer: int,
        func: Callable[..., torch.Tensor],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: torch.Tensor | None,
        dropout_p: float,
        is_causal: bool,
        scale: float | None,
        enable_gqa: bool,
    ) -> torch.Tensor | None:
        """Compute one intercepted SDPA call, or return None to let the original run.

        Only the self-attention over the transformer's whole token layout is taken; other
        calls in the same processor (Wan I2V's image cross-attention) pass through.
        """
        current = self.tracker.current
        layout = current.layout
        heads = head_partition(self._parallel_config(layer), query.shape[1])  # refuses ring
        if query.dim() != 4 or not query.shape[-2] == key.shape[-2] == layout.seq_len:
            return None
        if dropout_p or is_causal or query.shape[1] != key.shape[1]:
            warn_once(
                f"unsupported-sdpa:{self._warn_key}",
                "dit_sparse got an attention call with dropout, is_causal or grouped heads, which "
                "it does not handle; those calls run dense.",
            )
            return None
        call = AttentionCall(
            layout=layout,
            layer=layer,
            num_layers=self.num_layers,
            step=current.step,
            num_steps=current.num_steps,
            branch=current.branch,
            cache=current.cache,
            scale=scale,
            heads=heads,
        )
        self._check_layout(layout)  # refuse at the first step, not after the dense warm-up
        timer = CallTimer(query.device)
        if self.method.runs_dense(call):
            out = (
                None if attn_mask is not None else self.method.attend_dense(query, key, value, call)
            )
            if out is None:
                out = func(*args, **kwargs)
            call.info.setdefault("kind", "dense")
            call.info.setdefault("density", 1.0)
        elif attn_mask is not None:
            # Text padding (HunyuanVideo) is taken out; other masks cannot be: dense.
            padding = text_padding(attn_mask, layout, query.shape[0])
            if padding is None:
                warn_once(
                    f"attn-mask:{self._warn_key}",
                    f"{self.adapter.family} passes an attention mask ({tuple(attn_mask.shape)}, "
                    f"{attn_mask.dtype}) that hides more than padded text tokens, which "
                    f"{self.method.name} cannot take; those calls run dense.",
                )
                out = func(*args, **kwargs)
                call.info.update(kind="dense", density=1.0)
            else:
                out = attend_without_padding(
                    query,
                    key,
                    value,
                    padding,
                    call,
                    self._attend_sparse,
                    lambda rows, k, v, mask: func(
                        rows, k, v, attn_mask=mask, scale=scale, enable_gqa=enable_gqa
                    ),
                )
                call.info.setdefault("kind", "sparse")
        else:
            out = self._attend_sparse(query, key, value, call)
            call.info.setdefault("kind", "sparse")
        self.stats.add(
            AttentionRecord(
                transformer=self.name,
                layer=layer,
                step=call.step,
                branch=call.branch,
                heads=query.shape[1],
                seq_len=layout.seq_len,
                info=call.info,
                timer=timer.stop(),
            )
        )
        return out
