"""dit-sparse: sparse attention for video diffusion transformers in diffusers.

handle = dit_sparse.apply(pipe, "radial")   # or dit_sparse.Radial(...), "svg", "svg2", "adaspa"
video = pipe(...).frames[0]
print(handle.report())
dit_sparse.remove(pipe)
dit_sparse.tune(pipe, prompts, "psnr=24").save("profile.json")  # then apply(pipe, "profile.json")
"""

from __future__ import annotations

import importlib
from typing import Any

from .api import SparseHandle, apply, attached, handle_of, remove
from .kernels.compile_errors import KernelCompileError
from .layout import TokenLayout
from .methods import Dense, SparseMethod, method_class
from .plan import BlockPlan

__version__ = "0.1.0"

_LAZY_METHODS = {
    "Radial": "radial",
    "SparseVideoGen": "svg",
    "AdaSpa": "adaspa",
    "SparseVideoGen2": "svg2",
}


# name -> (module, attribute) of the tuning API, loaded on first use too.
_LAZY_TUNING = {"tune": ("tuning.tuner", "tune"), "Profile": ("tuning.profile", "Profile")}


def __getattr__(name: str) -> Any:
    # Method configs load on first use, keeping `import dit_sparse` light.
    if name in _LAZY_METHODS:
        return method_class(_LAZY_METHODS[name])
    if name in _LAZY_TUNING:
        module, attribute = _LAZY_TUNING[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
    raise AttributeError(f"module 'dit_sparse' has no attribute {name!r}")


__all__ = [
    "AdaSpa",
    "BlockPlan",
    "Dense",
    "KernelCompileError",
    "Profile",
    "Radial",
    "SparseHandle",
    "SparseMethod",
    "SparseVideoGen",
    "SparseVideoGen2",
    "TokenLayout",
    "apply",
    "attached",
    "handle_of",
    "remove",
    "tune",
]
