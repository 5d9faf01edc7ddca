"""``SamAutomaticMaskGenerator``: masks for everything in an image, from a grid of points.

The release's algorithm and interface (same arguments, same defaults, same output records):
per crop (the whole image, then optional layers of overlapping crops) the image is embedded
once and a grid of foreground points is prompted in batches (three masks per point); masks are
kept when their predicted IoU and stability score pass the thresholds and they do not touch an
inner crop edge; duplicates are removed by box NMS within a crop (by predicted IoU) and across
crops (preferring smaller crops); optionally small holes and islands are removed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchvision.ops.boxes import batched_nms, box_area

from ..modeling.sam import Sam
from .masks import (
    box_near_crop_edge,
    crop_boxes,
    layer_point_grids,
    masks_to_boxes,
    masks_to_rle,
    remove_small_regions,
    rle_area,
    rle_to_coco,
    rle_to_mask,
    stability_score,
    uncrop_boxes,
    uncrop_masks,
    uncrop_points,
    xyxy_to_xywh,
)
from .predictor import SamPredictor

__all__ = ["SamAutomaticMaskGenerator", "OUTPUT_MODES"]

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")

# Candidate masks: equal-length fields (tensors while generating, numpy arrays once done; the
# list "rles"), keyed by name.
Candidates = dict[str, Any]


def _filter(data: Candidates, keep: torch.Tensor) -> Candidates:
    """The candidates selected by ``keep`` (bool mask or indices), in its order."""
    index = keep.nonzero().flatten() if keep.dtype == torch.bool else keep
    out = {}
    for key, value in data.items():
        if isinstance(value, list):
            out[key] = [value[i] for i in index.tolist()]
        else:
            out[key] = value[index.to(value.device)]
    return out


def _cat(parts: list[Candidates]) -> Candidates:
    if not parts:
        return {}
    out = {}
    for key in parts[0]:
        values = [p[key] for p in parts]
        out[key] = sum(values, []) if isinstance(values[0], list) else torch.cat(values)
    return out


class SamAutomaticMaskGenerator:
    """Automatic ("everything") masks; the arguments are the release's, with its defaults
    (chosen for ViT-H).

    Args:
        model: the SAM model.
        points_per_side: grid points per image side (``points_per_side ** 2`` prompts), or
            None with ``point_grids``.
        points_per_batch: prompts decoded at once.
        pred_iou_thresh: keep masks whose predicted IoU is above it (0: no filter).
        stability_score_thresh: keep masks whose stability score is at least it (0: no filter).
        stability_score_offset: the logit offset of the stability score.
        box_nms_thresh: box IoU of duplicates within a crop.
        crop_n_layers: extra layers of crops; layer i has (2^i)^2 crops.
        crop_nms_thresh: box IoU of duplicates across crops.
        crop_overlap_ratio: overlap of first-layer crops, as a fraction of the short side.
        crop_n_points_downscale_factor: layer i has points_per_side / factor^i points a side.
        point_grids: explicit (N, 2) grids in [0, 1]^2, one per crop layer.
        min_mask_region_area: remove holes and islands smaller than this (pixels; 0: off).
        output_mode: "binary_mask", "uncompressed_rle" or "coco_rle".
    """

    def __init__(
        self,
        model: Sam,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        if point_grids is None:
            point_grids = layer_point_grids(
                points_per_side, crop_n_layers, crop_n_points_downscale_factor
            )
        self.point_grids = point_grids
        self.predictor = SamPredictor(model)
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode

    @torch.no_grad()
    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Masks of an (H, W, 3) uint8 RGB image, one record each:

        ``segmentation`` ((H, W) bool, or an RLE dict by ``output_mode``), ``area`` (pixels),
        ``bbox`` ([x, y, w, h]), ``predicted_iou``, ``point_coords`` ([[x, y]], the prompt),
        ``stability_score``, ``crop_box`` ([x, y, w, h]).
        """
        data = self._generate_masks(image)
        if self.min_mask_region_area > 0:
            data = self.postprocess_small_regions(
                data, self.min_mask_region_area, max(self.box_nms_thresh, self.crop_nms_thresh)
            )
        rles = data.get("rles", [])
        if self.output_mode == "coco_rle":
            segmentations = [rle_to_coco(rle) for rle in rles]
        elif self.output_mode == "binary_mask":
            segmentations = [rle_to_mask(rle) for rle in rles]
        else:
            segmentations = rles
        return [
            {
                "segmentation": segmentation,
                "area": rle_area(rle),
                "bbox": xyxy_to_xywh(data["boxes"][i]),
                "predicted_iou": data["iou_preds"][i].item(),
                "point_coords": [data["points"][i].tolist()],
                "stability_score": data["stability_score"][i].item(),
                "crop_box": xyxy_to_xywh(data["crop_boxes"][i]),
            }
            for i, (segmentation, rle) in enumerate(zip(segmentations, rles, strict=True))
        ]

    def _generate_masks(self, image: np.ndarray) -> Candidates:
        size = image.shape[:2]
        boxes, layers = crop_boxes(size, self.crop_n_layers, self.crop_overlap_ratio)
        data = _cat(
            [
                self._process_crop(image, box, layer, size)
                for box, layer in zip(boxes, layers, strict=True)
            ]
        )
        if len(boxes) > 1 and data:
            # across crops prefer the mask from the smaller crop
            scores = 1 / box_area(data["crop_boxes"])
            keep = batched_nms(
                data["boxes"].float(),
                scores.to(data["boxes"].device),
                torch.zeros(len(data["boxes"])),
                iou_threshold=self.crop_nms_thresh,
            )
            data = _filter(data, keep)
        return {k: v if isinstance(v, list) else v.cpu().numpy() for k, v in data.items()}

    def _process_crop(
        self,
        image: np.ndarray,
        crop_box: list[int],
        layer: int,
        image_size: tuple[int, int],
    ) -> Candidates:
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1, :]
        crop_size = crop.shape[:2]
        self.predictor.set_image(crop)
        # grid in [0, 1]^2 -> crop pixels (x, y)
        points = self.point_grids[layer] * np.array(crop_size)[None, ::-1]
        batches = [
            self._process_batch(
                points[i : i + self.points_per_batch], crop_size, crop_box, image_size
            )
            for i in range(0, len(points), self.points_per_batch)
        ]
        self.predictor.reset_image()
        data = _cat(batches)
        keep = batched_nms(
            data["boxes"].float(),
            data["iou_preds"],
            torch.zeros(len(data["boxes"])),
            iou_threshold=self.box_nms_thresh,
        )
        data = _filter(data, keep)
        data["boxes"] = uncrop_boxes(data["boxes"], crop_box)
        data["points"] = uncrop_points(data["points"], crop_box)
        data["crop_boxes"] = torch.tensor([crop_box] * len(data["rles"])).reshape(-1, 4)
        return data

    def _process_batch(
        self,
        points: np.ndarray,
        crop_size: tuple[int, int],
        crop_box: list[int],
        image_size: tuple[int, int],
    ) -> Candidates:
        h, w = image_size
        coords = torch.as_tensor(
            self.predictor.transform.apply_coords(points, crop_size), device=self.predictor.device
        )
        labels = torch.ones(len(coords), dtype=torch.int, device=coords.device)
        masks, iou_preds, _ = self.predictor.predict_torch(
            coords[:, None], labels[:, None], multimask_output=True, return_logits=True
        )
        # b m h w -> (b m) h w; each point's three masks in a row
        data = {
            "masks": masks.flatten(0, 1),
            "iou_preds": iou_preds.flatten(0, 1),
            "points": torch.as_tensor(points.repeat(masks.shape[1], axis=0)),
        }
        del masks
        if self.pred_iou_thresh > 0.0:
            data = _filter(data, data["iou_preds"] > self.pred_iou_thresh)
        threshold = self.predictor.model.mask_threshold
        data["stability_score"] = stability_score(
            data["masks"], threshold, self.stability_score_offset
        )
        if self.stability_score_thresh > 0.0:
            data = _filter(data, data["stability_score"] >= self.stability_score_thresh)
        data["masks"] = data["masks"] > threshold
        data["boxes"] = masks_to_boxes(data["masks"])
        near_edge = box_near_crop_edge(data["boxes"], crop_box, [0, 0, w, h])
        if near_edge.any():
            data = _filter(data, ~near_edge)
        data["rles"] = masks_to_rle(uncrop_masks(data.pop("masks"), crop_box, h, w))
        return data

    @staticmethod
    def postprocess_small_regions(data: Candidates, min_area: int, nms_thresh: float) -> Candidates:
        """Fill holes and drop islands below ``min_area`` pixels in every mask, then remove the
        duplicates this creates by box NMS, preferring unchanged masks."""
        if not data.get("rles"):
            return data
        masks, scores = [], []
        for rle in data["rles"]:
            mask, filled = remove_small_regions(rle_to_mask(rle), min_area, mode="holes")
            mask, dropped = remove_small_regions(mask, min_area, mode="islands")
            masks.append(torch.as_tensor(mask))
            scores.append(float(not (filled or dropped)))
        masks = torch.stack(masks)
        boxes = masks_to_boxes(masks)
        keep = batched_nms(
            boxes.float(),
            torch.as_tensor(scores),
            torch.zeros(len(boxes)),
            iou_threshold=nms_thresh,
        )
        rles, data_boxes = list(data["rles"]), data["boxes"].copy()  # (N, 4) numpy
        for i in keep.tolist():
            if scores[i] == 0.0:  # changed: its new mask and box
                rles[i] = masks_to_rle(masks[i][None])[0]
                data_boxes[i] = boxes[i].numpy()
        index = keep.numpy()
        data = {**data, "rles": rles, "boxes": data_boxes}
        return {
            k: [v[i] for i in index] if isinstance(v, list) else v[index] for k, v in data.items()
        }
