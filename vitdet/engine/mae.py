"""MAE pretraining runs (what tools/pretrain_mae.py calls): the engine's runner with the
MAE's own evaluation.

Everything else is the detectors' run: the ``Trainer`` (mixed precision, gradient
accumulation, per-iteration seeding), ``RunCheckpointer`` (atomic files, exact resume), hooks
and writers (``metrics.json``, TensorBoard, progress with ETA, skipped-image counts), the
config's resumable loader (``vitdet.data.unlabeled``). An evaluation is the masked-patch loss on
a fixed set of images plus a reconstruction picture.
"""

from __future__ import annotations

import logging
import os

import torch
from detectron2.config import instantiate
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from matplotlib.figure import Figure
from omegaconf import DictConfig

from vitdet.checkpoint import unwrap
from vitdet.modeling.mae import MaskedAutoencoderViT, pixel_mask
from vitdet.provenance import Provenance

from .atomic import write_atomically
from .runner import Evaluation, train

__all__ = [
    "pretrain",
    "reconstruction_evaluation",
    "evaluate_reconstruction",
    "reconstruction_rows",
    "save_reconstruction",
]

logger = logging.getLogger(__name__)

RECONSTRUCTION_DIR = "reconstructions"  # under train.output_dir: iter_0001000.png, ...
COLUMNS = ("original", "masked", "reconstruction")
EVAL_MASK_SEED = 0  # the same masks at every evaluation, so pictures and losses compare


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
    fig = Figure(figsize=(width * scale / 100, height * scale / 100 + 0.6), dpi=100)
    ax = fig.subplots()
    ax.imshow(picture)
    ax.set_xticks([(i + 0.5) * width / len(COLUMNS) for i in range(len(COLUMNS))], COLUMNS)
    ax.xaxis.tick_top()
    ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    write_atomically(path, lambda f: fig.savefig(f, format="png"))


@torch.no_grad()
def evaluate_reconstruction(
    model: torch.nn.Module, images: torch.Tensor, *, output_dir: str, iteration: int
) -> dict[str, float]:
    """Masked-patch loss on ``images`` with fixed masks; writes ``reconstructions/iter_*.png``
    and puts the picture into the event storage (TensorBoard)."""
    mae = unwrap(model)
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


def reconstruction_evaluation(cfg: DictConfig) -> Evaluation:
    """The MAE's periodic evaluation: ``evaluate_reconstruction`` on the fixed images of
    ``cfg.dataloader.test``."""
    images = instantiate(cfg.dataloader.test)

    def evaluation(model: torch.nn.Module, iterations_done: int) -> dict[str, float]:
        return evaluate_reconstruction(
            model, images, output_dir=cfg.train.output_dir, iteration=iterations_done
        )

    return evaluation


def pretrain(cfg: DictConfig, *, resume: bool, provenance: Provenance | None = None) -> None:
    """Pretrain ``cfg.model`` (a ``MaskedAutoencoderViT``) on ``cfg.dataloader.train``.

    resume: continue from ``<train.output_dir>/last_checkpoint`` if there is one; otherwise
    start from ``train.init_checkpoint`` (an MAE checkpoint with its decoder, e.g. the released
    ``mae_visualize_vit_base.pth``: names must match exactly, format ``own``) or from scratch.
    The checkpoints (``model_final.pth``, ...) are ``train.init_checkpoint`` files for any
    ViTDet config.
    """
    evaluation = reconstruction_evaluation(cfg)
    train(cfg, resume=resume, evaluation=evaluation, init_format="own", provenance=provenance)
