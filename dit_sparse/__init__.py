"""dit-sparse: sparse attention for video diffusion transformers in diffusers.

handle = dit_sparse.apply(pipe, "radial")   # or dit_sparse.Radial(...), "svg", "svg2", "adaspa"
video = pipe(...).frames[0]
print(handle.report())
dit_sparse.remove(pipe)
"""

from __future__ import annotations

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


def __getattr__(name: str) -> Any:
    # Method configs load on first use, keeping `import dit_sparse` light.
    if name in _LAZY_METHODS:
        return method_class(_LAZY_METHODS[name])
    raise AttributeError(f"module 'dit_sparse' has no attribute {name!r}")


__all__ = [
    "AdaSpa",
    "BlockPlan",
    "Dense",
    "KernelCompileError",
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
]
