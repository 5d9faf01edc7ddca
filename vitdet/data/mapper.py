"""detectron2's ``DatasetMapper`` reading images with this project's reader.

Training, evaluation, the demo and MAE pretraining then see the same pixels for the same file
(``vitdet.data.images.read_image``: RGBA over white, 16-bit scaled, palette, EXIF rotation),
where detectron2's own reader differs on several of those.

An image that cannot be read is skipped while training: ``__call__`` logs the file once and
returns None, and the resumable loader (``vitdet.data.loader``) lets the next record stand in
and counts it. At test time every image counts, so an unreadable one is an error
(``ImageReadError`` names the file).
"""

from __future__ import annotations

import copy
import logging

import detectron2.data.transforms as T
import numpy as np
import torch
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils

from .images import ImageReadError, read_image

__all__ = ["DetectionMapper"]

logger = logging.getLogger(__name__)

CHANNEL_ORDERS = ("RGB", "BGR")


class DetectionMapper(DatasetMapper):
    """A detection record -> the model's input dict, as ``DatasetMapper`` with the same
    arguments for instance detection and segmentation (no keypoints, no precomputed proposals);
    images in ``image_format`` "RGB" or "BGR"."""

    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: list,
        image_format: str,
        use_instance_mask: bool = False,
        instance_mask_format: str = "polygon",
        recompute_boxes: bool = False,
    ) -> None:
        if image_format not in CHANNEL_ORDERS:
            raise ValueError(f"image_format must be one of {CHANNEL_ORDERS}, got {image_format!r}")
        super().__init__(
            is_train,
            augmentations=augmentations,
            image_format=image_format,
            use_instance_mask=use_instance_mask,
            instance_mask_format=instance_mask_format,
            recompute_boxes=recompute_boxes,
        )

    def __call__(self, dataset_dict: dict) -> dict | None:
        record = copy.deepcopy(dataset_dict)  # modified below
        try:
            image = read_image(record["file_name"])  # h w 3 uint8 RGB
        except ImageReadError as e:
            if not self.is_train:
                raise
            logger.warning(f"skipping an unreadable training image: {e}")
            return None
        if self.image_format == "BGR":
            image = image[:, :, ::-1]
        utils.check_image_size(record, image)

        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        image_shape = image.shape[:2]  # h, w
        # h w c -> c h w
        record["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not self.is_train:
            record.pop("annotations", None)
            return record
        if "annotations" in record:
            self._transform_annotations(record, transforms, image_shape)
        return record
