"""A predictor's detections on image and video files: drawn pictures plus COCO-style results.

``annotate`` handles one input (``tools/demo.py`` loops over them, shows progress and reports
failures); outputs in the output folder:
- ``<name>.jpg`` per image: masks, boxes, class names and scores drawn by detectron2's
  ``Visualizer`` (``ColorMode.IMAGE``); ``<name>.mp4`` (mp4v) per video, every frame drawn.
  ``<name>`` is the input's path relative to the inputs' common folder, without its suffix
  (``_2``, ``_3``... are appended where two inputs would share one);
- ``predictions.json``: a COCO results list, one entry per detection, ``{"image_id",
  "file_name", "category_id", "bbox": [x, y, w, h], "score", "segmentation": RLE}`` (plus
  ``"frame"`` for videos). ``image_id`` numbers the images and video frames in input order
  from 0; ``category_id`` is the dataset's own id where the metadata maps them
  (``thing_dataset_id_to_contiguous_id``), the class index otherwise.

An unreadable input raises ``vitdet.data.images.ImageReadError`` naming it and the reason.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
from detectron2.data import Metadata
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Instances
from detectron2.utils.visualizer import ColorMode, Visualizer
from PIL import Image

from .data.images import ImageReadError, VideoFrames, is_video, read_image
from .predictor import Predictor

__all__ = ["annotate", "coco_results", "draw_instances", "output_names", "write_predictions"]

PREDICTIONS_FILE = "predictions.json"


def draw_instances(image: np.ndarray, instances: Instances, metadata: Metadata) -> np.ndarray:
    """``image`` (H, W, 3) uint8 RGB with ``instances`` drawn on it, same size and format."""
    visualizer = Visualizer(image, metadata, instance_mode=ColorMode.IMAGE)
    return visualizer.draw_instance_predictions(instances).get_image()


def coco_results(
    instances: Instances, *, image_id: int, file_name: str, metadata: Metadata
) -> list[dict]:
    """COCO results entries (see the module docstring) for one image's CPU ``instances``."""
    to_dataset_id = {v: k for k, v in metadata.get("thing_dataset_id_to_contiguous_id", {}).items()}
    results = instances_to_coco_json(instances, image_id)
    for result in results:
        result["category_id"] = to_dataset_id.get(result["category_id"], result["category_id"])
        result["file_name"] = file_name
    return results


def output_names(inputs: Sequence[Path]) -> list[str]:
    """Unique output names: each input relative to the inputs' common folder, no suffix."""
    folders = [os.path.dirname(os.path.abspath(p)) for p in inputs]
    root = os.path.commonpath(folders) if folders else ""
    names: list[str] = []
    taken = set()
    for path in inputs:
        stem = os.path.splitext(os.path.relpath(os.path.abspath(path), root))[0]
        name = next(
            n
            for n in itertools.chain([stem], (f"{stem}_{k}" for k in itertools.count(2)))
            if n not in taken
        )
        taken.add(name)
        names.append(name)
    return names


def annotate(
    predictor: Predictor, path: Path, output_stem: Path, image_ids: Iterator[int]
) -> list[dict]:
    """Draw ``predictor``'s detections on the image or video at ``path`` into
    ``<output_stem>.jpg`` / ``.mp4``; return its COCO results entries (``image_id`` drawn from
    ``image_ids``, one per image or video frame)."""
    output_stem.parent.mkdir(parents=True, exist_ok=True)
    if is_video(path):
        return _annotate_video(predictor, path, Path(f"{output_stem}.mp4"), image_ids)
    image = read_image(path)
    instances = predictor(image)
    drawn = draw_instances(image, instances, predictor.metadata)
    Image.fromarray(drawn).save(f"{output_stem}.jpg", quality=95)
    return coco_results(
        instances, image_id=next(image_ids), file_name=str(path), metadata=predictor.metadata
    )


def write_predictions(output_dir: Path, results: list[dict]) -> Path:
    """``<output_dir>/predictions.json``: the COCO results list."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / PREDICTIONS_FILE
    path.write_text(json.dumps(results))
    return path


def _annotate_video(
    predictor: Predictor, path: Path, out: Path, image_ids: Iterator[int]
) -> list[dict]:
    """Draw every frame of a video into ``out`` (mp4v, the source fps); their results."""
    video = VideoFrames(path)
    writer = None
    results = []
    try:
        for index, frame in enumerate(video):
            instances = predictor(frame)
            drawn = draw_instances(frame, instances, predictor.metadata)
            if writer is None:
                size = (drawn.shape[1], drawn.shape[0])  # (w, h)
                writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), video.fps, size)
                if not writer.isOpened():
                    raise OSError(f"cannot write the video {out}")
            writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
            frame_results = coco_results(
                instances,
                image_id=next(image_ids),
                file_name=str(path),
                metadata=predictor.metadata,
            )
            results += [dict(r, frame=index) for r in frame_results]
    finally:
        if writer is not None:
            writer.release()
    if writer is None:
        raise ImageReadError(path, "no decodable video frames")
    return results
