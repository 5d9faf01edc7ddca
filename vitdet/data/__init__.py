"""Datasets: checked COCO-format registration (``coco``) and a synthetic shapes set
(``synthetic``, ``python -m vitdet.data.synthetic --root datasets/synthetic``)."""

from .coco import CocoCheck, DatasetError, check_coco, num_classes, register_coco

__all__ = ["CocoCheck", "DatasetError", "check_coco", "num_classes", "register_coco"]
