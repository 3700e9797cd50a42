"""Imported by the kernel tests before dit_sparse: runs the Triton kernels on CPU, through
Triton's interpreter.

``triton.jit`` picks the interpreter when a kernel module is imported, so ``TRITON_INTERPRET=1``
is set before dit_sparse's kernels are first imported. It is then put back as it was, so that
tests elsewhere keep the fast torch reference on CPU, and the ``triton_interpreter`` fixture
sets it again around each kernel test. (Not a ``conftest.py``: tests elsewhere import their
helpers from a module named ``conftest``.)
"""

import os

import pytest

_previous = os.environ.get("TRITON_INTERPRET")
os.environ["TRITON_INTERPRET"] = "1"
from dit_sparse.kernels import launch  # noqa: E402

if _previous is None:
    del os.environ["TRITON_INTERPRET"]
else:
    os.environ["TRITON_INTERPRET"] = _previous


@pytest.fixture
def triton_interpreter(monkeypatch):
    if not launch.INTERPRETED:
        pytest.fail(
            "dit_sparse.kernels was imported before the kernel tests could select Triton's "
            "interpreter: run them first, or with TRITON_INTERPRET=1"
        )
    monkeypatch.setenv("TRITON_INTERPRET", "1")
