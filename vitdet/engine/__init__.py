"""Training engine: detectron2's trainer and hooks plus what ViTDet training needs on top
(mixed-precision dtype, gradient accumulation, exact resume, atomic checkpoints, checked
config overrides, dataset registration)."""

from .checkpointer import AtomicCheckpointer
from .config import ConfigError, load_config, setup_datasets
from .evaluation import evaluate
from .launcher import launch_main
from .train_loader import build_resumable_train_loader
from .trainer import Trainer
from .training import (
    build_trainer,
    default_hooks,
    evaluate_only,
    resolve_device,
    setup_run,
    train,
)

__all__ = [
    "AtomicCheckpointer",
    "ConfigError",
    "Trainer",
    "build_resumable_train_loader",
    "build_trainer",
    "default_hooks",
    "evaluate",
    "evaluate_only",
    "launch_main",
    "load_config",
    "resolve_device",
    "setup_datasets",
    "setup_run",
    "train",
]
