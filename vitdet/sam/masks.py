"""Mask bookkeeping of the automatic mask generator (pure functions on tensors and arrays).

RLE here is the uncompressed COCO form: ``{"size": [H, W], "counts": [...]}``, runs over the
mask in column-major (Fortran) order starting with a run of zeros (possibly empty).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import product

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils

__all__ = [
    "point_grid",
    "layer_point_grids",
    "crop_boxes",
    "stability_score",
    "masks_to_boxes",
    "box_near_crop_edge",
    "uncrop_boxes",
    "uncrop_points",
    "uncrop_masks",
    "masks_to_rle",
    "rle_to_mask",
    "rle_area",
    "rle_to_coco",
    "remove_small_regions",
    "xyxy_to_xywh",
]


def point_grid(n_per_side: int) -> np.ndarray:
    """(n * n, 2) (x, y) cell centres of an n x n grid over [0, 1]^2, row by row."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs, ys = np.meshgrid(side, side)  # y rows, x columns
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def layer_point_grids(n_per_side: int, n_layers: int, downscale: int) -> list[np.ndarray]:
    """One grid per crop layer; layer i has ``int(n_per_side / downscale ** i)`` per side."""
    return [point_grid(int(n_per_side / downscale**i)) for i in range(n_layers + 1)]


