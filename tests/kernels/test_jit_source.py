"""Triton source that the interpreter runs but the GPU compiler rejects.

The CPU tests run kernels in Triton's interpreter, which executes them as Python; the compiler
that runs on a GPU accepts less. A chained comparison (``0 < a < b``) in a jitted function
passes every interpreter test and fails on the GPU with "simultaneous multiple comparison is not
supported", so the kernels' source is checked for it here.
"""

import ast
from pathlib import Path

import dit_sparse.kernels

KERNEL_DIR = Path(dit_sparse.kernels.__file__).parent


def _is_jitted(node: ast.FunctionDef) -> bool:
    return any("jit" in ast.unparse(decorator) for decorator in node.decorator_list)


def chained_comparisons(source: str) -> list[str]:
    """``function: expression`` for every chained comparison inside a jitted function."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and _is_jitted(node):
            found += [
                f"{node.name}: {ast.unparse(inner)}"
                for inner in ast.walk(node)
                if isinstance(inner, ast.Compare) and len(inner.ops) > 1
            ]
    return found


def test_the_check_finds_a_chained_comparison():
    source = "@triton.jit\ndef k(N: tl.constexpr):\n    G: tl.constexpr = 1 if 0 < N < 8 else 2\n"
    assert chained_comparisons(source) == ["k: 0 < N < 8"]
    assert chained_comparisons(source.replace("@triton.jit\n", "")) == []


def test_jitted_kernels_have_no_chained_comparison():
    files = sorted(KERNEL_DIR.glob("*.py"))
    assert len(files) >= 5
    found = {f.name: chained_comparisons(f.read_text()) for f in files}
    assert not {name: hits for name, hits in found.items() if hits}
