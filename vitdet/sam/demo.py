"""SAM on image files: prompts from a JSON or COCO file, or automatic masks; drawn pictures and
COCO-RLE records (``tools/sam_demo.py`` loops over the inputs and reports failures).

Prompt file (JSON): an object mapping an image (its path as given, its path relative to the
inputs' common folder, or its file name; ``"*"`` for every image) to a prompt or a list of
prompts, each giving one mask, in original-image pixels::

    {"photo.jpg": [{"points": [[120, 80], [200, 95]], "labels": [1, 0]},
                   {"box": [10, 20, 300, 240]},
                   {"box": [40, 50, 90, 120], "points": [[60, 80]], "labels": [1]}]}

COCO file: every annotation's ``bbox`` (x, y, w, h) is a box prompt of its image (matched by
``file_name``, or by its base name); the record keeps its ``category_id``.

A prompt with one point and no box takes the best of the three multimask outputs (by predicted
IoU), as the release recommends for ambiguous prompts; other prompts take the single output.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from detectron2.utils.visualizer import Visualizer
from pycocotools import mask as mask_utils

from .automatic import SamAutomaticMaskGenerator
from .masks import masks_to_boxes, rle_to_mask
from .predictor import SamPredictor

__all__ = [
    "PromptError",
    "Prompt",
    "load_prompt_file",
    "load_coco_prompts",
    "prompts_for",
    "segment_prompts",
    "segment_everything",
    "draw_masks",
]

ANY_IMAGE = "*"


class PromptError(ValueError):
    """A prompt file that cannot be read, or a prompt that does not fit its image."""


@dataclass(frozen=True)
class Prompt:
    """One mask's prompt, original-image pixels: points (N, 2) (x, y) with labels (N,) 1 / 0,
    and / or a box (4,) XYXY."""

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None
    category_id: int | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out: dict = {}
        if self.points is not None:
            out["points"] = self.points.tolist()
            out["labels"] = self.labels.tolist()
        if self.box is not None:
            out["box"] = self.box.tolist()
        return out

    def check(self, height: int, width: int) -> None:
        """Raise PromptError unless every point and the box lie in an (H, W) image."""
        if self.points is not None:
            xy = self.points
            if ((xy < 0) | (xy > [width, height])).any():
                raise PromptError(f"point outside the {width}x{height} image: {xy.tolist()}")
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
                raise PromptError(
                    f"box {self.box.tolist()} is empty or outside the {width}x{height} image"
                )


def _parse_prompt(entry: object, where: str) -> Prompt:
    if not isinstance(entry, dict) or not ({"points", "box"} & set(entry)):
        raise PromptError(f"{where}: a prompt is an object with 'points' (+ 'labels') and/or 'box'")
    unknown = set(entry) - {"points", "labels", "box"}
    if unknown:
        raise PromptError(f"{where}: unknown keys {sorted(unknown)}")
    points = labels = box = None
    try:
        if "points" in entry:
            points = np.asarray(entry["points"], dtype=np.float64).reshape(-1, 2)
            labels = np.asarray(entry.get("labels", [1] * len(points)), dtype=np.int64)
            if labels.shape != (len(points),) or not np.isin(labels, (0, 1)).all():
                raise PromptError(f"{where}: 'labels' must be one 0 / 1 per point")
        if "box" in entry:
            box = np.asarray(entry["box"], dtype=np.float64).reshape(4)
    except (TypeError, ValueError) as e:
        if isinstance(e, PromptError):
            raise
        raise PromptError(f"{where}: not numbers of the right shape ({e})") from e
    return Prompt(points=points, labels=labels, box=box)


def load_prompt_file(path: str | os.PathLike) -> dict[str, list[Prompt]]:
    """A prompt JSON file (module docstring) -> image key -> prompts."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise PromptError(f"{path}: cannot read the prompt file ({e})") from e
    if not isinstance(data, dict):
        raise PromptError(f"{path}: expected an object mapping images to prompts")
    table = {}
    for key, value in data.items():
        entries = value if isinstance(value, list) else [value]
        table[key] = [_parse_prompt(e, f"{path}: {key!r}") for e in entries]
    return table


def load_coco_prompts(path: str | os.PathLike) -> dict[str, list[Prompt]]:
    """A COCO annotation file -> image file_name -> one box prompt per annotation."""
    try:
        data = json.loads(Path(path).read_text())
        names = {img["id"]: img["file_name"] for img in data["images"]}
        table: dict[str, list[Prompt]] = {name: [] for name in names.values()}
        for ann in data.get("annotations", []):
            x, y, w, h = (float(v) for v in ann["bbox"])
            prompt = Prompt(
                box=np.array([x, y, x + w, y + h]),
                category_id=ann.get("category_id"),
                extra={"annotation_id": ann.get("id")},
            )
            table[names[ann["image_id"]]].append(prompt)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PromptError(f"{path}: not a readable COCO annotation file ({e!r})") from e
    return table


