"""Evaluation of a model on ``cfg.dataloader.test`` with ``cfg.dataloader.evaluator``."""

from __future__ import annotations

import json
import logging
import os

import torch
from detectron2.config import instantiate
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm

from .atomic import write_atomically

__all__ = ["evaluate"]

logger = logging.getLogger(__name__)


def evaluate(cfg, model: torch.nn.Module) -> dict:
    """Run inference and the evaluator; returns ``{task: {metric: value}}``.

    The COCO evaluator logs the per-category AP table and keeps ``coco_instances_results.json``
    in its ``output_dir``; the results also go to ``<train.output_dir>/eval_results.json``.
    """
    results = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )
    if comm.is_main_process() and results:
        print_csv_format(results)
        path = os.path.join(cfg.train.output_dir, "eval_results.json")
        text = json.dumps(results, indent=2, sort_keys=True)
        write_atomically(path, lambda f: f.write(text.encode()))
        logger.info(f"Evaluation results written to {path}")
    return results
