"""Run a predictor over image and video files: drawn pictures plus COCO-style predictions.

Outputs in ``output_dir``:
- ``<name>.jpg`` per image: masks, boxes, class names and scores drawn by detectron2's
  ``Visualizer`` (``ColorMode.IMAGE``); ``<name>.mp4`` (mp4v) per video, every frame drawn.
  ``<name>`` is the input's path relative to the inputs' common folder, without its suffix
  (``_2``, ``_3``... are appended where two inputs would share one);
- ``predictions.json``: a COCO results list, one entry per detection, ``{"image_id",
  "file_name", "category_id", "bbox": [x, y, w, h], "score", "segmentation": RLE}`` (plus
  ``"frame"`` for videos). ``image_id`` numbers the images and video frames in input order
  from 0; ``category_id`` is the dataset's own id where the metadata maps them
  (``thing_dataset_id_to_contiguous_id``), the class index otherwise.

An input that fails is reported as ``FAILED <path>: <reason>`` and the others still run.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
from detectron2.data import Metadata
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Instances
from detectron2.utils.visualizer import ColorMode, Visualizer
from PIL import Image
from tqdm import tqdm

from .images import ImageReadError, VideoFrames, is_video, read_image
from .predictor import Predictor

__all__ = ["draw_instances", "coco_results", "output_names", "run_demo"]

logger = logging.getLogger(__name__)

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


def run_demo(
    predictor: Predictor, inputs: Sequence[Path], output_dir: Path
) -> list[tuple[str, str]]:
    """Draw and record ``predictor``'s detections on every input; ``(path, reason)`` per
    input that failed, in order. ``predictions.json`` is written even when some fail."""
    output_dir.mkdir(parents=True, exist_ok=True)
    image_ids = itertools.count()
    results: list[dict] = []
    failures = []
    names = output_names(inputs)
    for path, name in zip(tqdm(inputs, desc="demo", unit="input"), names, strict=True):
        (output_dir / name).parent.mkdir(parents=True, exist_ok=True)
        try:
            if is_video(path):
                results += _annotate_video(predictor, path, output_dir / f"{name}.mp4", image_ids)
            else:
                image = read_image(path)
                instances = predictor(image)
                drawn = draw_instances(image, instances, predictor.metadata)
                Image.fromarray(drawn).save(output_dir / f"{name}.jpg", quality=95)
                results += coco_results(
                    instances,
                    image_id=next(image_ids),
                    file_name=str(path),
                    metadata=predictor.metadata,
                )
        except ImageReadError as e:
            failures.append((str(path), e.reason))
            tqdm.write(f"FAILED {path}: {e.reason}", file=sys.stderr)
        except Exception as e:  # one input's failure must not end the batch
            logger.exception("unexpected error on %s", path)
            failures.append((str(path), f"{type(e).__name__}: {e}"))
            tqdm.write(f"FAILED {path}: {type(e).__name__}: {e}", file=sys.stderr)
    with open(output_dir / PREDICTIONS_FILE, "w") as f:
        json.dump(results, f)
    logger.info(
        "%d of %d inputs done, %d detections -> %s",
        len(inputs) - len(failures),
        len(inputs),
        len(results),
        output_dir,
    )
    return failures


def _annotate_video(
    predictor: Predictor, path: Path, out: Path, image_ids: Iterator[int]
) -> list[dict]:
    """Draw every frame of a video into ``out`` (mp4v, the source fps); their results."""
    video = VideoFrames(path)
    writer = None
    results = []
    try:
        frames = tqdm(video, total=video.num_frames or None, desc=path.name, leave=False)
        for index, frame in enumerate(frames):
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
