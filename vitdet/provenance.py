"""What a training checkpoint says about the run that wrote it, so that the checkpoint alone is
enough to predict: the config file and overrides it was trained with, and the class names (and
dataset category ids) of its training data.

Stored as plain data under ``"provenance"`` in every checkpoint ``vitdet.engine`` writes, and
read with ``torch.load(weights_only=True)`` like the weights. Reading it never runs anything
the file says: a recorded config file is only used when it exists on this machine, and recorded
overrides that would name a callable (``_target_``) are refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import CheckpointError, read_run_state

__all__ = ["PROVENANCE_KEY", "Provenance", "read_provenance"]

PROVENANCE_KEY = "provenance"


@dataclass(frozen=True)
class Provenance:
    """The config a model was trained with, and the classes of its training data."""

    config_file: str
    overrides: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()  # thing classes in the model's output order; () if none
    category_ids: tuple[int, ...] = ()  # the dataset's category id of each class, if known

    def to_dict(self) -> dict:
        return {
            "config_file": self.config_file,
            "overrides": list(self.overrides),
            "classes": list(self.classes),
            "category_ids": list(self.category_ids),
        }

    @classmethod
    def from_dict(cls, data: Mapping, *, path: str = "checkpoint") -> Provenance:
        try:
            provenance = cls(
                config_file=str(data["config_file"]),
                overrides=tuple(str(o) for o in data.get("overrides", ())),
                classes=tuple(str(c) for c in data.get("classes", ())),
                category_ids=tuple(int(i) for i in data.get("category_ids", ())),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: malformed '{PROVENANCE_KEY}' record ({e})") from e
        if provenance.category_ids and len(provenance.category_ids) != len(provenance.classes):
            raise CheckpointError(f"{path}: '{PROVENANCE_KEY}' has ids not matching its classes")
        return provenance

    def config_path(self) -> Path:
        """The recorded config file, if it exists here (as recorded, or relative to the current
        folder); raises ``FileNotFoundError`` naming it otherwise."""
        path = Path(self.config_file)
        if path.is_file():
            return path
        raise FileNotFoundError(
            f"the checkpoint was trained with the config {self.config_file}, which is not on "
            "this machine: pass --config-file"
        )

    def safe_overrides(self) -> list[str]:
        """The recorded overrides; one that would set a ``_target_`` (a callable to call) is
        refused, since the record comes from a file."""
        unsafe = [o for o in self.overrides if "_target_" in o.split("=", 1)[0]]
        if unsafe:
            raise CheckpointError(f"refusing recorded overrides that name callables: {unsafe}")
        return list(self.overrides)


def read_provenance(path: str | os.PathLike) -> Provenance | None:
    """The provenance record of a training checkpoint; None for files without one (released
    model-zoo pickles, converted or third-party weights)."""
    payload = read_run_state_or_none(str(path))
    record = payload.get(PROVENANCE_KEY) if payload else None
    if record is None:
        return None
    if not isinstance(record, Mapping):
        raise CheckpointError(f"{path}: '{PROVENANCE_KEY}' is not a record")
    return Provenance.from_dict(record, path=str(path))


def read_run_state_or_none(path: str) -> dict | None:
    """The checkpoint payload, or None if the file is not a training checkpoint (other formats
    are the weight loader's business, which reports them properly)."""
    try:
        # Mapped, not read: the predictor reads the weights afterwards, once.
        return read_run_state(path, mmap=True)
    except CheckpointError:
        return None
