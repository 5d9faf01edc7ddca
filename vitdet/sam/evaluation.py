"""Prompted-mask evaluation as a detectron2 ``DatasetEvaluator``: the mIoU of SAM's masks against
every ground-truth mask for each evaluation prompt (box, one centre-most point, k clicks).

The model's eval-mode outputs are ``vitdet.modeling.sam.training.TrainableSam``'s: per image
``{"sam": {"box": (N, h, w) bool, "point": ..., "click{k}": ..., "prompts": {...}}}``, masks in
the frame of the input image (the test mapper's resize), compared with the ``instances`` the
test mapper keeps (``DetectionMapper(keep_annotations=True)``).

``evaluate()`` returns ``{"sam": {"box_mIoU": ..., "point_mIoU": ..., "click{k}_mIoU": ...}}``
(the engine logs them and writes ``sam/box_mIoU`` ... to ``metrics.json`` and TensorBoard),
logs a per-category table, and draws the prompts and masks of the first ``num_pictures``
images to ``<output_dir>/iter_XXXXXXX/`` (and TensorBoard, when training).
"""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BitMasks, PolygonMasks
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from tabulate import tabulate

__all__ = ["PromptedMaskEvaluator", "draw_prompts"]

logger = logging.getLogger(__name__)

COLOURS = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180]],
    np.uint8,
)


def _iou(pred: torch.Tensor, gt: torch.Tensor) -> np.ndarray:
    """(N, h, w) bool each -> (N,) IoU (1 when both are empty)."""
    pred, gt = pred.flatten(1).cpu(), gt.flatten(1).cpu()
    inter = (pred & gt).sum(1).double()
    union = (pred | gt).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), 1.0).numpy()


def draw_prompts(
    image: np.ndarray, masks: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor
) -> np.ndarray:
    """(h, w, 3) uint8 RGB with each mask tinted and outlined, boxes (labels 2, 3) drawn as
    rectangles, points as discs (foreground filled, background hollow)."""
    out = image.copy()
    for i, mask in enumerate(masks.cpu().numpy()):
        colour = COLOURS[i % len(COLOURS)]
        out[mask] = (0.5 * out[mask] + 0.5 * colour).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, 2)
        cv2.drawContours(out, contours, -1, colour.tolist(), 1)
        xy, lab = coords[i].cpu().numpy(), labels[i].cpu().numpy()
        if (lab == 2).any():
            (x0, y0), (x1, y1) = xy[lab == 2][0], xy[lab == 3][0]
            cv2.rectangle(out, (int(x0), int(y0)), (int(x1), int(y1)), (255, 255, 255), 1)
        for (x, y), label in zip(xy, lab, strict=True):
            if label in (0, 1):
                fill = -1 if label == 1 else 1
                cv2.circle(out, (int(x), int(y)), 3, (255, 255, 255), fill)
                cv2.circle(out, (int(x), int(y)), 3, (0, 0, 0), 1)
    return out


class PromptedMaskEvaluator(DatasetEvaluator):
    """mIoU per evaluation prompt, overall and per category (see the module docstring).

    Args:
        dataset_name: for the category names (``thing_classes``).
        output_dir: where the pictures go (None: no pictures).
        num_pictures: images drawn per evaluation (rank 0's first ones).
    """

    def __init__(
        self, dataset_name: str, *, output_dir: str | None = None, num_pictures: int = 4
    ) -> None:
        self._classes = MetadataCatalog.get(dataset_name).get("thing_classes") or []
        self._output_dir = output_dir
        self._num_pictures = num_pictures
        self.reset()

    def reset(self) -> None:
        self._records: list[tuple[str, int, float]] = []  # (prompt, class, IoU)
        self._pictures: list[tuple[str, np.ndarray]] = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for record, output in zip(inputs, outputs, strict=True):
            predictions = output["sam"]
            instances = record["instances"]
            size = tuple(record["image"].shape[-2:])
            masks = instances.gt_masks
            if isinstance(masks, PolygonMasks):
                masks = BitMasks.from_polygon_masks(masks, *size)
            gt = masks.tensor.bool()
            classes = instances.gt_classes.tolist()
            for name, pred in predictions.items():
                if name == "prompts":
                    continue
                for c, iou in zip(classes, _iou(pred, gt), strict=True):
                    self._records.append((name, c, float(iou)))
            if len(self._pictures) < self._num_pictures and comm.is_main_process() and len(gt):
                self._pictures.append(self._picture(record, predictions))

    def _picture(self, record: dict, predictions: dict) -> tuple[str, np.ndarray]:
        """The image three times: box prompts, the point prompts, the last clicks."""
        image = record["image"].permute(1, 2, 0).cpu().numpy()  # c h w -> h w c
        prompts = predictions["prompts"]
        clicks = sorted((k for k in predictions if k.startswith("click")), key=lambda k: int(k[5:]))
        panels = [
            draw_prompts(image, predictions["box"], prompts["box_coords"], prompts["box_labels"]),
            draw_prompts(
                image, predictions["point"], prompts["point_coords"], prompts["point_labels"]
            ),
        ]
        if clicks:
            last = predictions[clicks[-1]]
            panels.append(
                draw_prompts(image, last, prompts["click_coords"], prompts["click_labels"])
            )
        name = Path(record.get("file_name", str(record.get("image_id", "image")))).stem
        return name, np.concatenate(panels, axis=1)

    def evaluate(self) -> dict:
        records = list(itertools.chain(*comm.gather(self._records, dst=0)))
        if self._pictures:
            self._save_pictures()
        if not comm.is_main_process():
            return {}
        by_prompt: dict[str, list[float]] = defaultdict(list)
        by_class: dict[tuple[str, int], list[float]] = defaultdict(list)
        for name, c, iou in records:
            by_prompt[name].append(iou)
            by_class[(name, c)].append(iou)
        order = sorted(by_prompt, key=_prompt_order)
        results = {f"{name}_mIoU": float(np.mean(by_prompt[name])) for name in order}
        rows = []
        for c in sorted({c for _, c, _ in records}):
            label = self._classes[c] if c < len(self._classes) else str(c)
            counts = len(by_class[(order[0], c)])
            rows.append([label, counts] + [f"{100 * np.mean(by_class[(n, c)]):.1f}" for n in order])
        rows.append(["all", len(by_prompt[order[0]]) if order else 0])
        rows[-1] += [f"{100 * results[f'{n}_mIoU']:.1f}" for n in order]
        table = tabulate(rows, headers=["category", "masks", *order], tablefmt="pipe")
        logger.info(f"Prompted mask mIoU (%) per category:\n{table}")
        return {"sam": results}

    def _save_pictures(self) -> None:
        try:
            storage = get_event_storage()
        except AssertionError:  # not training: no event storage
            storage = None
        tag = f"iter_{storage.iter:07d}" if storage is not None else "eval"
        folder = Path(self._output_dir) / tag if self._output_dir else None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        for i, (name, picture) in enumerate(self._pictures):
            if folder is not None:
                cv2.imwrite(str(folder / f"{name}.png"), picture[:, :, ::-1])
            if storage is not None:  # TensorBoard: c h w in [0, 1]
                storage.put_image(f"sam/prompts_{i}", picture.transpose(2, 0, 1) / 255.0)
        if folder is not None:
            logger.info(f"Prompt pictures (box | point | clicks) written to {folder}")


def _prompt_order(name: str) -> tuple[int, int]:
    """box, point, click1, click3, ..."""
    if name.startswith("click"):
        return (2, int(name[5:]))
    return (0 if name == "box" else 1, 0)
