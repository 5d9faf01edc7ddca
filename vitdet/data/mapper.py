"""detectron2's ``DatasetMapper`` reading images with this project's reader.

Training, evaluation, the demo and MAE pretraining then see the same pixels for the same file
(``vitdet.data.images.read_image``: RGBA over white, 16-bit scaled, palette, EXIF rotation),
where detectron2's own reader differs on several of those.

An image that cannot be read is skipped while training: ``__call__`` logs the file once and
returns None, and the resumable loader (``vitdet.data.loader``) lets the next record stand in
and counts it. At test time every image counts, so an unreadable one is an error
(``ImageReadError`` names the file).

The size a record states must be the image's. A file with an EXIF orientation is read upright;
if the record states the size of the pixels as stored instead (annotation tools that ignore
EXIF), the annotations refer to those pixels: the image is then used as stored, with a warning
naming it. Any other mismatch skips the image while training (an error at test time).
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

SizeMismatch = utils.SizeMismatchError

__all__ = ["DetectionMapper"]

logger = logging.getLogger(__name__)

CHANNEL_ORDERS = ("RGB", "BGR")
_WARNED: set[str] = set()  # files already named in a size warning by this process


class DetectionMapper(DatasetMapper):
    """A detection record -> the model's input dict, as ``DatasetMapper`` with the same
    arguments for instance detection and segmentation (no keypoints, no precomputed proposals);
    images in ``image_format`` "RGB" or "BGR".

    ``keep_annotations``: at test time too, the annotations become ``instances`` (evaluations
    that prompt with the ground truth: ``configs/SAM/sam_vit_tiny_synthetic.py``); an unreadable
    image is still an error then.
    """

    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: list,
        image_format: str,
        use_instance_mask: bool = False,
        instance_mask_format: str = "polygon",
        recompute_boxes: bool = False,
        keep_annotations: bool = False,
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
        self.keep_annotations = keep_annotations

    def __call__(self, dataset_dict: dict) -> dict | None:
        record = copy.deepcopy(dataset_dict)  # modified below
        try:
            image = _read_as_annotated(record)  # h w 3 uint8 RGB
        except (ImageReadError, SizeMismatch) as e:
            if not self.is_train:
                raise
            logger.warning(f"skipping a training image: {e}")
            return None
        if self.image_format == "BGR":
            image = image[:, :, ::-1]

        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        image_shape = image.shape[:2]  # h, w
        # h w c -> c h w
        record["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not (self.is_train or self.keep_annotations):
            record.pop("annotations", None)
            return record
        if "annotations" in record:
            self._transform_annotations(record, transforms, image_shape)
        return record


def _read_as_annotated(record: dict) -> np.ndarray:
    """The record's image, upright, or as stored when that is the size the record states."""
    path = record["file_name"]
    image = read_image(path)
    stated = (record.get("height"), record.get("width"))
    if None in stated or stated == image.shape[:2]:
        return image
    stored = read_image(path, upright=False)
    if stated == stored.shape[:2]:
        if path not in _WARNED:
            _WARNED.add(path)
            logger.warning(
                f"{path}: the annotations give the stored size {stated[1]}x{stated[0]}, not the "
                "EXIF-upright one: using the pixels as stored, so that the annotations fit"
            )
        return stored
    raise SizeMismatch(
        f"{path}: the annotations give {stated[1]}x{stated[0]} (w x h), the file is "
        f"{image.shape[1]}x{image.shape[0]}"
    )