def prompts_for(table: dict[str, list[Prompt]], path: Path, name: str) -> list[Prompt]:
    """The prompts of the image at ``path`` (``name``: its path relative to the inputs' common
    folder, with suffix): by path, relative path, file name, then ``"*"``."""
    for key in (str(path), name, path.name):
        if key in table:
            return table[key]
    by_name = {Path(k).name: v for k, v in table.items()}
    if path.name in by_name:
        return by_name[path.name]
    if ANY_IMAGE in table:
        return table[ANY_IMAGE]
    raise PromptError("no prompts for this image in the prompt file")


def _record(mask: np.ndarray, score: float, *, image_id: int, file_name: str, extra: dict) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("utf-8")
    x0, y0, x1, y1 = masks_to_boxes(torch.as_tensor(mask)).tolist()
    bbox = [x0, y0, x1 - x0 + 1, y1 - y0 + 1] if mask.any() else [0, 0, 0, 0]
    return {
        "image_id": image_id,
        "file_name": file_name,
        "segmentation": rle,
        "bbox": bbox,
        "area": int(mask.sum()),
        "score": float(score),
        **extra,
    }


def segment_prompts(
    predictor: SamPredictor,
    image: np.ndarray,
    prompts: list[Prompt],
    *,
    image_id: int,
    file_name: str,
) -> tuple[list[np.ndarray], list[dict]]:
    """One mask per prompt on an (H, W, 3) RGB image: masks (H, W) bool and their records
    (``score``: the predicted IoU; ``prompt``; ``category_id`` for COCO prompts)."""
    h, w = image.shape[:2]
    for prompt in prompts:
        prompt.check(h, w)
    predictor.set_image(image)
    masks, records = [], []
    for prompt in prompts:
        one_point = prompt.box is None and prompt.points is not None and len(prompt.points) == 1
        out, iou, _ = predictor.predict(
            point_coords=prompt.points,
            point_labels=prompt.labels,
            box=prompt.box,
            multimask_output=one_point,
        )
        best = int(np.argmax(iou))
        extra = {"prompt": prompt.to_json(), **prompt.extra}
        if prompt.category_id is not None:
            extra["category_id"] = prompt.category_id
        masks.append(out[best])
        records.append(
            _record(out[best], iou[best], image_id=image_id, file_name=file_name, extra=extra)
        )
    return masks, records


def segment_everything(
    generator: SamAutomaticMaskGenerator, image: np.ndarray, *, image_id: int, file_name: str
) -> tuple[list[np.ndarray], list[dict]]:
    """Automatic masks of an (H, W, 3) RGB image, largest first: masks and records
    (``score``: predicted IoU, plus ``stability_score`` and the grid ``point_coords``)."""
    found = sorted(generator.generate(image), key=lambda r: -r["area"])
    masks, records = [], []
    for r in found:
        seg = r["segmentation"]
        mask = seg if isinstance(seg, np.ndarray) else _decode(seg)
        extra = {"stability_score": r["stability_score"], "point_coords": r["point_coords"]}
        masks.append(mask)
        records.append(
            _record(mask, r["predicted_iou"], image_id=image_id, file_name=file_name, extra=extra)
        )
    return masks, records


def _decode(segmentation: dict) -> np.ndarray:
    if isinstance(segmentation["counts"], list):
        return rle_to_mask(segmentation)
    return mask_utils.decode(segmentation).astype(bool)


def draw_masks(
    image: np.ndarray, masks: list[np.ndarray], prompts: list[Prompt] = ()
) -> np.ndarray:
    """``image`` (H, W, 3) RGB with the masks filled in distinct colours and the prompts' boxes
    and points (green foreground, red background) drawn; same size and format."""
    visualizer = Visualizer(image)
    rng = np.random.default_rng(0)
    for mask in masks:
        visualizer.draw_binary_mask(mask, color=rng.uniform(0.2, 1.0, 3), alpha=0.5)
    for prompt in prompts:
        if prompt.box is not None:
            visualizer.draw_box(prompt.box, edge_color="yellow")
        if prompt.points is not None:
            for (x, y), label in zip(prompt.points, prompt.labels, strict=True):
                visualizer.draw_circle((x, y), color="lime" if label else "red", radius=4)
    return visualizer.get_output().get_image()
