"""Which room imports which: the library never imports the CLI or ``training/``."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Imports every module of the package, then names those of the CLI and of training/ loaded.
PROBE = """
import importlib, pkgutil, sys
import dit_sparse
for module in pkgutil.walk_packages(dit_sparse.__path__, "dit_sparse."):
    if module.name != "dit_sparse.cli":
        importlib.import_module(module.name)
training = {"shapes_data", "attention_probe", "records", "train_shapes", "checkpoint"}
print(sorted(name for name in sys.modules if name == "dit_sparse.cli" or name in training))
"""


def test_library_imports_neither_the_cli_nor_training_code():
    # A fresh interpreter at the repository root, without training/ on its path (conftest
    # puts it on this process's path).
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
