"""Small shared helpers: one-time warnings and whole-or-nothing file writes."""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

_WARNED: set[str] = set()


def warn_once(key: str, message: str, category: type[Warning] = UserWarning) -> None:
    """Warn with ``message`` the first time ``key`` is seen in this process."""
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, category, stacklevel=3)


def _new_file_mode() -> int:
    """The mode ``open`` gives a new file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    An exception in the block, ``KeyboardInterrupt`` included, removes the temporary file and
    leaves ``path`` as it was. The temporary file keeps ``path``'s suffix, so writers that pick
    a format by suffix work, and ``path`` gets the mode a plainly written file would.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        tmp_path.chmod(_new_file_mode())  # mkstemp's file is private (0600)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def check_writable(path: str | os.PathLike) -> None:
    """Raise ``ValueError`` saying why ``path`` cannot be written as a file, before any work
    that would end in writing it: a directory, a missing folder, or no permission there."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a file name")
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"{path}: folder {folder} does not exist")
    try:  # the same test the write will pass: create a file there (root passes os.access)
        with tempfile.NamedTemporaryFile(prefix=f".{path.stem}.", dir=folder):
            pass
    except OSError as err:
        raise ValueError(
            f"{path}: cannot write in folder {folder}: {err.strerror or err}"
        ) from None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)
