"""Where the denoising loop is: a stateful diffusers hook on the transformer.

diffusers' pipelines wrap each transformer call in ``transformer.cache_context(name,
step_index=..., num_inference_steps=...)``; that context reaches the ``StateManager`` of every
stateful hook, which keeps one state per context name (``"cond"``, ``"uncond"``,
``"cond_uncond"``). Pipelines that pass no ``step_index`` (Flux, HunyuanVideo, CogVideoX, LTX)
still change the ``timestep`` argument once per step; callers that set no context at all get
one state, ``"default"``. diffusers resets stateful hooks at the end of every pipeline call.

Under ``torch.compile(transformer)`` the hook's ``pre_forward`` and ``post_forward`` run
eagerly (`torch.compiler.disable`): they read the timestep's value and count steps in Python,
which traced would break the graph (``.item()``) and guard on the step number (a recompile
per step). That leaves dynamo one break before the model's forward and one after it, outside
its blocks; the attention op reads what they record at run time (`dit_sparse.ops`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from .layout import TokenLayout
from .pipelines.registry import ModelAdapter

HOOK_NAME = "dit_sparse"


class BranchState(BaseState):
    """Per guidance branch: the step counter for callers without ``step_index``, and the cache
    methods fill (plans, LSE, head kinds)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self, *args: Any, **kwargs: Any) -> None:
        self.step = -1
        self.last_timestep: float | None = None
        self.cache: dict[Any, Any] = {}

    def advance(self, step_index: int | None, timestep: float | None) -> int:
        """Resolve the step: ``step_index``, else a new timestep value, else a new call."""
        if step_index is not None:
            self.step = step_index
        elif timestep is None or timestep != self.last_timestep:
            self.step += 1
        self.last_timestep = timestep
        return self.step


@dataclass
class TransformerCall:
    """What the attention processors of one transformer forward need to know."""

    layout: TokenLayout
    step: int
    num_steps: int | None
    branch: str
    cache: dict[Any, Any] = field(repr=False)


def _timestep_value(timestep: Any) -> float | None:
    if timestep is None:
        return None
    if isinstance(timestep, torch.Tensor):
        # Per-token timesteps (Wan 2.2 TI2V, LTX image-to-video) hold 0 for conditioning
        # tokens at every step; the largest entry is the one that changes.
        return float(timestep.max().item()) if timestep.numel() else None
    return float(timestep)


@functools.cache
def _forward_signature(cls: type) -> inspect.Signature:
    return inspect.signature(cls.forward)


def _timestep_argument(
    module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """The ``timestep`` forward argument, by keyword or at its position in this model's forward."""
    if "timestep" in kwargs:
        return kwargs["timestep"]
    names = [n for n in _forward_signature(type(module)).parameters if n != "self"]
    position = names.index("timestep") if "timestep" in names else None
    return args[position] if position is not None and position < len(args) else None


class StepTrackingHook(ModelHook):
    """Records the layout, step and branch of every transformer forward for the processors."""

    _is_stateful = True

    def __init__(
        self,
        adapter: ModelAdapter,
        num_steps_fallback: Callable[[], int | None],
        on_forward: Callable[[TransformerCall], None] | None = None,
    ) -> None:
        super().__init__()
        self.adapter = adapter
        self.num_steps_fallback = num_steps_fallback
        self.on_forward = on_forward  # told of every forward (a cache may skip its blocks)
        self.state_manager = StateManager(BranchState)
        self.default_state = BranchState()
        self.current: TransformerCall | None = None

    def _context(self):
        try:
            return self.state_manager.context
        except ValueError:
            return None

    @torch.compiler.disable
    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any):
        context = self._context()
        state = self.state_manager.get_state() if context is not None else self.default_state
        step_index = context.step_index if context is not None else None
        timestep = _timestep_value(_timestep_argument(module, args, kwargs))
        step = state.advance(step_index, timestep)
        num_steps = context.num_inference_steps if context is not None else None
        self.current = TransformerCall(
            layout=self.adapter.layout(module, args, kwargs),
            step=step,
            num_steps=num_steps if num_steps is not None else self.num_steps_fallback(),
            branch=context.name if context is not None else "default",
            cache=state.cache,
        )
        if self.on_forward is not None:
            self.on_forward(self.current)
        return args, kwargs

    @torch.compiler.disable
    def post_forward(self, module: torch.nn.Module, output: Any) -> Any:
        self.current = None
        return output

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.state_manager.reset()
        self.default_state.reset()
        return module


def attach_tracking(transformer: torch.nn.Module, hook: StepTrackingHook) -> None:
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    registry.register_hook(hook, HOOK_NAME)
    # The registry caches which modules carry hooks; without this the context misses ours.
    registry.invalidate_child_registries_cache()


def detach_tracking(transformer: torch.nn.Module) -> None:
    registry = getattr(transformer, "_diffusers_hook", None)
    if registry is None or HOOK_NAME not in registry.hooks:
        return
    index = registry._hook_order.index(HOOK_NAME)
    above = registry._fn_refs[index + 1] if index + 1 < len(registry._fn_refs) else None
    if above is not None and above.original_forward is not None:
        # The hook registered after ours has a forward of its own (FasterCache's denoiser) and
        # calls ours through ``original_forward``, which diffusers' `remove_hook` leaves
        # pointing at our wrapper (and it overwrites that hook's own forward instead): point
        # it past ours, then drop our entries.
        above.original_forward = registry._fn_refs[index].forward
        registry.hooks.pop(HOOK_NAME).deinitalize_hook(transformer)
        registry._hook_order.pop(index)
        registry._fn_refs.pop(index)
    else:
        registry.remove_hook(HOOK_NAME, recurse=False)
    # The registry caches which modules carry hooks.
    registry.invalidate_child_registries_cache()
