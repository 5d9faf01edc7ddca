"""Seeded fixed subsets of a registered dataset, named ``"<dataset>@<percent>%"``.

``dataloader.train.dataset.names = "synthetic_train@10%"`` trains on 10% of the images of
``synthetic_train`` (label-efficiency experiments: the same images every run, on every machine).
The subset is ``round(N * percent / 100)`` images (at least 1) of the base dataset's N, chosen by
a permutation of the images in ``image_id`` order drawn from ``np.random.default_rng(seed)``
(seed 0 for names): the p% subset is the first images of that permutation, so a smaller
percentage is always contained in a larger one. The records keep the base dataset's order.

``vitdet.config`` registers a subset when a config names one (lazily, like its base). Its
metadata is the base's except ``json_file``: an evaluation of a subset converts the subset's own
records instead of reading the whole base json.
"""

import logging
import re

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from .coco import DatasetError

__all__ = ["parse_subset_name", "register_subset", "select_subset", "subset_indices"]

logger = logging.getLogger(__name__)

SUBSET_NAME = re.compile(r"(?P<base>.+)@(?P<percent>\d+(?:\.\d+)?)%")


def parse_subset_name(name: str) -> tuple[str, float] | None:
    """``("synthetic_train", 10.0)`` for ``"synthetic_train@10%"``; None for other names.

    Raises DatasetError for a percentage outside (0, 100].
    """
    match = SUBSET_NAME.fullmatch(name)
    if match is None:
        return None
    percent = float(match["percent"])
    if not 0 < percent <= 100:
        raise DatasetError(f"dataset {name!r}: the percentage must be in (0, 100], not {percent}")
    return match["base"], percent


def subset_indices(num_images: int, percent: float, *, seed: int = 0) -> list[int]:
    """Sorted indices of the ``round(num_images * percent / 100)`` (>= 1) chosen images."""
    if num_images < 1:
        raise DatasetError("cannot take a subset of a dataset without images")
    count = max(1, round(num_images * percent / 100))
    order = np.random.default_rng(seed).permutation(num_images)
    return sorted(order[:count].tolist())


def select_subset(records: list[dict], percent: float, *, seed: int = 0) -> list[dict]:
    """The subset's records, in the order of ``records``; chosen by ``image_id``, so the load
    order of the base dataset does not change which images are taken."""
    ids = sorted(record["image_id"] for record in records)
    if len(set(ids)) != len(ids):
        raise DatasetError("a subset needs unique image_id values in the base dataset")
    chosen = {ids[i] for i in subset_indices(len(ids), percent, seed=seed)}
    return [record for record in records if record["image_id"] in chosen]


def register_subset(name: str) -> None:
    """Register the subset dataset ``name`` (``"<base>@<percent>%"``) of the registered ``base``.

    Nothing is read now; the base's records are loaded when the subset's are. Registering a
    name again does nothing.
    """
    parsed = parse_subset_name(name)
    if parsed is None:
        raise DatasetError(f"{name!r} is not a subset name '<dataset>@<percent>%'")
    if name in DatasetCatalog.list():
        return
    base, percent = parsed
    if base not in DatasetCatalog.list():
        raise DatasetError(f"dataset {name!r}: the base dataset {base!r} is not registered")

    def load() -> list[dict]:
        records = select_subset(DatasetCatalog.get(base), percent)
        logger.info(f"{name}: {len(records)} images of {base}")
        return records

    DatasetCatalog.register(name, load)
    metadata = MetadataCatalog.get(base).as_dict()
    for key in ("name", "json_file"):
        metadata.pop(key, None)
    MetadataCatalog.get(name).set(**metadata)
