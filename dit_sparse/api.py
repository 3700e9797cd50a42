"""The public calls: `apply`, `remove`, `attached`, and the `SparseHandle` they return."""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from .methods import SparseMethod, resolve_method
from .pipelines.registry import get_adapter
from .runtime import SparseRuntime
from .stats import StatsRecorder, format_cache_skips, format_report, summarize

if TYPE_CHECKING:
    from .layout import TokenLayout
    from .tuning.profile import Profile

_ATTR = "_dit_sparse_handle"
_TRANSFORMER_NAMES = ("transformer", "transformer_2")


class SparseHandle:
    """What `apply` returns: the attached method, its statistics and the way back."""

    def __init__(
        self, target: Any, method: SparseMethod, runtimes: list[SparseRuntime], stats: StatsRecorder
    ):
        self.target = target
        self.method = method
        self.runtimes = runtimes
        self._stats = stats
        self.owns_cache = False  # a profile's step cache, enabled by `apply`, gone at `remove`

    def records(self) -> list[dict[str, Any]]:
        """One dict per attention call: transformer, layer, step, branch, kind, density, seconds."""
        return self._stats.records()

    def forwards(self) -> list[dict[str, Any]]:
        """One dict per transformer forward: transformer, step, branch, seq_len, ``layers``
        (attention layers due) and ``layers_run`` (fewer where a step cache skipped some)."""
        return self._stats.forwards()

    def summary(self) -> dict[str, Any]:
        """Totals: calls, attention_seconds, mean_density, and ``layers_skipped``: the share
        of attention layer calls a step cache skipped (0.0 without one)."""
        forwards = self.forwards()
        due = sum(f["layers"] for f in forwards)
        skipped = 1.0 - sum(f["layers_run"] for f in forwards) / due if due else 0.0
        return {**summarize(self.records()), "layers_skipped": skipped}

    def report(self) -> str:
        """Per step and layer: plans used, density, calls, attention time, and the steps a
        step cache skipped layers of (text)."""
        records = self.records()
        extra = self.method.report_lines(records) + format_cache_skips(self.forwards())
        return format_report(self.method.name, records, extra)

    def layouts(self) -> list[TokenLayout]:
        """The token layouts the attached transformers have attended over so far."""
        return sorted({layout for r in self.runtimes for layout in r.layouts}, key=repr)

    def reset_stats(self) -> None:
        self._stats.clear()

    def remove(self) -> None:
        remove(self.target)


def _transformers(target: Any) -> list[tuple[str, torch.nn.Module]]:
    if isinstance(target, torch.nn.Module):
        return [("transformer", target)]
    found = [(n, getattr(target, n, None)) for n in _TRANSFORMER_NAMES]
    found = [(n, m) for n, m in found if isinstance(m, torch.nn.Module)]
    if not found:
        raise TypeError(
            "apply() takes a diffusers pipeline with a `transformer` (and optionally "
            f"`transformer_2`) or a transformer module, got {type(target).__name__}"
        )
    return found


def _num_steps_fallback(target: Any):
    """For callers without ``num_inference_steps`` in the cache context: ask the scheduler."""
    if isinstance(target, torch.nn.Module):
        return lambda: None
    ref = weakref.ref(target)

    def num_steps() -> int | None:
        pipe = ref()
        timesteps = getattr(getattr(pipe, "scheduler", None), "timesteps", None)
        return len(timesteps) if timesteps is not None else None

    return num_steps


def _profile(method: Any) -> Profile | None:
    """The `Profile` ``method`` is or names (a path ending in ``.json``), else None."""
    from .tuning.profile import Profile

    if isinstance(method, Profile):
        return method
    if isinstance(method, os.PathLike) or (
        isinstance(method, str) and method.lower().endswith(".json")
    ):
        return Profile.load(method)
    return None


def apply(
    target: Any, method: str | os.PathLike | SparseMethod | Profile = "dense", **options: Any
) -> SparseHandle:
    """Attach a sparse attention method to a pipeline (every transformer it holds) or a transformer.

    ``method`` is a name (``"dense"``, ``"radial"``, ``"svg"``, ``"adaspa"``) with its options as
    keywords, a config object (``dit_sparse.Radial(...)``), or a profile that `dit_sparse.tune`
    wrote (its path, ``"profile.json"``, or the `Profile`): its method and options, with a
    one-time warning if the model or the token layout is not the one it was tuned on; a step
    cache it names is enabled on ``target`` and disabled again by `remove`. A method already
    attached is replaced. Raises ``ValueError`` for an unsupported transformer class.
    """
    profile = _profile(method)
    if profile is not None and options:
        raise TypeError("a profile carries its own options; pass none beside it")
    config = profile.method_config() if profile else resolve_method(method, **options)
    transformers = _transformers(target)
    adapters = [get_adapter(module) for _, module in transformers]
    remove(target)
    if profile is not None:
        profile.check_model(target)
    stats = StatsRecorder()
    on_layout = profile.check_layout if profile else None
    runtimes = [
        SparseRuntime(module, name, config, adapter, stats, _num_steps_fallback(target), on_layout)
        for (name, module), adapter in zip(transformers, adapters)
    ]
    for runtime in runtimes:
        runtime.attach()
    handle = SparseHandle(target, config, runtimes, stats)
    if profile is not None and profile.cache is not None:
        from . import caches

        caches.enable_cache(target, profile.cache, num_steps=profile.request["steps"])
        handle.owns_cache = True
    setattr(target, _ATTR, handle)
    return handle


def remove(target: Any) -> None:
    """Detach dit_sparse; the pipeline computes exactly what it did before `apply`. No-op if clean."""
    handle = getattr(target, _ATTR, None)
    if handle is None:
        return
    for runtime in handle.runtimes:
        runtime.detach()
    if handle.owns_cache:
        from . import caches

        caches.disable_cache(target)
    delattr(target, _ATTR)


def handle_of(target: Any) -> SparseHandle | None:
    """The handle attached to ``target``, if any."""
    return getattr(target, _ATTR, None)


@contextlib.contextmanager
def attached(
    target: Any, method: str | SparseMethod = "dense", **options: Any
) -> Iterator[SparseHandle]:
    """``with attached(pipe, "radial"): ...``: `apply` on entry, `remove` on exit."""
    handle = apply(target, method, **options)
    try:
        yield handle
    finally:
        remove(target)
