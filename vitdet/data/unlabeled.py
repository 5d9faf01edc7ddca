"""A folder of unlabeled images for self-supervised pretraining (MAE), and its loaders.

Every image file under the folder counts (recursively, by extension: ``IMAGE_EXTENSIONS``),
whatever its size. Files that cannot be read (empty, truncated, not an image, too large; see
``vitdet.data.images.read_image``) are skipped: a warning names each once, another image takes
its place in the batch, and the loader's ``num_skipped`` counts them.

Training samples are RGB uint8 tensors (3, S, S): a random resized crop (MAE's: 0.2-1 of the
area, aspect 3/4-4/3, bicubic) and a horizontal flip. The model normalises them (0-255 units, as the
detector). The training loader is resumable like the detector's: sample i of the stream is
drawn from (seed, i) alone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.utils.data as torchdata
from detectron2.data.samplers import TrainingSampler
from torchvision.transforms import v2

from .images import IMAGE_EXTENSIONS, ImageReadError, read_image
from .loader import ResumableLoader, resumable_batches

__all__ = [
    "UnlabeledImages",
    "list_images",
    "train_transform",
    "eval_transform",
    "build_unlabeled_train_loader",
    "load_eval_images",
]

logger = logging.getLogger(__name__)


def list_images(root: str | os.PathLike) -> list[Path]:
    """Image files under ``root`` (recursive, by extension, case-insensitive), sorted."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root} does not exist")
    paths = sorted(
        p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not paths:
        extensions = " ".join(sorted(IMAGE_EXTENSIONS))
        raise FileNotFoundError(f"no image files under {root} (extensions: {extensions})")
    return paths


def train_transform(image_size: int, *, scale: tuple[float, float] = (0.2, 1.0)) -> Callable:
    """MAE's augmentation of a (3, H, W) uint8 image: a random crop of ``scale`` times the
    image area (aspect 3/4-4/3) resized to a square, and a horizontal flip."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(
                image_size,
                scale=tuple(scale),
                interpolation=v2.InterpolationMode.BICUBIC,
                antialias=True,
            ),
            v2.RandomHorizontalFlip(),
        ]
    )


def eval_transform(image_size: int, *, crop_fraction: float = 1.0) -> Callable:
    """The centre square of ``crop_fraction`` times the shorter side, resized to
    ``image_size``."""

    def transform(image: torch.Tensor) -> torch.Tensor:
        side = round(min(image.shape[-2:]) * crop_fraction)
        square = v2.functional.center_crop(image, [side, side])
        return v2.functional.resize(
            square,
            [image_size, image_size],
            interpolation=v2.InterpolationMode.BICUBIC,
            antialias=True,
        )

    return transform


class UnlabeledImages(torchdata.Dataset):
    """``dataset[i]``: image file i under ``root`` transformed, a (3, S, S) uint8 tensor, or None
    (with a warning naming the file) if the file cannot be read."""

    def __init__(self, root: str | os.PathLike, *, transform: Callable) -> None:
        self.root = str(root)
        self.paths = list_images(root)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor | None:
        try:
            image = read_image(self.paths[index])
        except ImageReadError as e:
            logger.warning(f"skipping an unreadable image: {e}")
            return None
        # h w c -> c h w (a copy: the decoded array is read-only)
        return self.transform(torch.tensor(image).permute(2, 0, 1))


def build_unlabeled_train_loader(
    dataset: UnlabeledImages,
    *,
    total_batch_size: int,
    seed: int,
    grad_accum_steps: int = 1,
    num_workers: int = 0,
    max_unreadable_fraction: float = 0.01,
) -> ResumableLoader:
    """Infinite loader of (N, 3, S, S) uint8 micro-batches: ``total_batch_size`` images per
    iteration over all ranks, in ``grad_accum_steps`` micro-batches per rank.

    ``start_at(k)`` gives the batches an uninterrupted run sees at iteration k; an unreadable
    image is replaced by the next readable one of the folder, up to ``max_unreadable_fraction``
    of the folder (beyond: ``DatasetError``).
    """
    # A record is an image's index; the dataset is the mapper.
    return resumable_batches(
        list(range(len(dataset))),
        dataset.__getitem__,
        TrainingSampler(len(dataset), seed=seed),
        total_batch_size=total_batch_size,
        seed=seed,
        grad_accum_steps=grad_accum_steps,
        num_workers=num_workers,
        collate_fn=torch.stack,
        max_skipped_fraction=max_unreadable_fraction,
    )


def load_eval_images(
    root: str | os.PathLike, *, image_size: int, num_images: int, crop_fraction: float = 1.0
) -> torch.Tensor:
    """The first ``num_images`` readable images under ``root`` (sorted), their centre squares
    (``eval_transform``): (N, 3, S, S) uint8, the fixed set the reconstructions are drawn on."""
    transform = eval_transform(image_size, crop_fraction=crop_fraction)
    dataset = UnlabeledImages(root, transform=transform)
    images = []
    for i in range(len(dataset)):
        image = dataset[i]
        if image is not None:
            images.append(image)
        if len(images) == num_images:
            break
    if not images:
        raise FileNotFoundError(f"no readable image under {root}")
    return torch.stack(images)
