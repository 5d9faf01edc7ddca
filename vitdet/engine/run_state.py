"""Checkpoints of a training run (model, optimizer, scheduler, iteration, trainer and hook
state): written atomically, read back safely and strictly.

Writing: every file goes through ``write_atomically``, so a crash mid-write leaves the previous
checkpoint and the ``last_checkpoint`` pointer untouched.

Reading (``--resume``): through ``vitdet.checkpoint`` like any other weights: ``torch.load``
with ``weights_only=True`` (tensors and plain containers, no code), and the model's state dict
checked key for key and shape for shape (format ``own``) before any tensor is copied.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from fvcore.common.checkpoint import Checkpointer

from vitdet.checkpoint import load_state_dict_strict, read_run_state
from vitdet.provenance import PROVENANCE_KEY, Provenance

from .atomic import write_atomically

__all__ = ["RunCheckpointer"]


class RunCheckpointer(Checkpointer):
    """fvcore's ``Checkpointer`` (detectron2's periodic hook drives it) with atomic writes and
    safe, strict reads; a mismatch raises ``vitdet.checkpoint.CheckpointError``.

    ``provenance``: written into every checkpoint (``vitdet.provenance``), so that inference
    needs the checkpoint alone.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        save_dir: str = "",
        *,
        provenance: Provenance | None = None,
        **checkpointables: Any,
    ) -> None:
        super().__init__(model, save_dir, **checkpointables)
        self.provenance = provenance

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        if self.provenance is not None:
            data[PROVENANCE_KEY] = self.provenance.to_dict()
        data.update(kwargs)

        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        write_atomically(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        write_atomically(path, lambda f: f.write(last_filename_basename.encode()))

    def _load_file(self, f: str) -> dict[str, Any]:
        return read_run_state(f)

    def _load_model(self, checkpoint: dict[str, Any]) -> None:
        checkpoint.pop(PROVENANCE_KEY, None)
        state = checkpoint.pop("model")
        load_state_dict_strict(self.model, state, source_format="own", log=False)
        return None  # nothing incompatible: a mismatch has raised
