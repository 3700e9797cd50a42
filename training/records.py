"""Run records of the training scripts: JSON lists that grow one run at a time."""

from __future__ import annotations

import json
import os
from pathlib import Path

from dit_sparse.utils import atomic_write_text


def append_json_record(path: str | os.PathLike, record: dict) -> None:
    """Add ``record`` to the JSON list in ``path`` (a new list if there is no file yet),
    rewriting the file atomically so a failed write leaves the old list whole."""
    path = Path(path)
    records = json.loads(path.read_text()) if path.exists() else []
    atomic_write_text(path, json.dumps([*records, record], indent=2) + "\n")
