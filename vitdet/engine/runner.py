"""Training and evaluation runs built from a LazyConfig: the one runner of every trainable
model here (the detectors of ``tools/train_net.py``, the MAE of ``tools/pretrain_mae.py``).

A run: ``setup_run`` (config with checked overrides, logging, datasets, device, the seed made
concrete, ``config.yaml``), then ``train`` or ``evaluate_only``. What runs is what the config
names: ``model``, ``optimizer``, ``lr_multiplier``, ``dataloader.train`` (a resumable loader:
``vitdet.data.loader``), ``dataloader.test`` / ``dataloader.evaluator``, ``train.*``. The runner
adds only run state: the start iteration, and the weights (``train.init_checkpoint`` or the
last checkpoint of ``train.output_dir``), both loaded through ``vitdet.checkpoint``.
"""

from __future__ import annotations

import argparse
import logging
import os
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from detectron2.config import instantiate
from detectron2.data import MetadataCatalog
from detectron2.engine import HookBase, create_ddp_model, default_setup, default_writers, hooks
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from omegaconf import DictConfig, OmegaConf

from vitdet.checkpoint import load_checkpoint
from vitdet.config import ConfigError, load_config, setup_datasets, writable_dir
from vitdet.device import keep_freed_memory, resolve_amp_dtype
from vitdet.provenance import Provenance

from .evaluation import evaluate
from .hooks import PrunedPeriodicCheckpointer, SkippedRecordsHook, TimedEvalHook
from .run_state import RunCheckpointer
from .trainer import Trainer

__all__ = [
    "Evaluation",
    "run_provenance",
    "build_model",
    "build_trainer",
    "evaluate_only",
    "resolve_device",
    "setup_run",
    "train",
]

logger = logging.getLogger(__name__)

# What a periodic evaluation computes: (model, iterations done) -> {name: value or dict}.
Evaluation = Callable[[torch.nn.Module, int], dict]


def resolve_device(cfg: DictConfig) -> None:
    """Fall back from CUDA to the CPU when there is no GPU. On the CPU, share the cores between
    this machine's processes, unless OMP_NUM_THREADS says otherwise (on a busy machine one
    thread per process can be several times faster than two that wait for each other), and keep
    freed memory for reuse where ``train.keep_freed_memory`` asks for it."""
    if torch.device(cfg.train.device).type == "cuda" and not torch.cuda.is_available():
        logger.info(f"train.device={cfg.train.device} but CUDA is not available: using the CPU")
        cfg.train.device = "cpu"
    if cfg.train.device == "cpu":
        if "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // comm.get_local_size()))
        logger.info(f"CPU run: {torch.get_num_threads()} torch threads per process")
        if cfg.train.keep_freed_memory:
            kept = keep_freed_memory()
            logger.info(f"Freed host memory kept for reuse (train.keep_freed_memory): {kept}")


def setup_run(
    config_file: str,
    overrides: Sequence[str],
    *,
    args: argparse.Namespace,
    coco_datasets: Sequence[Sequence[str]] = (),
) -> DictConfig:
    """The config of a run, ready to use: loaded with checked overrides, logging to
    ``train.output_dir``, datasets registered, num_classes set, device chosen, a random seed
    (``train.seed=-1``) drawn and written into the config, then detectron2's ``default_setup``
    (environment log, the final ``config.yaml``, seeds)."""
    cfg = load_config(config_file, overrides)
    if comm.is_main_process():
        writable_dir(cfg.train.output_dir, what="train.output_dir")
    setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="vitdet")
    setup_datasets(cfg, coco_datasets, overrides=overrides)
    resolve_device(cfg)
    if cfg.train.seed < 0:
        cfg.train.seed = comm.shared_random_seed()  # config.yaml then names the seed used
    default_setup(cfg, args)
    return cfg


def build_model(cfg: DictConfig) -> torch.nn.Module:
    """The model of ``cfg.model`` on ``cfg.train.device``."""
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    logger.info(f"Model:\n{model}")
    return model


