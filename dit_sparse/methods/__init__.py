"""Sparse attention methods: one config class per method, looked up by name."""

from __future__ import annotations

import importlib
from typing import Any

from .base import AttentionCall, SparseMethod
from .dense import Dense

# name -> (module, class); modules load on first use so `import dit_sparse` stays light.
METHODS: dict[str, tuple[str, str]] = {
    "dense": ("dense", "Dense"),
    "radial": ("radial", "Radial"),
    "svg": ("svg", "SparseVideoGen"),
    "adaspa": ("adaspa", "AdaSpa"),
    "svg2": ("svg2", "SparseVideoGen2"),
}


def method_class(name: str) -> type[SparseMethod]:
    """The config class registered under ``name`` (``"dense"``, ``"radial"``, ``"svg"``, ...)."""
    key = name.lower().replace("-", "_")
    if key not in METHODS:
        raise ValueError(f"unknown method {name!r}; accepted: {', '.join(METHODS)}")
    module, cls = METHODS[key]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def resolve_method(method: str | SparseMethod, **options: Any) -> SparseMethod:
    """A method config from a name (plus options) or a config instance (no options then)."""
    if isinstance(method, SparseMethod):
        if options:
            raise TypeError("pass options either in the config object or as keywords, not both")
        return method
    if isinstance(method, str):
        cls = method_class(method)
        try:
            return cls(**options)
        except TypeError as err:
            raise TypeError(f"bad option for method {method!r}: {err}") from None
    raise TypeError(
        f"method must be a name ({', '.join(METHODS)}) or a SparseMethod config, got {type(method).__name__}"
    )


__all__ = ["METHODS", "AttentionCall", "Dense", "SparseMethod", "method_class", "resolve_method"]
