"""Inference on single images (or small batches) from a LazyConfig and trained weights.

The test-time path is the evaluation's: the config's ``dataloader.test.mapper.augmentations``
(``ResizeShortestEdge(1024, max 1024)`` for ViTDet) resize the image, the model's
``input_format`` fixes the channel order, and detections come back in the coordinates of the
image that was passed in.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import detectron2.data.transforms as T
import numpy as np
import torch
from detectron2.config import instantiate
from detectron2.data import Metadata, MetadataCatalog
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Instances
from omegaconf import DictConfig, OmegaConf

from .checkpoint import load_checkpoint
from .config import (
    NUM_CLASSES_KEY,
    ConfigError,
    is_overridden,
    load_config,
    register_datasets,
    set_num_classes,
    setup_datasets,
)
from .provenance import Provenance, read_provenance

__all__ = ["Predictor", "dataset_metadata", "provenance_metadata"]

COCO_METADATA_NAME = "coco_2017_val"  # detectron2's built-in COCO metadata (80 thing classes)
FORMATS = ("RGB", "BGR")


def dataset_metadata(cfg: DictConfig) -> Metadata:
    """Class names (and dataset category ids) for the model's ``roi_heads.num_classes`` outputs.

    In order: the metadata of the first registered ``dataloader.test.dataset.names`` entry
    whose ``thing_classes`` has ``num_classes`` names; COCO's when ``num_classes == 80``;
    otherwise generic names ``class_0``, ``class_1``, ...
    """
    num_classes = cfg.model.roi_heads.num_classes
    names = OmegaConf.select(cfg, "dataloader.test.dataset.names", default=None) or []
    registered = set(MetadataCatalog.list())
    for name in [names] if isinstance(names, str) else names:
        if name in registered:
            metadata = MetadataCatalog.get(name)
            if len(metadata.get("thing_classes", [])) == num_classes:
                return metadata
    if num_classes == 80:
        return MetadataCatalog.get(COCO_METADATA_NAME)
    return Metadata(name="generic", thing_classes=[f"class_{i}" for i in range(num_classes)])


def provenance_metadata(provenance: Provenance) -> Metadata:
    """Class names (and dataset category ids) recorded in a training checkpoint."""
    metadata = Metadata(name="checkpoint", thing_classes=list(provenance.classes))
    if provenance.category_ids:
        ids = {i: k for k, i in enumerate(provenance.category_ids)}
        metadata.set(thing_dataset_id_to_contiguous_id=ids)
    return metadata


class Predictor:
    """A detectron2 ``GeneralizedRCNN`` from a LazyConfig with its weights, in eval mode.

    Images are (H, W, 3) uint8 arrays in channel order ``format``: "RGB" (the default, as
    ``vitdet.data.images.read_image`` and Pillow give) or "BGR" (as ``cv2.imread`` gives). Results
    are detectron2 ``Instances`` on the CPU, in the input image's pixel coordinates
    (``pred_boxes`` XYXY, ``pred_masks`` (N, H, W) bool, ``scores``, ``pred_classes``),
    keeping only detections scoring at least ``score_threshold``; low-scoring ones are dropped
    before their masks are pasted at full image size.
    """

    def __init__(
        self,
        cfg: DictConfig,
        weights: str | os.PathLike,
        *,
        metadata: Metadata | None = None,
        score_threshold: float = 0.0,
        device: str | None = None,
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = instantiate(cfg.model).to(self.device).eval()
        load_checkpoint(self.model, str(weights))  # strict, safe unpickling
        self.augmentations = T.AugmentationList(
            instantiate(cfg.dataloader.test.mapper.augmentations)
        )
        self.input_format = self.model.input_format
        self.metadata = metadata or dataset_metadata(cfg)
        self.score_threshold = score_threshold

    @classmethod
    def from_config_file(
        cls,
        config_file: str | os.PathLike | None,
        weights: str | os.PathLike,
        *,
        overrides: Sequence[str] = (),
        coco_datasets: Sequence[Sequence[str]] = (),
        score_threshold: float = 0.0,
        device: str | None = None,
    ) -> Predictor:
        """Config with checked ``key=value`` overrides, and the weights.

        A checkpoint written by this project's training carries its provenance: the class
        names (and their number) come from it, so no dataset is needed, and ``config_file``
        may be None to use the config it was trained with (with its overrides, then these).
        Other weights (released, converted): datasets are registered as in training
        (``coco_datasets``: ``(name, json_file, image_dir)`` triples, like ``--register-coco``)
        so that class names and their number follow the data the model was trained on.
        """
        provenance = read_provenance(weights)
        if config_file is None:
            if provenance is None:
                raise ConfigError(f"{weights} records no config: give the config file")
            config_file = provenance.config_path()
            overrides = [*provenance.safe_overrides(), *overrides]
        cfg = load_config(str(config_file), overrides)
        metadata = None
        if provenance is not None and provenance.classes:
            register_datasets(cfg, coco_datasets)
            explicit = is_overridden(NUM_CLASSES_KEY, overrides)
            set_num_classes(cfg, len(provenance.classes), source=str(weights), explicit=explicit)
            metadata = provenance_metadata(provenance)
        else:
            setup_datasets(cfg, coco_datasets, overrides=overrides)
        return cls(cfg, weights, metadata=metadata, score_threshold=score_threshold, device=device)

    def preprocess(self, image: np.ndarray, *, format: str = "RGB") -> dict:
        """The model input for ``image`` (H, W, 3): as the evaluation's ``DatasetMapper`` builds
        it, ``{"image": (3, h, w) uint8 in the model's format, "height": H, "width": W}``."""
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"expected an (H, W, 3) uint8 image, got {image.dtype} of shape {image.shape}"
            )
        if format != self.input_format:
            image = image[:, :, ::-1]  # RGB <-> BGR
        aug_input = T.AugInput(np.ascontiguousarray(image))
        self.augmentations(aug_input)
        resized = np.ascontiguousarray(aug_input.image.transpose(2, 0, 1))  # h w c -> c h w
        return {
            "image": torch.as_tensor(resized),
            "height": image.shape[0],
            "width": image.shape[1],
        }

    def __call__(self, image: np.ndarray, *, format: str = "RGB") -> Instances:
        """Detections on one (H, W, 3) uint8 image; see the class docstring."""
        return self.predict_batch([image], format=format)[0]

    def predict_batch(
        self, images: Sequence[np.ndarray], *, format: str = "RGB"
    ) -> list[Instances]:
        """Detections on several images in one forward pass (sizes may differ)."""
        inputs = [self.preprocess(image, format=format) for image in images]
        with torch.inference_mode():
            raw = self.model.inference(inputs, do_postprocess=False)  # in resized coordinates
            results = []
            for instances, x in zip(raw, inputs, strict=True):
                kept = instances[instances.scores >= self.score_threshold]
                results.append(detector_postprocess(kept, x["height"], x["width"]).to("cpu"))
        return results