def crop_boxes(
    image_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """XYXY crops of the image and the layer of each: the whole image (layer 0), then for
    layer i >= 1 a (2^i x 2^i) grid of crops overlapping by ``overlap_ratio`` of the short side
    (scaled down by 2^(i-1)). Column-major over the grid, as the release orders them."""
    h, w = image_size
    boxes, layers = [[0, 0, w, h]], [0]
    for layer in range(1, n_layers + 1):
        n = 2**layer
        overlap = int(overlap_ratio * min(h, w) * (2 / n))
        crop_w = math.ceil((overlap * (n - 1) + w) / n)
        crop_h = math.ceil((overlap * (n - 1) + h) / n)
        xs = [int((crop_w - overlap) * i) for i in range(n)]
        ys = [int((crop_h - overlap) * i) for i in range(n)]
        for x0, y0 in product(xs, ys):
            boxes.append([x0, y0, min(x0 + crop_w, w), min(y0 + crop_h, h)])
            layers.append(layer)
    return boxes, layers


def stability_score(masks: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU of the masks thresholded at ``threshold + offset`` and ``threshold - offset``
    (the first is inside the second): (..., H, W) logits -> (...)."""
    inner = (masks > threshold + offset).sum((-1, -2), dtype=torch.int32)
    outer = (masks > threshold - offset).sum((-1, -2), dtype=torch.int32)
    return inner / outer


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(..., H, W) bool -> (..., 4) XYXY of the pixel extremes (inclusive); zeros if empty."""
    if masks.numel() == 0:
        return torch.zeros(*masks.shape[:-2], 4, device=masks.device)
    h, w = masks.shape[-2:]
    rows, cols = masks.any(-1), masks.any(-2)  # (..., H), (..., W)

    def extent(present: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.arange(n, device=present.device)
        last = (present * index).amax(-1)
        first = torch.where(present, index, n).amin(-1)
        return first, last

    top, bottom = extent(rows, h)
    left, right = extent(cols, w)
    boxes = torch.stack([left, top, right, bottom], dim=-1)
    empty = ~rows.any(-1)
    return boxes * (~empty)[..., None]


def uncrop_boxes(boxes: torch.Tensor, crop_box: Sequence[int]) -> torch.Tensor:
    """(N, 4) XYXY in the crop -> in the image."""
    x0, y0 = crop_box[:2]
    return boxes + torch.tensor([x0, y0, x0, y0], device=boxes.device)


def uncrop_points(points: torch.Tensor, crop_box: Sequence[int]) -> torch.Tensor:
    """(N, 2) (x, y) in the crop -> in the image."""
    return points + torch.tensor([crop_box[0], crop_box[1]], device=points.device)


def uncrop_masks(masks: torch.Tensor, crop_box: Sequence[int], h: int, w: int) -> torch.Tensor:
    """(N, h', w') masks of the crop -> (N, H, W) zero-padded into the image."""
    x0, y0, x1, y1 = crop_box
    if (x0, y0, x1, y1) == (0, 0, w, h):
        return masks
    return torch.nn.functional.pad(masks, (x0, w - x1, y0, h - y1), value=0)


def box_near_crop_edge(
    boxes: torch.Tensor, crop_box: Sequence[int], image_box: Sequence[int], atol: float = 20.0
) -> torch.Tensor:
    """(N,) whether a box (XYXY in the crop) is within ``atol`` px of an edge of the crop that
    is not also an edge of the image: such masks are likely cut by the crop."""
    crop = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
    image = torch.as_tensor(image_box, dtype=torch.float, device=boxes.device)
    boxes = uncrop_boxes(boxes, crop_box).float()
    near_crop = torch.isclose(boxes, crop[None], atol=atol, rtol=0)
    near_image = torch.isclose(boxes, image[None], atol=atol, rtol=0)
    return (near_crop & ~near_image).any(dim=1)


def masks_to_rle(masks: torch.Tensor) -> list[dict]:
    """(N, H, W) bool -> N uncompressed RLEs (column-major runs, first run of zeros)."""
    n, h, w = masks.shape
    flat = masks.transpose(1, 2).flatten(1)  # n h w -> n (w h): column-major
    change = (flat[:, 1:] ^ flat[:, :-1]).nonzero()  # (k, 2): mask, position before a change
    rles = []
    ends_all = change[:, 1] + 1
    splits = torch.bincount(change[:, 0], minlength=n).tolist()
    for i, ends in enumerate(torch.split(ends_all, splits)):
        bounds = torch.cat([ends.new_zeros(1), ends, ends.new_full((1,), h * w)])
        counts = [] if not flat[i, 0] else [0]
        counts.extend((bounds[1:] - bounds[:-1]).tolist())
        rles.append({"size": [h, w], "counts": counts})
    return rles


def rle_to_mask(rle: dict) -> np.ndarray:
    """Uncompressed RLE -> (H, W) bool."""
    h, w = rle["size"]
    values = np.arange(len(rle["counts"])) % 2 == 1  # runs alternate 0, 1, 0, ...
    flat = np.repeat(values, rle["counts"])
    return flat.reshape(w, h).T  # column-major -> (h, w)


def rle_area(rle: dict) -> int:
    """Pixels in the mask of an uncompressed RLE."""
    return int(sum(rle["counts"][1::2]))


def rle_to_coco(rle: dict) -> dict:
    """Uncompressed RLE -> compressed COCO RLE with a str ``counts`` (JSON-ready)."""
    h, w = rle["size"]
    coco = mask_utils.frPyObjects(rle, h, w)
    coco["counts"] = coco["counts"].decode("utf-8")
    return coco


def remove_small_regions(mask: np.ndarray, area: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or drop islands (``"islands"``) smaller than ``area``
    pixels (8-connectivity); returns the mask and whether it changed. Dropping every island
    keeps the largest."""
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    holes = mode == "holes"
    working = (holes ^ mask).astype(np.uint8)
    n_labels, regions, stats, _ = cv2.connectedComponentsWithStats(working, 8)
    sizes = stats[1:, -1]  # label 0 is the background
    small = [i + 1 for i, s in enumerate(sizes) if s < area]
    if not small:
        return mask, False
    fill = [0, *small]
    if not holes:
        fill = [i for i in range(n_labels) if i not in fill] or [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill), True


def xyxy_to_xywh(box: np.ndarray) -> list:
    """One XYXY box -> [x, y, w, h], in the box's number type."""
    xywh = np.array(box)
    xywh[2:] -= xywh[:2]
    return xywh.tolist()
