"""Training and evaluation runs built from a LazyConfig (what tools/train_net.py calls)."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Sequence

import torch
from detectron2.config import instantiate
from detectron2.data import build_detection_train_loader
from detectron2.engine import HookBase, create_ddp_model, default_setup, default_writers, hooks
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from omegaconf import DictConfig

from vitdet.checkpoint import load_checkpoint

from .checkpointer import AtomicCheckpointer
from .config import ConfigError, load_config, setup_datasets
from .evaluation import evaluate
from .hooks import TimedEvalHook
from .train_loader import build_resumable_train_loader
from .trainer import Trainer

__all__ = [
    "AMP_DTYPES",
    "build_model",
    "build_trainer",
    "default_hooks",
    "evaluate_only",
    "resolve_device",
    "setup_run",
    "train",
    "wrap_ddp",
]

logger = logging.getLogger(__name__)

AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(cfg: DictConfig) -> None:
    """Fall back from CUDA to the CPU when there is no GPU. On the CPU, share the cores between
    this machine's processes, unless OMP_NUM_THREADS says otherwise (on a busy machine one
    thread per process can be several times faster than two that wait for each other)."""
    if torch.device(cfg.train.device).type == "cuda" and not torch.cuda.is_available():
        logger.info(f"train.device={cfg.train.device} but CUDA is not available: using the CPU")
        cfg.train.device = "cpu"
    if cfg.train.device == "cpu":
        if "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // comm.get_local_size()))
        logger.info(f"CPU run: {torch.get_num_threads()} torch threads per process")


def setup_run(
    config_file: str,
    overrides: Sequence[str],
    *,
    args: argparse.Namespace,
    coco_datasets: Sequence[Sequence[str]] = (),
) -> DictConfig:
    """The config of a run, ready to use: loaded with checked overrides, logging to
    ``train.output_dir``, datasets registered, num_classes set, device chosen, then
    detectron2's ``default_setup`` (environment log, the final ``config.yaml``, seeds)."""
    cfg = load_config(config_file, overrides)
    setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="vitdet")
    setup_datasets(cfg, coco_datasets, overrides=overrides)
    resolve_device(cfg)
    default_setup(cfg, args)
    return cfg


def build_model(cfg: DictConfig) -> torch.nn.Module:
    """The model of ``cfg.model`` on ``cfg.train.device``."""
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    logger.info(f"Model:\n{model}")
    return model


def wrap_ddp(cfg: DictConfig, model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when there are several processes (CPU: gloo)."""
    on_cpu = torch.device(cfg.train.device).type == "cpu"
    device_ids = None if on_cpu else [comm.get_local_rank()]
    return create_ddp_model(model, device_ids=device_ids, **cfg.train.ddp)


def build_trainer(cfg: DictConfig) -> tuple[Trainer, AtomicCheckpointer]:
    """The model, optimizer, ``Trainer`` (without its data loader: it depends on the start
    iteration) and checkpointer of ``cfg``."""
    amp = cfg.train.amp
    if amp.dtype not in AMP_DTYPES:
        raise ConfigError(f"train.amp.dtype={amp.dtype!r}: use one of {sorted(AMP_DTYPES)}")
    model = build_model(cfg)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    model = wrap_ddp(cfg, model)
    trainer = Trainer(
        model,
        None,
        optimizer,
        seed=cfg.train.seed if cfg.train.seed >= 0 else comm.shared_random_seed(),
        device_type=torch.device(cfg.train.device).type,
        amp_dtype=AMP_DTYPES[amp.dtype] if amp.enabled else None,
        grad_accum_steps=cfg.train.grad_accum_steps,
    )
    return trainer, AtomicCheckpointer(model, cfg.train.output_dir, trainer=trainer)


def default_hooks(
    cfg: DictConfig,
    checkpointer: AtomicCheckpointer,
    eval_function: Callable[[], dict],
    extra_hooks: Sequence[HookBase] = (),
) -> list[HookBase]:
    """Timer, lr schedule, checkpoints and writers (main process), evaluation; ``extra_hooks``
    run before the evaluation."""
    main = comm.is_main_process()
    writers = default_writers(cfg.train.output_dir, cfg.train.max_iter) if main else []
    return [
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if main else None,
        *extra_hooks,
        TimedEvalHook(cfg.train.eval_period, eval_function),
        hooks.PeriodicWriter(writers, period=cfg.train.log_period) if main else None,
    ]


def _build_train_loader(cfg: DictConfig, *, seed: int, start_iter: int):
    """``cfg.dataloader.train`` built by the resumable version of detectron2's loader."""
    loader = cfg.dataloader.train
    if loader._target_ not in (build_detection_train_loader, build_resumable_train_loader):
        raise ValueError(
            f"dataloader.train must be built by build_detection_train_loader, got {loader._target_}"
        )
    loader._target_ = build_resumable_train_loader
    sampler = loader.get("sampler")
    if sampler is not None:
        sampler.seed = seed  # the index stream must be the same after a resume
    loader.update(seed=seed, start_iter=start_iter, grad_accum_steps=cfg.train.grad_accum_steps)
    return instantiate(loader)


def train(cfg: DictConfig, *, resume: bool) -> None:
    """Train ``cfg.model`` as configured: checkpoints, metrics and evaluation results go to
    ``train.output_dir``.

    resume: continue from ``<train.output_dir>/last_checkpoint`` if there is one (model,
    optimizer, iteration, seed, grad scaler, timing); otherwise start from
    ``train.init_checkpoint`` (if set) at iteration 0.
    """
    trainer, checkpointer = build_trainer(cfg)
    trainer.register_hooks(default_hooks(cfg, checkpointer, lambda: evaluate(cfg, trainer.model)))
    start_iter = 0
    if resume and checkpointer.has_checkpoint():
        checkpointer.load(checkpointer.get_checkpoint_file())
        start_iter = trainer.iter + 1
    elif cfg.train.init_checkpoint:
        load_checkpoint(checkpointer.model, cfg.train.init_checkpoint)
    logger.info(f"Seed {trainer.seed}; starting at iteration {start_iter} of {cfg.train.max_iter}")
    trainer.data_loader = _build_train_loader(cfg, seed=trainer.seed, start_iter=start_iter)
    trainer.train(start_iter, cfg.train.max_iter)


def evaluate_only(cfg: DictConfig, *, resume: bool) -> dict:
    """Evaluate the weights of ``train.init_checkpoint``, or with ``resume`` those of the last
    checkpoint in ``train.output_dir``."""
    model = build_model(cfg)
    checkpointer = AtomicCheckpointer(model, cfg.train.output_dir)
    if resume and checkpointer.has_checkpoint():
        checkpointer.load(checkpointer.get_checkpoint_file())
    elif cfg.train.init_checkpoint:
        load_checkpoint(model, cfg.train.init_checkpoint)
    else:
        raise ConfigError("--eval-only needs train.init_checkpoint=<weights> or --resume")
    return evaluate(cfg, wrap_ddp(cfg, model))
