"""A training loader whose output at iteration i depends only on (seed, i).

Same arguments as detectron2's ``build_detection_train_loader`` plus ``seed``, ``start_iter``
and ``grad_accum_steps``. The sampler's infinite index stream is numbered by global position;
a run that starts at iteration k skips the first ``k * total_batch_size`` positions (indices
only, no image is read) and every sample's augmentation is seeded from its position. A run
resumed at iteration k therefore sees the batches an uninterrupted run sees there.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch.utils.data as torchdata
from detectron2.data import build_batch_data_loader
from detectron2.data.common import DatasetFromList
from detectron2.data.samplers import TrainingSampler
from detectron2.utils import comm

from .seeding import SAMPLE_STREAM, preserved_rng_state, seed_everything

__all__ = ["PositionedSampler", "SeededMapDataset", "build_resumable_train_loader"]

logger = logging.getLogger(__name__)


class PositionedSampler(torchdata.Sampler):
    """Yields ``(position, index)`` from an infinite detectron2 sampler, this rank's share.

    ``sampler`` must offer ``_infinite_indices()`` (``TrainingSampler``,
    ``RepeatFactorTrainingSampler``): its un-sharded, seeded stream. Rank r of W takes the
    positions ``start + r, start + r + W, ...`` as ``TrainingSampler`` does from 0.
    """

    def __init__(self, sampler: torchdata.Sampler, *, start: int) -> None:
        if not hasattr(sampler, "_infinite_indices"):
            raise TypeError(
                f"{type(sampler).__name__} has no seeded infinite index stream "
                "(_infinite_indices); use TrainingSampler or RepeatFactorTrainingSampler"
            )
        self._sampler = sampler
        self._start = start
        self._rank = comm.get_rank()
        self._world_size = comm.get_world_size()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        first = self._start + self._rank
        indices = itertools.islice(self._sampler._infinite_indices(), first, None, self._world_size)
        yield from zip(itertools.count(first, self._world_size), indices)


class SeededMapDataset(torchdata.Dataset):
    """``dataset[(position, index)] = mapper(dicts[index])`` with the global RNGs seeded from
    (seed, position) during the call and restored afterwards."""

    def __init__(self, dicts: list[dict], mapper: Callable[[dict], Any], *, seed: int) -> None:
        self._dicts = DatasetFromList(dicts, copy=False)
        self._mapper = mapper
        self._seed = seed

    def __len__(self) -> int:
        return len(self._dicts)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        position, index = key
        with preserved_rng_state():
            seed_everything(self._seed, SAMPLE_STREAM, position)
            # A mapper may drop a sample (None); the next images stand in, deterministically.
            for offset in range(len(self._dicts)):
                data = self._mapper(self._dicts[(index + offset) % len(self._dicts)])
                if data is not None:
                    return data
        raise RuntimeError("the mapper rejected every image of the training set")


def count_instances(dicts: list[dict]) -> int:
    """Number of non-crowd instance annotations in detectron2 dataset dicts."""
    return sum(not a.get("iscrowd", 0) for d in dicts for a in d.get("annotations", ()))


def build_resumable_train_loader(
    dataset: list[dict],
    *,
    mapper: Callable[[dict], Any],
    total_batch_size: int,
    seed: int,
    start_iter: int = 0,
    grad_accum_steps: int = 1,
    sampler: torchdata.Sampler | None = None,
    aspect_ratio_grouping: bool = True,
    num_workers: int = 0,
) -> torchdata.DataLoader:
    """Loader of micro-batches: ``total_batch_size`` images per iteration over all ranks, in
    ``grad_accum_steps`` micro-batches of ``total_batch_size / (grad_accum_steps * world)``
    images per rank.

    dataset: detectron2 dataset dicts (a list); at least one non-crowd annotation is required.
    """
    if not isinstance(dataset, list):
        raise TypeError(f"expected a list of dataset dicts, got {type(dataset).__name__}")
    if count_instances(dataset) == 0:
        raise ValueError(
            f"the training set ({len(dataset)} images) has no instance annotations; "
            "refusing to train on nothing"
        )
    world_size = comm.get_world_size()
    per_step = grad_accum_steps * world_size
    if total_batch_size % per_step:
        raise ValueError(
            f"total_batch_size {total_batch_size} is not divisible by grad_accum_steps "
            f"{grad_accum_steps} x {world_size} processes"
        )
    if sampler is None:
        sampler = TrainingSampler(len(dataset), seed=seed)
    if aspect_ratio_grouping and start_iter > 0:
        logger.warning(
            "aspect_ratio_grouping: the grouping buffers start empty on resume, so the first "
            "batches after iteration %d differ from an uninterrupted run",
            start_iter,
        )
    return build_batch_data_loader(
        SeededMapDataset(dataset, mapper, seed=seed),
        PositionedSampler(sampler, start=start_iter * total_batch_size),
        total_batch_size // grad_accum_steps,
        aspect_ratio_grouping=aspect_ratio_grouping,
        num_workers=num_workers,
        seed=seed,  # the loader's own generator: creating it draws nothing from torch's RNG
    )
