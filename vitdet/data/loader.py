"""Training loaders whose output at iteration i depends only on (seed, i).

``build_resumable_train_loader`` takes the arguments of detectron2's
``build_detection_train_loader`` plus ``seed`` and ``grad_accum_steps``; the configs name it
(``configs/common/data/coco_lsj.py``, ``seed="${train.seed}"``). The runner then tells the loader
where the run starts: ``loader.start_at(iteration)`` before the first batch.

The sampler's infinite index stream is numbered by global position; a run that starts at
iteration k skips the first ``k * total_batch_size`` positions (indices only, no image is read)
and every sample's augmentation is seeded from its position. A run resumed at iteration k
therefore sees the batches an uninterrupted run sees there.

A mapper returns None for a record it can never use (an unreadable image): the record is
flagged in shared memory (so data-loader workers see it too), the next record of the list
stands in, and ``ResumableLoader.num_skipped`` counts the flagged records. When more than
``max_skipped_fraction`` of the records are flagged, the data is broken rather than a few
files: ``DatasetError``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.utils.data as torchdata
from detectron2.data import build_batch_data_loader
from detectron2.data.common import DatasetFromList
from detectron2.data.samplers import TrainingSampler
from detectron2.utils import comm

from .coco import DatasetError
from .seeding import SAMPLE_STREAM, preserved_rng_state, seed_everything

__all__ = [
    "PositionedSampler",
    "ResumableLoader",
    "SeededMapDataset",
    "build_resumable_train_loader",
    "micro_batch_size",
    "resumable_batches",
]

logger = logging.getLogger(__name__)


class PositionedSampler(torchdata.Sampler):
    """Yields ``(position, index)`` from an infinite detectron2 sampler, this rank's share.

    ``sampler`` must offer ``_infinite_indices()`` (``TrainingSampler``,
    ``RepeatFactorTrainingSampler``): its un-sharded, seeded stream. The stream is cut into
    chunks of ``chunk`` positions (the images of one rank in one iteration) dealt to the ranks
    in turn: rank r of W takes ``[start + (r + k W) chunk, start + (r + k W + 1) chunk)`` for
    k = 0, 1, ... The ranks' shares partition the stream, so every image of an epoch is seen
    once across the ranks; and iteration i's images are the positions ``[i T, (i + 1) T)``
    (T = W chunk), in stream order over the ranks, however many ranks there are.
    """

    def __init__(self, sampler: torchdata.Sampler, *, start: int = 0, chunk: int = 1) -> None:
        if not hasattr(sampler, "_infinite_indices"):
            raise TypeError(
                f"{type(sampler).__name__} has no seeded infinite index stream "
                "(_infinite_indices); use TrainingSampler or RepeatFactorTrainingSampler"
            )
        self._sampler = sampler
        self.start = start
        self._chunk = chunk
        self._rank = comm.get_rank()
        self._world_size = comm.get_world_size()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        stream = itertools.islice(self._sampler._infinite_indices(), self.start, None)
        per_round = self._chunk * self._world_size
        for round_start in itertools.count(self.start, per_round):
            # round_start: the first position of this round's chunks, one per rank
            indices = list(itertools.islice(stream, per_round))
            first = self._rank * self._chunk
            positions = range(round_start + first, round_start + first + self._chunk)
            yield from zip(positions, indices[first : first + self._chunk], strict=True)


class SeededMapDataset(torchdata.Dataset):
    """``dataset[(position, index)] = mapper(records[index])`` with the global RNGs seeded from
    (seed, position) during the call and restored afterwards."""

    def __init__(
        self,
        records: list,
        mapper: Callable[[Any], Any],
        *,
        seed: int,
        max_skipped_fraction: float = 0.01,
    ) -> None:
        self._records = DatasetFromList(records, copy=False)
        self._mapper = mapper
        self._seed = seed
        self._max_skipped = max_skipped_fraction * len(records)
        self._skipped = torch.zeros(len(records), dtype=torch.bool).share_memory_()

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        position, index = key
        with preserved_rng_state():
            seed_everything(self._seed, SAMPLE_STREAM, position)
            # A record the mapper rejected once is skipped; the next ones stand in, in order.
            for offset in range(len(self._records)):
                i = (index + offset) % len(self._records)
                if self._skipped[i]:
                    continue
                data = self._mapper(self._records[i])
                if data is not None:
                    return data
                self._skipped[i] = True
                if self.num_skipped > self._max_skipped:
                    raise DatasetError(
                        f"{self.num_skipped} of {len(self)} training images could not be used "
                        f"(more than {self._max_skipped / len(self):.1%}): see the warnings "
                        "naming them"
                    )
        raise DatasetError(f"none of the {len(self)} training images could be used")

    @property
    def num_skipped(self) -> int:
        """Records the mapper rejected so far (this process and its loader workers)."""
        return int(self._skipped.sum())


class ResumableLoader:
    """An infinite iterable of micro-batches (what detectron2's ``build_batch_data_loader``
    returns) that starts at any iteration and tells how many records were skipped as unusable.
    """

    def __init__(
        self,
        batches: Iterable,
        dataset: SeededMapDataset,
        sampler: PositionedSampler,
        *,
        total_batch_size: int,
        aspect_ratio_grouping: bool,
    ) -> None:
        self._batches = batches
        self._dataset = dataset
        self._sampler = sampler
        self._total_batch_size = total_batch_size
        self._aspect_ratio_grouping = aspect_ratio_grouping

    def start_at(self, iteration: int) -> None:
        """Yield, from the next ``iter()`` on, the batches of ``iteration``, ``iteration + 1``,
        ... (no image before them is read)."""
        self._sampler.start = iteration * self._total_batch_size
        if self._aspect_ratio_grouping and iteration > 0:
            logger.warning(
                "aspect_ratio_grouping: the grouping buffers start empty on resume, so the first "
                "batches after iteration %d differ from an uninterrupted run",
                iteration,
            )

    def __iter__(self) -> Iterator:
        return iter(self._batches)

    @property
    def num_skipped(self) -> int:
        return self._dataset.num_skipped

    @property
    def num_records(self) -> int:
        return len(self._dataset)


def micro_batch_size(total_batch_size: int, grad_accum_steps: int) -> int:
    """Images per process per micro-batch: ``total_batch_size`` is per optimizer step over all
    processes, taken in ``grad_accum_steps`` micro-batches each."""
    world_size = comm.get_world_size()
    per_step = grad_accum_steps * world_size
    if grad_accum_steps < 1 or total_batch_size % per_step:
        raise ValueError(
            f"total_batch_size {total_batch_size} is not divisible by grad_accum_steps "
            f"{grad_accum_steps} x {world_size} processes"
        )
    return total_batch_size // per_step


def resumable_batches(
    records: list,
    mapper: Callable[[Any], Any],
    sampler: torchdata.Sampler,
    *,
    total_batch_size: int,
    seed: int,
    grad_accum_steps: int,
    aspect_ratio_grouping: bool = False,
    num_workers: int = 0,
    collate_fn: Callable | None = None,
    max_skipped_fraction: float = 0.01,
) -> ResumableLoader:
    """Micro-batches of ``mapper(records[i])`` for the indices of ``sampler``'s seeded infinite
    stream, this rank's share, from iteration 0 or ``start_at``'s."""
    dataset = SeededMapDataset(
        records, mapper, seed=seed, max_skipped_fraction=max_skipped_fraction
    )
    # a rank's images of one iteration are consecutive positions of the stream
    positions = PositionedSampler(
        sampler, chunk=micro_batch_size(total_batch_size, grad_accum_steps) * grad_accum_steps
    )
    batches = build_batch_data_loader(
        dataset,
        positions,
        total_batch_size // grad_accum_steps,  # over all ranks; detectron2 divides by the world
        aspect_ratio_grouping=aspect_ratio_grouping,
        num_workers=num_workers,
        collate_fn=collate_fn,
        seed=seed,  # the loader's own generator: creating it draws nothing from torch's RNG
    )
    return ResumableLoader(
        batches,
        dataset,
        positions,
        total_batch_size=total_batch_size,
        aspect_ratio_grouping=aspect_ratio_grouping,
    )


def count_instances(dicts: list[dict]) -> int:
    """Number of non-crowd instance annotations in detectron2 dataset dicts."""
    return sum(not a.get("iscrowd", 0) for d in dicts for a in d.get("annotations", ()))


def build_resumable_train_loader(
    dataset: list[dict],
    *,
    mapper: Callable[[dict], Any],
    total_batch_size: int,
    seed: int,
    grad_accum_steps: int = 1,
    sampler: torchdata.Sampler | None = None,
    aspect_ratio_grouping: bool = True,
    num_workers: int = 0,
    max_unreadable_fraction: float = 0.01,
) -> ResumableLoader:
    """Loader of micro-batches of detection records: ``total_batch_size`` images per iteration
    over all ranks, in ``grad_accum_steps`` micro-batches of ``total_batch_size /
    (grad_accum_steps * world)`` images per rank.

    dataset: detectron2 dataset dicts (a list); at least one non-crowd annotation is required.
    sampler: a detectron2 sampler with a seeded infinite stream (``TrainingSampler``, the
        default, or ``RepeatFactorTrainingSampler``); its seed must be ``seed``.
    max_unreadable_fraction: unreadable images are skipped (the mapper returns None) up to
        this fraction of the set; beyond it training stops with ``DatasetError``.
    """
    if not isinstance(dataset, list):
        raise TypeError(f"expected a list of dataset dicts, got {type(dataset).__name__}")
    if count_instances(dataset) == 0:
        raise ValueError(
            f"the training set ({len(dataset)} images) has no instance annotations; "
            "refusing to train on nothing"
        )
    if sampler is None:
        sampler = TrainingSampler(len(dataset), seed=seed)
    return resumable_batches(
        dataset,
        mapper,
        sampler,
        total_batch_size=total_batch_size,
        seed=seed,
        grad_accum_steps=grad_accum_steps,
        aspect_ratio_grouping=aspect_ratio_grouping,
        num_workers=num_workers,
        max_skipped_fraction=max_unreadable_fraction,
    )
