"""Training runs: detectron2's trainer and hooks plus what ViTDet training needs on top (mixed
precision of a chosen dtype, gradient accumulation, exact resume, atomic and safely read
checkpoints, periodic evaluation with training time), for the detectors and for MAE."""

from .hooks import evaluation_rows
from .launcher import launch_main
from .mae import pretrain
from .runner import build_trainer, evaluate_only, run_provenance, setup_run, train

__all__ = [
    "build_trainer",
    "evaluate_only",
    "evaluation_rows",
    "launch_main",
    "pretrain",
    "run_provenance",
    "setup_run",
    "train",
]