# DDP warns once per process when a gradient's strides differ from its bucket's ("... may impair
# performance"). The weight gradient of a 1 x 1 convolution on a channels-last input (the mask
# predictor) differs only in the strides of its two size-1 dimensions, which address no memory:
# the same layout, so the warning is noise there. Every other mismatch still warns.
_SIZE_ONE_STRIDES_WARNING = (
    r"(?s)Grad strides do not match bucket view strides.*grad\.sizes\(\) = \[\d+, \d+, 1, 1\]"
)


def _wrap_ddp(cfg: DictConfig, model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when there are several processes (CPU: gloo).

    Every process starts from rank 0's buffers as well as its parameters: DDP copies buffers
    only with ``broadcast_buffers``, and each process builds the model under its own seed, so a
    buffer drawn at random (SAM's Fourier position features) would differ from process to
    process for the whole run."""
    if comm.get_world_size() > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)
        warnings.filterwarnings("ignore", message=_SIZE_ONE_STRIDES_WARNING, category=UserWarning)
    on_cpu = torch.device(cfg.train.device).type == "cpu"
    device_ids = None if on_cpu else [comm.get_local_rank()]
    return create_ddp_model(model, device_ids=device_ids, **cfg.train.ddp)


def _amp_dtype(cfg: DictConfig) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` on ``train.device`` (None: fp32), logged with why."""
    amp = cfg.train.amp
    if not amp.enabled:
        logger.info("Precision: float32 (train.amp.enabled=False)")
        return None
    try:
        choice = resolve_amp_dtype(amp.dtype, cfg.train.device)
    except ValueError:
        raise ConfigError(
            f"train.amp.dtype={amp.dtype!r}: use one of 'float16', 'bfloat16', 'auto'"
        ) from None
    logger.info(f"Precision: {choice.name} ({choice.reason})")
    return choice.dtype


def run_provenance(
    cfg: DictConfig, config_file: str | os.PathLike, overrides: Sequence[str]
) -> Provenance:
    """What the checkpoints of this run record: the config file and overrides, and the classes
    (and dataset category ids) of the first training dataset that has a class list."""
    names = OmegaConf.select(cfg, "dataloader.train.dataset.names", default=None) or []
    for name in [names] if isinstance(names, str) else names:
        metadata = MetadataCatalog.get(name)
        classes = metadata.get("thing_classes")
        if classes:
            id_map = metadata.get("thing_dataset_id_to_contiguous_id") or {}
            ids = sorted(id_map, key=id_map.get) if len(id_map) == len(classes) else []
            return Provenance(str(config_file), tuple(overrides), tuple(classes), tuple(ids))
    return Provenance(str(config_file), tuple(overrides))


def build_trainer(
    cfg: DictConfig, *, provenance: Provenance | None = None
) -> tuple[Trainer, RunCheckpointer]:
    """The model, optimizer, ``Trainer`` (without its data loader: it depends on the start
    iteration) and checkpointer of ``cfg`` (writing ``provenance`` into every checkpoint)."""
    amp_dtype = _amp_dtype(cfg)
    model = build_model(cfg)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    model = _wrap_ddp(cfg, model)
    trainer = Trainer(
        model,
        None,
        optimizer,
        seed=cfg.train.seed if cfg.train.seed >= 0 else comm.shared_random_seed(),
        device_type=torch.device(cfg.train.device).type,
        amp_dtype=amp_dtype,
        grad_accum_steps=cfg.train.grad_accum_steps,
        clip_grad_norm=cfg.train.clip_grad_norm,
    )
    checkpointer = RunCheckpointer(
        model,
        cfg.train.output_dir,
        provenance=provenance,
        save_to_disk=comm.is_main_process(),  # every rank loads, rank 0 alone writes
        trainer=trainer,
    )
    return trainer, checkpointer


def _hooks(
    cfg: DictConfig, checkpointer: RunCheckpointer, eval_function: Callable[[], dict]
) -> list[HookBase | None]:
    """Timer, lr schedule, checkpoints and writers (main process), skipped-image counts,
    evaluation."""
    main = comm.is_main_process()
    writers = default_writers(cfg.train.output_dir, cfg.train.max_iter) if main else []
    return [
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        PrunedPeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if main else None,
        SkippedRecordsHook(),
        TimedEvalHook(cfg.train.eval_period, eval_function),
        hooks.PeriodicWriter(writers, period=cfg.train.log_period) if main else None,
    ]


def detection_evaluation(cfg: DictConfig) -> Evaluation:
    """``cfg.dataloader.evaluator`` on ``cfg.dataloader.test`` (COCO / LVIS AP)."""
    return lambda model, iterations_done: evaluate(cfg, model)


def _load_weights(
    cfg: DictConfig, checkpointer: RunCheckpointer, *, resume: bool, init_format: str
) -> bool:
    """The one weight-loading policy: with ``resume`` and a checkpoint in ``train.output_dir``,
    the whole run state from it (True); else the model from ``train.init_checkpoint`` if set.
    Both strict and safe (``vitdet.checkpoint``)."""
    if resume and checkpointer.has_checkpoint():
        checkpointer.load(checkpointer.get_checkpoint_file())
        return True
    if cfg.train.init_checkpoint:
        load_checkpoint(checkpointer.model, cfg.train.init_checkpoint, source_format=init_format)
    return False


def _log_processes(cfg: DictConfig) -> None:
    """How a step's images are split: processes, backend, images per process per step
    (detectron2's ``default_setup`` has logged "World size: N")."""
    total = OmegaConf.select(cfg, "dataloader.train.total_batch_size", default=None)
    if total is None:
        return
    world_size = comm.get_world_size()
    backend = dist.get_backend() if dist.is_initialized() else "none (one process)"
    per_process, accum = total // world_size, cfg.train.grad_accum_steps
    logger.info(
        f"{world_size} process(es), backend {backend}: {per_process} images per process per "
        f"step in {accum} micro-batch(es) of {per_process // accum} "
        f"(dataloader.train.total_batch_size={total} over all processes)"
    )


def train(
    cfg: DictConfig,
    *,
    resume: bool,
    evaluation: Evaluation | None = None,
    init_format: str = "auto",
    provenance: Provenance | None = None,
) -> None:
    """Train ``cfg.model`` as configured: checkpoints, metrics and evaluation results go to
    ``train.output_dir``.

    resume: continue from ``<train.output_dir>/last_checkpoint`` if there is one (model,
        optimizer, iteration, seed, grad scaler, timing); otherwise start from
        ``train.init_checkpoint`` (if set, read as ``init_format``) at iteration 0.
    evaluation: what the periodic evaluation computes; by default the config's evaluator.
    provenance: recorded in every checkpoint (``run_provenance``).
    """
    evaluation = evaluation or detection_evaluation(cfg)
    trainer, checkpointer = build_trainer(cfg, provenance=provenance)

    def eval_function() -> dict:
        # iterations done: trainer.iter + 1 after a step, max_iter after the last one
        return evaluation(trainer.model, min(trainer.iter + 1, cfg.train.max_iter))

    trainer.register_hooks(_hooks(cfg, checkpointer, eval_function))
    start_iter = 0
    if _load_weights(cfg, checkpointer, resume=resume, init_format=init_format):
        start_iter = trainer.iter + 1
        if trainer.seed != cfg.train.seed:
            logger.warning(f"train.seed: {cfg.train.seed} -> {trainer.seed}, the resumed run's")
            cfg.train.seed = trainer.seed  # the loader's sample stream must be the same
    logger.info(f"Seed {trainer.seed}; starting at iteration {start_iter} of {cfg.train.max_iter}")
    _log_processes(cfg)
    loader = instantiate(cfg.dataloader.train)
    loader.start_at(start_iter)
    trainer.data_loader = loader
    trainer.train(start_iter, cfg.train.max_iter)


def evaluate_only(cfg: DictConfig, *, resume: bool) -> dict:
    """Evaluate the weights of ``train.init_checkpoint``, or with ``resume`` those of the last
    checkpoint in ``train.output_dir``."""
    model = build_model(cfg)
    checkpointer = RunCheckpointer(model, cfg.train.output_dir, save_to_disk=comm.is_main_process())
    if not (resume and checkpointer.has_checkpoint()) and not cfg.train.init_checkpoint:
        raise ConfigError("--eval-only needs train.init_checkpoint=<weights> or --resume")
    _load_weights(cfg, checkpointer, resume=resume, init_format="auto")
    return evaluate(cfg, _wrap_ddp(cfg, model))
