"""MAE pretraining runs built from a LazyConfig (what tools/pretrain_mae.py calls).

The engine's pieces do the training: its ``Trainer`` (mixed precision, gradient accumulation,
per-iteration seeding), ``AtomicCheckpointer`` (atomic files, exact resume), default hooks and
writers (``metrics.json``, TensorBoard, progress with ETA) and launcher (in the tool). What
differs from detection: the loader reads a folder of unlabeled images, and an evaluation is the
masked-patch loss on a fixed set of images plus a reconstruction picture.
"""

from __future__ import annotations

import logging
import os

import matplotlib
import torch
from detectron2.config import instantiate
from detectron2.engine import HookBase
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from omegaconf import DictConfig

from vitdet.checkpoint import read_checkpoint
from vitdet.data.unlabeled import UnlabeledImages
from vitdet.engine import build_trainer, default_hooks
from vitdet.engine.checkpointer import write_atomically
from vitdet.modeling.mae import MaskedAutoencoderViT, pixel_mask

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)

__all__ = ["pretrain", "evaluate_reconstruction", "reconstruction_rows", "save_reconstruction"]

logger = logging.getLogger(__name__)

RECONSTRUCTION_DIR = "reconstructions"  # under train.output_dir: iter_0001000.png, ...
COLUMNS = ("original", "masked", "reconstruction")
EVAL_MASK_SEED = 0  # the same masks at every evaluation, so pictures and losses compare


def _unwrap(model: torch.nn.Module) -> MaskedAutoencoderViT:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def reconstruction_rows(
    model: MaskedAutoencoderViT, images: torch.Tensor, *, seed: int = EVAL_MASK_SEED
) -> tuple[torch.Tensor, float]:
    """Original / masked / reconstructed images side by side, and the masked-patch loss.

    images: (N, 3, H, W) RGB 0-255. Returns (N, H, 3 * W, 3) uint8 rows and the loss.
    """
    generator = torch.Generator(images.device).manual_seed(seed)
    imgs = model.normalize(images)
    latent, masking = model.forward_encoder(imgs, generator=generator)
    pred = model.forward_decoder(latent, masking)
    loss = model.loss(imgs, pred, masking.mask).item()
    recon = model.reconstruction(imgs, pred, masking)
    masked = imgs * (1 - pixel_mask(masking, model.patch_size))  # masked patches: the mean colour
    panels = torch.cat([imgs, masked, recon], dim=3)  # side by side along the width
    pixels = (panels * model.pixel_std + model.pixel_mean).clamp(0, 255).round()
    return pixels.to(torch.uint8).permute(0, 2, 3, 1).cpu(), loss  # n c h w -> n h w c


def save_reconstruction(rows: torch.Tensor, path: str, *, title: str) -> None:
    """One picture of the rows (N, H, 3 * W, 3) uint8 with the column names above, as a PNG."""
    picture = rows.reshape(-1, *rows.shape[2:]).numpy()  # n h w c -> (n h) w c
    height, width = picture.shape[:2]
    scale = max(1.0, 480 / width)  # native size; small images enlarged so the labels fit
    fig, ax = plt.subplots(figsize=(width * scale / 100, height * scale / 100 + 0.6), dpi=100)
    ax.imshow(picture)
    ax.set_xticks([(i + 0.5) * width / len(COLUMNS) for i in range(len(COLUMNS))], COLUMNS)
    ax.xaxis.tick_top()
    ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    write_atomically(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)


@torch.no_grad()
def evaluate_reconstruction(
    model: torch.nn.Module, images: torch.Tensor, *, output_dir: str, iteration: int
) -> dict[str, float]:
    """Masked-patch loss on ``images`` with fixed masks; writes ``reconstructions/iter_*.png``
    and puts the picture into the event storage (TensorBoard)."""
    mae = _unwrap(model)
    was_training = mae.training
    mae.eval()
    rows, loss = reconstruction_rows(mae, images.to(mae.pixel_mean.device))
    mae.train(was_training)
    if comm.is_main_process():
        os.makedirs(os.path.join(output_dir, RECONSTRUCTION_DIR), exist_ok=True)
        path = os.path.join(output_dir, RECONSTRUCTION_DIR, f"iter_{iteration:07d}.png")
        title = f"iteration {iteration}, masked-patch loss {loss:.4f}"
        save_reconstruction(rows, path, title=title)
        logger.info(f"Reconstructions written to {path} ({title})")
        picture = rows.reshape(-1, *rows.shape[2:]).permute(2, 0, 1)  # (n h) w c -> c (n h) w
        get_event_storage().put_image("mae/reconstruction", picture.float() / 255)
    return {"mae_eval/loss": loss}


class UnreadableImagesCounter(HookBase):
    """Records how many files of the folder were found unreadable (and skipped) so far."""

    def __init__(self, dataset: UnlabeledImages) -> None:
        self._dataset = dataset

    def after_step(self) -> None:
        count = self._dataset.num_unreadable
        self.trainer.storage.put_scalar("data/unreadable_images", count, smoothing_hint=False)

    def after_train(self) -> None:
        count = self._dataset.num_unreadable
        if count:
            logger.warning(f"{count} of {len(self._dataset)} files were unreadable and skipped")


def _build_train_loader(cfg: DictConfig, dataset: UnlabeledImages, *, seed: int, start_iter: int):
    loader = cfg.dataloader.train
    loader.dataset = dataset
    loader.update(seed=seed, start_iter=start_iter, grad_accum_steps=cfg.train.grad_accum_steps)
    return instantiate(loader)


def pretrain(cfg: DictConfig, *, resume: bool) -> None:
    """Pretrain ``cfg.model`` (a ``MaskedAutoencoderViT``) on ``cfg.dataloader.train``.

    resume: continue from ``<train.output_dir>/last_checkpoint`` if there is one; otherwise
    start from ``train.init_checkpoint`` (an MAE checkpoint with its decoder, e.g. the released
    ``mae_visualize_vit_base.pth``: names must match exactly) or from scratch. The checkpoints
    (``model_final.pth``, ...) are ``train.init_checkpoint`` files for any ViTDet config.
    """
    trainer, checkpointer = build_trainer(cfg)
    dataset = instantiate(cfg.dataloader.train.dataset)
    logger.info(f"{len(dataset)} image files under {dataset.root}")
    eval_images = instantiate(cfg.dataloader.test)

    def evaluate() -> dict[str, float]:
        # iterations done: trainer.iter + 1 after a step, trainer.iter (== max_iter) after training
        done = min(trainer.iter + 1, cfg.train.max_iter)
        return evaluate_reconstruction(
            trainer.model, eval_images, output_dir=cfg.train.output_dir, iteration=done
        )

    counter = UnreadableImagesCounter(dataset)
    trainer.register_hooks(default_hooks(cfg, checkpointer, evaluate, extra_hooks=[counter]))
    start_iter = 0
    if resume and checkpointer.has_checkpoint():
        checkpointer.load(checkpointer.get_checkpoint_file())
        start_iter = trainer.iter + 1
    elif cfg.train.init_checkpoint:
        state = read_checkpoint(cfg.train.init_checkpoint, "mae").state_dict
        _unwrap(trainer.model).load_state_dict(state, strict=True)
        logger.info(f"Initialised from {cfg.train.init_checkpoint}")
    logger.info(f"Seed {trainer.seed}; starting at iteration {start_iter} of {cfg.train.max_iter}")
    loader = _build_train_loader(cfg, dataset, seed=trainer.seed, start_iter=start_iter)
    trainer.data_loader = loader
    trainer.train(start_iter, cfg.train.max_iter)
