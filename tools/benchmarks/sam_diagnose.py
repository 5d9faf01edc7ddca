#!/usr/bin/env python
"""Where a trained SAM loses mIoU: output choice, object size, train vs held-out images.

    python tools/benchmarks/sam_diagnose.py --weights output/sam/model_final.pth \
        [--config-file configs/SAM/sam_vit_tiny_synthetic.py] [--datasets synthetic_val \
        synthetic_train] [--limit 100] [--register-coco NAME JSON DIR] [key=value ...]

For every ground-truth mask of each dataset (the first ``--limit`` images), with the evaluation's
prompts (the exact box, the centre-most point; ``TrainableSam.evaluation_prompt``), the IoU of
each of the decoder's four outputs, then per prompt:

- ``single``: the single output (token 0), what a box is evaluated on unless
  ``model.box_multimask_output``;
- ``chosen``: the multimask output with the highest predicted IoU, what a point (and a box with
  ``box_multimask_output``) is evaluated on;
- ``best``: the best multimask output by actual IoU: what a perfect IoU head would choose.

``box`` / ``point`` ("as evaluated") equal the evaluator's ``sam/box_mIoU`` and
``sam/point_mIoU``. ``box_spill``: the share of the evaluated box mask's pixels that lie on other
ground-truth objects of the image (a mask that takes in part of an occluder or a neighbour);
below the table, the masks with a spill over ``SPILL`` and their share of the box's error
(1 - IoU). The table also splits the columns by object area (pixels of the resized image).
Trailing ``key=value`` arguments override the config, as in tools/train_net.py.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterable

import numpy as np
import torch
from detectron2.config import instantiate

from vitdet.checkpoint import load_checkpoint
from vitdet.config import load_config, register_datasets
from vitdet.device import cpu_model
from vitdet.modeling.sam.training import TrainableSam, gt_masks_of, mask_iou

CONFIG = "configs/SAM/sam_vit_tiny_synthetic.py"
AREA_BINS = (0, 400, 1600, 6400, float("inf"))  # px of the resized image
COLUMNS = (
    "box", "box_single", "box_chosen", "box_best", "point", "point_single", "point_best",
    "box_spill",
)  # fmt: skip
SPILL = 0.2  # box_spill above which a mask counts as spilling onto other objects


@torch.no_grad()
def diagnose(model: TrainableSam, batches: Iterable[list[dict]], *, limit: int | None) -> dict:
    """Per ground-truth mask: ``area`` and the IoU columns of the module docstring, as arrays."""
    rows: dict[str, list[float]] = {name: [] for name in ("area", *COLUMNS)}
    records = itertools.islice((record for batch in batches for record in batch), limit)
    for record in records:
        size = tuple(record["image"].shape[-2:])
        gt = gt_masks_of(record["instances"], size).to(model.device)
        if len(gt) == 0:
            continue
        embedding = model.embed([record["image"]])[0]
        index = torch.arange(len(gt), device=gt.device)
        for name, use_box in (("box", True), ("point", False)):
            _, _, logits, iou_pred = model.evaluation_prompt(embedding, gt, size, use_box=use_box)
            masks = model.upsample_logits(logits.flatten(0, 1), size) > model.mask_threshold
            # (n 4) h w -> n 4: the IoU of every output
            ious = mask_iou(masks, gt.repeat_interleave(4, dim=0)).reshape(len(gt), 4)
            evaluated = model.evaluated_output(iou_pred, use_box=use_box)
            rows[name] += ious[index, evaluated].tolist()
            rows[f"{name}_single"] += ious[:, 0].tolist()
            rows[f"{name}_best"] += ious[:, 1:].max(1).values.tolist()
            if use_box:  # the multimask output by predicted IoU, as a point is answered
                chosen = model.evaluated_output(iou_pred, use_box=False)
                rows["box_chosen"] += ious[index, chosen].tolist()
                rows["box_spill"] += spill(masks.reshape(len(gt), 4, *size)[index, evaluated], gt)
        rows["area"] += gt.flatten(1).sum(1).float().tolist()
    return {name: np.array(values) for name, values in rows.items()}


def spill(pred: torch.Tensor, gt: torch.Tensor) -> list[float]:
    """Per mask, the share of the predicted mask's pixels (N, h, w) on the other ground-truth
    masks of ``gt`` (N, h, w) and not on its own (0 for an empty prediction)."""
    gt, pred = gt.flatten(1), pred.flatten(1)
    on_others = (gt.int().sum(0) - gt.int()) > 0  # another object covers the pixel
    outside = (pred & on_others & ~gt).sum(1).float()
    return (outside / pred.sum(1).clamp(min=1)).tolist()


def spill_summary(results: dict[str, dict]) -> str:
    """One line per dataset: the masks spilling over ``SPILL`` and their share of box error."""
    lines = []
    for dataset, rows in results.items():
        spilling, error = rows["box_spill"] > SPILL, 1 - rows["box"]
        share = error[spilling].sum() / max(error.sum(), 1e-9)
        lines.append(
            f"{dataset}: {spilling.mean():.1%} of the box masks spill more than {SPILL:.0%} of "
            f"their pixels onto other objects; they hold {share:.1%} of the box error"
        )
    return "\n".join(lines) + "\n"


def table(results: dict[str, dict]) -> str:
    """Markdown: one row per dataset and area bin (and "all"), the mean of each column (an IoU,
    or for ``box_spill`` a share of pixels)."""
    lines = [
        "| dataset | area (px) | masks | " + " | ".join(COLUMNS) + " |",
        "|---" * (3 + len(COLUMNS)) + "|",
    ]
    for dataset, rows in results.items():
        bins = [("all", np.ones_like(rows["area"], dtype=bool))]
        for low, high in zip(AREA_BINS, AREA_BINS[1:], strict=False):
            label = f">= {low}" if high == float("inf") else f"{low}-{high}"
            bins.append((label, (rows["area"] >= low) & (rows["area"] < high)))
        for label, keep in bins:
            if not keep.any():
                continue
            means = " | ".join(f"{rows[c][keep].mean():.3f}" for c in COLUMNS)
            lines.append(f"| {dataset} | {label} | {int(keep.sum())} | {means} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", default=CONFIG)
    parser.add_argument("--weights", required=True, help="a checkpoint of the config's model")
    parser.add_argument("--datasets", nargs="+", default=["synthetic_val", "synthetic_train"])
    parser.add_argument("--limit", type=int, default=100, help="images per dataset (0: all)")
    parser.add_argument(
        "--register-coco", nargs=3, action="append", default=[], metavar=("NAME", "JSON", "DIR"),
        help="a COCO-format dataset to name in --datasets (as in tools/train_net.py)",
    )  # fmt: skip
    parser.add_argument("opts", nargs="*", help="config overrides key=value")
    args = parser.parse_intermixed_args()

    cfg = load_config(args.config_file, args.opts)
    register_datasets(cfg, args.register_coco)
    model = instantiate(cfg.model).eval()
    load_checkpoint(model, args.weights, source_format="own")
    results = {}
    for name in args.datasets:  # in fp32, as the evaluation of tools/train_net.py
        cfg.dataloader.test.dataset.names = name
        loader = instantiate(cfg.dataloader.test)
        results[name] = diagnose(model, loader, limit=args.limit or None)
    print(f"{args.weights}; CPU: {cpu_model()}")
    print(table(results))
    print(spill_summary(results))


if __name__ == "__main__":
    main()
