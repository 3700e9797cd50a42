"""diffusers' step caches beside dit_sparse: configs by name, with what each model needs.

A step cache (``transformer.enable_cache(config)``) skips transformer work on steps it judges
redundant: all blocks but the first (FirstBlockCache, MagCache, SeaCache), attention or other
modules (PyramidAttentionBroadcast, FasterCache, TaylorSeer). It composes with a sparse method
in either order, and either can be removed leaving the other (tests/test_caches.py): the
cache's hooks sit on blocks and modules, dit_sparse's step tracking on the transformer and its
processors inside the attention modules. A skipped block or module never calls its attention,
so it leaves no attention record; the step tracking still sees every transformer forward, so
steps (the dense warm-up, SVG's profiling, AdaSpa's search steps) count denoising steps, and
``handle.report()`` lists the forwards a cache skipped layers of.

Some configs need model facts their defaults get wrong. TaylorSeer hooks modules whose names
fully match ``^blocks.*attn`` by default: Wan's are ``blocks.N.attn1``/``attn2``, so nothing is
hooked and the cache silently does nothing. An adapter may define
``cache_fields(config_name) -> dict`` with the fields its model needs (`WanAdapter` does);
`cache_config` fills them in, under the fields given explicitly. PyramidAttentionBroadcast and
FasterCache need the pipeline's current timestep, MagCache the step count and magnitude
ratios (`calibrate_mag_ratios` measures them; `cache_config` takes them as
``mag_ratios=[...]``).
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Callable
from typing import Any

import torch

from .pipelines.registry import get_adapter

# diffusers' config class names, as `--cache` takes them (also without "Config", any case).
CACHE_NAMES = (
    "FirstBlockCacheConfig",
    "MagCacheConfig",
    "TaylorSeerCacheConfig",
    "FasterCacheConfig",
    "PyramidAttentionBroadcastConfig",
    "SeaCacheConfig",
    "TextKVCacheConfig",  # lossless: reuses text K/V, skips no step
)
_TIMESTEP_CALLBACK = ("PyramidAttentionBroadcastConfig", "FasterCacheConfig")


def cache_class_name(name: str) -> str:
    """The diffusers config class ``name`` means: ``"FirstBlockCache"``, ``"first_block_cache"``
    or ``"FirstBlockCacheConfig"`` all give ``"FirstBlockCacheConfig"``."""
    wanted = name.lower().replace("_", "").replace("-", "").removesuffix("config")
    for known in CACHE_NAMES:
        if known.lower().removesuffix("config") == wanted:
            return known
    raise ValueError(f"unknown cache {name!r}; accepted: {', '.join(CACHE_NAMES)}")


def parse_cache_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"NAME[:k=v,...]"`` -> (config class name, fields). Values are Python literals
    (``0.1``, ``(100, 800)``, ``[1.0, 0.9]``, ``None``, ``['blocks\\.\\d+']``); anything else
    is kept as a string."""
    name, _, rest = spec.partition(":")
    fields: dict[str, Any] = {}
    for item in _split_top_level(rest):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"cache option {item!r} in {spec!r} is not key=value")
        try:
            with warnings.catch_warnings():
                # Regexes such as ['blocks\.\d+'] are meant as typed: an unknown escape stays a
                # backslash (Python's rule), without the warning (Syntax- or Deprecation-,
                # by Python version) that parsing it raises.
                warnings.simplefilter("ignore")
                fields[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            fields[key.strip()] = value.strip()
    return cache_class_name(name.strip()), fields


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets, so ``a=(1, 2),b=3`` is two items."""
    items, depth, current = [], 0, ""
    for char in text:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    return [item for item in (*items, current) if item.strip()]


def cache_config(
    target: Any,
    spec: str,
    *,
    num_steps: int | None = None,
    timestep: Callable[[], Any] | None = None,
):
    """The diffusers config ``spec`` (``"NAME[:k=v,...]"``) names, for ``target``'s transformer.

    Fields come from, lowest first: the adapter's ``cache_fields`` for the config, what the
    run gives (``num_inference_steps`` from ``num_steps``; ``current_timestep_callback`` from
    ``timestep``, by default ``target.current_timestep`` when ``target`` is a pipeline), then
    ``spec``'s own.
    """
    import diffusers.hooks

    name, given = parse_cache_spec(spec)
    transformer = getattr(target, "transformer", target)
    fields = dict(_adapter_fields(transformer, name))
    if name == "MagCacheConfig" and num_steps is not None:
        fields["num_inference_steps"] = num_steps
    if name in _TIMESTEP_CALLBACK:
        if timestep is None and not isinstance(target, torch.nn.Module):
            timestep = lambda: target.current_timestep  # noqa: E731
        if timestep is not None:
            fields["current_timestep_callback"] = timestep
    fields.update(given)
    return getattr(diffusers.hooks, name)(**fields)


def _adapter_fields(transformer: torch.nn.Module, name: str) -> dict[str, Any]:
    try:
        adapter = get_adapter(transformer)
    except ValueError:
        return {}
    fields = getattr(adapter, "cache_fields", None)
    return fields(name) if fields is not None else {}


def transformers_of(target: Any) -> list[torch.nn.Module]:
    """The transformers a pipeline holds (``transformer``, ``transformer_2``), or ``target``."""
    if isinstance(target, torch.nn.Module):
        return [target]
    found = (getattr(target, n, None) for n in ("transformer", "transformer_2"))
    return [m for m in found if isinstance(m, torch.nn.Module)]


def enable_cache(
    target: Any,
    spec: str,
    *,
    num_steps: int | None = None,
    calibrate: Callable[[], Any] | None = None,
    **run: Any,
) -> Any:
    """``enable_cache`` on every transformer of ``target`` with `cache_config(target, spec,
    num_steps=..., **run)`; returns the config. A MagCache spec without ``mag_ratios`` is
    calibrated first with ``calibrate()`` (one generation at ``num_steps``, see
    `calibrate_mag_ratios`) when given."""
    name, given = parse_cache_spec(spec)
    if name == "MagCacheConfig" and "mag_ratios" not in given and calibrate is not None:
        if num_steps is None:
            raise ValueError("calibrating MagCache needs the run's num_steps")
        ratios = calibrate_mag_ratios(target, calibrate, num_steps)
        spec = f"{spec}{',' if ':' in spec else ':'}mag_ratios={ratios}"
    config = cache_config(target, spec, num_steps=num_steps, **run)
    for transformer in transformers_of(target):
        transformer.enable_cache(config)
    return config


def disable_cache(target: Any) -> None:
    """``disable_cache`` on every transformer of ``target`` that has a cache enabled."""
    for transformer in transformers_of(target):
        if getattr(transformer, "_cache_config", None) is not None:
            transformer.disable_cache()


def calibrate_mag_ratios(target: Any, generate: Callable[[], Any], num_steps: int) -> list[float]:
    """MagCache's magnitude ratios for ``target``'s transformer, measured over one generation.

    Runs ``generate()`` (the pipeline, at ``num_steps`` steps) under
    ``MagCacheConfig(calibrate=True)``, which skips nothing, and keeps the ratios diffusers
    computes for the first guidance branch (it prints them and drops them at the end of the
    run). Any cache already enabled is replaced and not restored.
    """
    from diffusers.hooks import MagCacheConfig
    from diffusers.hooks.mag_cache import _MAG_CACHE_BLOCK_HOOK

    transformer = transformers_of(target)[0]
    disable_cache(transformer)
    transformer.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=num_steps))
    runs: dict[int, list[float]] = {}
    tail = next(
        hook
        for module in transformer.modules()
        for hook in [getattr(getattr(module, "_diffusers_hook", None), "hooks", {})]
        for hook in [hook.get(_MAG_CACHE_BLOCK_HOOK)]
        if hook is not None and hook.is_tail
    )
    step = tail._perform_calibration_step

    def record(state, residual):
        step(state, residual)
        runs.setdefault(id(state), state.calibration_ratios)

    tail._perform_calibration_step = record
    try:
        generate()
    finally:
        disable_cache(transformer)
    ratios = next(iter(runs.values()), [])
    if len(ratios) != num_steps:
        raise RuntimeError(f"MagCache calibration saw {len(ratios)} of {num_steps} steps")
    return list(ratios)


def add_cache_argument(parser: Any, *, repeatable: bool) -> None:
    """``--cache NAME[:k=v,...]`` for ``dit-sparse generate`` (one) and ``bench`` (repeatable:
    each cache runs with every method setting, beside the settings without a cache)."""
    more = (
        " Repeatable: each cache runs with every method (dense: the cache alone), beside the "
        "methods without one."
        if repeatable
        else ""
    )
    parser.add_argument(
        "--cache",
        action="append" if repeatable else "store",
        default=[] if repeatable else None,
        metavar="NAME[:K=V,...]",
        help=(
            "a diffusers step cache, e.g. FirstBlockCache:threshold=0.1 or "
            f"TaylorSeerCache:cache_interval=2; names: {', '.join(CACHE_NAMES)}. MagCache "
            f"without mag_ratios=[...] is calibrated with one extra generation.{more}"
        ),
    )


def check_cache_spec(spec: str) -> str:
    """``spec`` if it parses (`parse_cache_spec`), else ``ValueError``: for checks before a
    model loads."""
    parse_cache_spec(spec)
    return spec
