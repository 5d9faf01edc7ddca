"""Files that an interrupted write cannot destroy: written to ``<name>.tmp``, flushed to disk,
renamed over the target with ``os.replace`` (atomic on POSIX), and the folder flushed so that
the rename itself survives a power loss."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import IO, Any

__all__ = ["write_atomically"]


def write_atomically(path: str, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(f)`` on a temporary file next to ``path``, then rename it to ``path``."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(os.path.dirname(os.path.abspath(path)))
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
