"""Data: checked COCO-format registration (``coco``), a seeded synthetic shapes set
(``synthetic``), the image reader every path uses (``images``), the mapper and the resumable
training loaders (``mapper``, ``loader``), unlabeled image folders for MAE (``unlabeled``)."""

from .coco import (
    CocoCheck,
    DatasetError,
    check_coco,
    load_checked_dicts,
    num_classes,
    register_coco,
)

__all__ = [
    "CocoCheck",
    "DatasetError",
    "check_coco",
    "load_checked_dicts",
    "num_classes",
    "register_coco",
]
