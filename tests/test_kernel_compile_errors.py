"""A kernel the GPU's compiler rejects: the user gets an error naming the kernel, the Triton
version and the method, and the pipeline is left clean (`remove` gives the dense output back).

The failure is a real one from Triton's compiler (a front-end rejection, compiled for sm_90 on
the CPU), raised from inside a method's ``attend`` during a pipeline call. It runs in a
subprocess without ``TRITON_INTERPRET``, since under the interpreter ``triton.jit`` makes no
compilable kernel.
"""

import os
import subprocess
import sys

import pytest
import torch

from dit_sparse.kernels.compile_errors import KernelCompileError, compile_failure


def test_errors_from_elsewhere_are_not_compile_failures():
    try:
        torch.zeros(2) @ torch.zeros(3)
    except RuntimeError as error:
        assert compile_failure(error) is None
    error = KernelCompileError("_k", "svg", RuntimeError("PassManager::run failed"))
    assert compile_failure(error) is None  # never wrapped twice
    assert "_k" in str(error) and "'svg'" in str(error) and "PassManager::run failed" in str(error)


def test_a_kernel_that_fails_to_compile_names_itself_and_leaves_the_pipeline_clean():
    triton = pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"KernelCompileError: Triton {triton.__version__} could not compile the kernel " in (
        done.stdout
    ), done.stdout
    assert "_rejected_by_the_compiler (needed by method 'uncompilable')" in done.stdout
    assert "CompileTimeAssertionFailure" in done.stdout
    assert "tracker cleared: True" in done.stdout
    assert "dense output after remove: True" in done.stdout


def _run() -> None:
    from dataclasses import dataclass

    import triton
    import triton.language as tl
    from conftest import run_pipe
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    import dit_sparse
    from dit_sparse.methods import SparseMethod
    from dit_sparse.pipelines.presets import build_preset

    @triton.jit
    def _rejected_by_the_compiler(X, N: tl.constexpr):
        tl.static_assert(N > 1, "rejected on purpose")
        tl.store(X, N)

    @dataclass
    class Uncompilable(SparseMethod):
        name = "uncompilable"

        def attend(self, q, k, v, call):
            source = ASTSource(
                _rejected_by_the_compiler, signature={"X": "*fp32", "N": "constexpr"},
                constexprs={"N": 1},
            )  # fmt: skip
            triton.compile(source, target=GPUTarget("cuda", 90, 32))
            raise AssertionError("the compiler accepted the kernel")

    pipe = build_preset("tiny-wan")
    pipe.set_progress_bar_config(disable=True)
    before = run_pipe(pipe, 1.0, steps=2)
    handle = dit_sparse.apply(pipe, Uncompilable(dense_steps=1))
    try:
        run_pipe(pipe, 1.0, steps=2)
    except dit_sparse.KernelCompileError as error:
        print(f"KernelCompileError: {error}")
    print("tracker cleared:", handle.runtimes[0].tracker.current is None)
    dit_sparse.remove(pipe)
    print("dense output after remove:", torch.equal(run_pipe(pipe, 1.0, steps=2), before))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(__file__))
    _run()
