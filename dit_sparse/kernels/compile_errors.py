"""Telling a Triton kernel that cannot be built for this GPU from any other error.

A kernel is compiled at its first launch, so a compiler that rejects one (a Triton release
whose passes fail on a construct another release accepts, a GPU without the instructions it
needs) shows up in the middle of a generation, as an MLIR or ptxas message that names neither
the kernel nor the method. `compile_failure` recognises such an error by where it was raised;
the runtime turns it into a `KernelCompileError`.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from .launch import HAS_TRITON, triton

# Frames in these parts of the triton package are its compiler (front end, MLIR passes, ptxas)
# and the loading of what it built.
_COMPILER_PARTS = ("compiler", "backends")


class KernelCompileError(RuntimeError):
    """A Triton kernel of dit_sparse could not be compiled or loaded for this GPU.

    ``kernel`` is the kernel's name, ``triton_version`` the Triton that failed, ``method`` the
    sparse method that needed it (None outside a pipeline).
    """

    def __init__(self, kernel: str, method: str | None, error: BaseException) -> None:
        self.kernel = kernel
        self.method = method
        self.triton_version = getattr(triton, "__version__", "unknown")
        needed = f" (needed by method {method!r})" if method else ""
        detail = str(error).strip().splitlines()
        super().__init__(
            f"Triton {self.triton_version} could not compile the kernel {kernel}{needed} for "
            f"this GPU: {type(error).__name__}: {detail[-1] if detail else ''}. The pipeline's "
            "sparse state was reset: dit_sparse.remove(pipe) runs it dense, or try another "
            "method or Triton release, and report this with the message above."
        )


def compile_failure(error: BaseException) -> str | None:
    """The name of the Triton kernel whose compilation or loading raised ``error``, or None
    when ``error`` came from anywhere else (a CUDA error, bad input, out of memory)."""
    if not HAS_TRITON or isinstance(error, KernelCompileError):
        return None
    package = Path(triton.__file__).resolve().parent
    compiler_dirs = tuple(package / part for part in _COMPILER_PARTS)
    from_compiler = isinstance(error, _triton_errors())
    kernel = None
    for frame_file, frame_locals in _frames(error.__traceback__):
        path = Path(frame_file).resolve()
        if any(path.is_relative_to(d) for d in compiler_dirs):
            from_compiler = True
        kernel = kernel or _kernel_name(frame_locals)
    return (kernel or "unknown kernel") if from_compiler else None


def _triton_errors() -> tuple[type[BaseException], ...]:
    from triton.compiler.errors import CompilationError
    from triton.runtime.errors import OutOfResources

    return (CompilationError, OutOfResources)


def _frames(tb: TracebackType | None):
    while tb is not None:
        yield tb.tb_frame.f_code.co_filename, tb.tb_frame.f_locals
        tb = tb.tb_next


def _kernel_name(frame_locals: dict) -> str | None:
    """The kernel a frame of Triton's launch (``JITFunction.run``: ``self``) or compile
    (``compile(src, ...)``: ``src.fn``) path works on."""
    from triton.runtime.jit import JITFunction

    for candidate in (frame_locals.get("self"), getattr(frame_locals.get("src"), "fn", None)):
        if isinstance(candidate, JITFunction):
            return candidate.__name__
    return None
