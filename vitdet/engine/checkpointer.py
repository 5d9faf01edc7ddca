"""Checkpoints that an interrupted write cannot destroy.

Every file is written to ``<name>.tmp``, flushed to disk, then renamed over the target with
``os.replace`` (atomic on POSIX): a crash mid-write leaves the previous checkpoint and the
``last_checkpoint`` pointer untouched.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import IO, Any

import torch
from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["AtomicCheckpointer", "write_atomically"]


def write_atomically(path: str, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(f)`` on a temporary file next to ``path``, then rename it to ``path``."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class AtomicCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` with atomic writes and strict loading of its own files.

    Resuming loads a file this class wrote for the same config, so any missing, unexpected or
    reshaped key is an error rather than a warning.
    """

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)

        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        write_atomically(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        write_atomically(path, lambda f: f.write(last_filename_basename.encode()))

    def _load_model(self, checkpoint: Any):
        incompatible = super()._load_model(checkpoint)
        problems = {
            "missing": incompatible.missing_keys,
            "unexpected": incompatible.unexpected_keys,
            "reshaped": [key for key, *_ in incompatible.incorrect_shapes],
        }
        problems = {kind: keys for kind, keys in problems.items() if keys}
        if problems:
            raise RuntimeError(
                "checkpoint does not match the model built from this config: "
                + "; ".join(f"{kind} keys {sorted(keys)}" for kind, keys in problems.items())
            )
        return incompatible
