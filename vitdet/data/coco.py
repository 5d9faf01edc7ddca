"""Register COCO-format instance datasets with detectron2, checking the json before training.

``register_coco(name, json_file, image_root)`` reads the json once, checks it, and registers
``name`` in ``DatasetCatalog`` / ``MetadataCatalog`` (thing_classes, the category id map,
``json_file``, ``image_root``, ``evaluator_type="coco"``), so ``dataloader.train.dataset.names``
can name it. Image files are only looked up on disk (exist, non-empty), never decoded.

Policy for bad data:

* Structural problems raise ``DatasetError`` (a ``ValueError``) naming the file and the image or
  annotation id: an unreadable json, a json without ``images`` / ``annotations`` /
  ``categories``, entries without their required keys or with duplicate ids, an annotation whose
  ``category_id`` is not in ``categories`` or whose ``image_id`` is not in ``images``, image files
  missing or empty under ``image_root``.
* Geometry problems of one annotation skip that annotation, counted per reason and logged as one
  warning: ``"degenerate box"`` (not 4 finite numbers, or w or h <= 0), ``"empty segmentation"``
  (missing or empty: the models here all predict masks), ``"bad polygon"`` (a polygon that is not
  a flat list of >= 6 finite numbers of even length), ``"bad RLE"`` (size other than the image's,
  counts that do not sum to height * width). Nothing is written to disk: the registered loader
  builds its dicts from a cleaned copy held in memory.
* A dataset left with no usable (non-crowd) annotation raises ``DatasetError``: training never
  runs on zero annotations.

detectron2's ``load_coco_json`` is not reused for loading: it reads the json from a path (not a
cleaned copy) and raises or asserts on the very annotations this policy skips. The records built
here have its layout. The evaluator still reads the original ``json_file``.
"""

import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

logger = logging.getLogger(__name__)

# Metadata flag of the datasets whose loader applies this module's checks (registered here, or
# wrapped by ``vitdet.config`` around another registration's loader).
CHECKED_FLAG = "vitdet_checked"

REQUIRED_KEYS = {
    "images": ("id", "file_name", "height", "width"),
    "annotations": ("id", "image_id", "category_id"),
    "categories": ("id", "name"),
}


class DatasetError(ValueError):
    """A dataset that cannot be trained on as it is; the message names the file and the id."""


@dataclass(frozen=True)
class CocoCheck:
    """What checking one COCO json found: counts of kept annotations and of skipped ones."""

    json_file: Path
    num_images: int
    num_annotations: int  # kept, crowd ones included
    num_usable: int  # kept and not crowd: what training sees
    skipped: dict[str, int]  # reason -> number of annotations skipped for it


def register_coco(name: str, json_file: str | os.PathLike, image_root: str | os.PathLike) -> None:
    """Check ``json_file`` and register it as the instance dataset ``name``.

    Registering a name again with the same paths does nothing; with other paths it raises
    ``DatasetError``.
    """
    json_file, image_root = Path(json_file).resolve(), Path(image_root).resolve()
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        registered = (meta.get("json_file"), meta.get("image_root"))
        if registered == (str(json_file), str(image_root)):
            return
        raise DatasetError(
            f"dataset {name!r} is already registered with json_file={registered[0]}, "
            f"image_root={registered[1]}; cannot register it again with {json_file}, {image_root}"
        )
    coco, check = _load_checked(json_file, image_root)
    _log_skipped(check)
    category_ids = sorted(category["id"] for category in coco["categories"])
    names = {category["id"]: category["name"] for category in coco["categories"]}
    DatasetCatalog.register(name, lambda: _dataset_dicts(json_file, image_root))
    MetadataCatalog.get(name).set(
        thing_classes=[names[i] for i in category_ids],
        thing_dataset_id_to_contiguous_id={i: k for k, i in enumerate(category_ids)},
        json_file=str(json_file),
        image_root=str(image_root),
        evaluator_type="coco",
        **{CHECKED_FLAG: True},
    )


def load_checked_dicts(json_file: str | os.PathLike, image_root: str | os.PathLike) -> list[dict]:
    """Check ``json_file`` (raising ``DatasetError``, logging what was skipped) and return its
    detectron2 dataset dicts: what a registered dataset's loader returns."""
    json_file, image_root = Path(json_file).resolve(), Path(image_root).resolve()
    coco, check = _load_checked(json_file, image_root)
    _log_skipped(check)
    return _records(coco, image_root)


def _log_skipped(check: CocoCheck) -> None:
    if not check.skipped:
        return
    num_skipped = sum(check.skipped.values())
    reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(check.skipped.items()))
    logger.warning(
        "%s: skipped %d of %d annotations (%s)",
        check.json_file,
        num_skipped,
        num_skipped + check.num_annotations,
        reasons,
    )


def check_records(records: list[dict], *, name: str, num_classes: int) -> list[dict]:
    """The policy above applied to detectron2 dataset dicts from any loader (detectron2's
    built-in COCO / LVIS registrations): image files missing or empty and class indices out of
    range raise ``DatasetError``; annotations with a bad geometry are skipped, counted and
    logged; no usable annotation raises. Returns the records without the skipped annotations."""
    missing = [r for r in records if not _is_nonempty_file(Path(r["file_name"]))]
    if missing:
        raise DatasetError(
            f"dataset {name!r}: {len(missing)} of {len(records)} image files are missing or "
            f"empty, first: {missing[0]['file_name']}"
        )
    kept_records, skipped, num_usable = [], Counter(), 0
    for record in records:
        kept = []
        for ann in record.get("annotations", ()):
            if not 0 <= ann.get("category_id", -1) < num_classes:
                raise DatasetError(
                    f"dataset {name!r}: {record['file_name']} has an annotation of class index "
                    f"{ann.get('category_id')}, outside 0..{num_classes - 1}"
                )
            reason = _geometry_problem(_as_coco_annotation(ann), record)
            if reason is None:
                kept.append(ann)
                num_usable += not ann.get("iscrowd", 0)
            else:
                skipped[reason] += 1
        kept_records.append({**record, "annotations": kept})
    if skipped:
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items()))
        logger.warning(f"dataset {name!r}: skipped {sum(skipped.values())} annotations ({reasons})")
    if num_usable == 0:
        raise DatasetError(f"dataset {name!r}: no usable annotation (skipped: {dict(skipped)})")
    return kept_records


def _as_coco_annotation(ann: dict) -> dict:
    """A detectron2 record annotation with its box as COCO's [x, y, w, h] list and its RLE
    counts as a string, for ``_geometry_problem``."""
    bbox = ann.get("bbox")
    if ann.get("bbox_mode") not in (None, BoxMode.XYWH_ABS) and bbox is not None:
        bbox = BoxMode.convert(list(bbox), ann["bbox_mode"], BoxMode.XYWH_ABS)
    segmentation = ann.get("segmentation")
    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), bytes):
        segmentation = {**segmentation, "counts": segmentation["counts"].decode("ascii")}
    return {**ann, "bbox": list(bbox) if bbox is not None else None, "segmentation": segmentation}


def num_classes(name: str) -> int:
    """Number of thing classes of a registered dataset."""
    return len(MetadataCatalog.get(name).thing_classes)


def check_coco(json_file: str | os.PathLike, image_root: str | os.PathLike) -> CocoCheck:
    """Check a COCO json against the policy above; raise ``DatasetError`` or return counts."""
    return _load_checked(Path(json_file), Path(image_root))[1]


def _load_checked(json_file: Path, image_root: Path) -> tuple[dict, CocoCheck]:
    """Read and check ``json_file``; return it without skipped annotations, and the counts."""
    try:
        coco = json.loads(json_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{json_file}: cannot read a COCO json: {e}") from e
    if not isinstance(coco, dict) or not all(key in coco for key in REQUIRED_KEYS):
        raise DatasetError(f"{json_file}: not a COCO json (needs keys {sorted(REQUIRED_KEYS)})")
    for section, keys in REQUIRED_KEYS.items():
        ids = set()
        for entry in coco[section]:
            if not isinstance(entry, dict) or not all(key in entry for key in keys):
                raise DatasetError(f"{json_file}: an entry of {section!r} lacks one of {keys}")
            if entry["id"] in ids:
                raise DatasetError(f"{json_file}: {section!r} id {entry['id']} occurs twice")
            ids.add(entry["id"])
    if not coco["categories"]:
        raise DatasetError(f"{json_file}: 'categories' is empty")

    missing = [i for i in coco["images"] if not _is_nonempty_file(image_root / i["file_name"])]
    if missing:
        first = missing[0]
        raise DatasetError(
            f"{json_file}: {len(missing)} of {len(coco['images'])} image files are missing or "
            f"empty under {image_root}, first: image id {first['id']} {first['file_name']!r}"
        )

    images = {image["id"]: image for image in coco["images"]}
    category_ids = {category["id"] for category in coco["categories"]}
    kept, skipped = [], Counter()
    for ann in coco["annotations"]:
        if ann["category_id"] not in category_ids:
            raise DatasetError(
                f"{json_file}: annotation id {ann['id']} has category_id {ann['category_id']}, "
                f"which is not in 'categories' {sorted(category_ids)}"
            )
        if ann["image_id"] not in images:
            raise DatasetError(
                f"{json_file}: annotation id {ann['id']} has image_id {ann['image_id']}, "
                "which is not in 'images'"
            )
        reason = _geometry_problem(ann, images[ann["image_id"]])
        if reason is None:
            kept.append(ann)
        else:
            skipped[reason] += 1

    num_usable = sum(not ann.get("iscrowd", 0) for ann in kept)
    if num_usable == 0:
        raise DatasetError(
            f"{json_file}: no usable annotation among {len(coco['annotations'])} "
            f"(skipped: {dict(skipped) or 'none'}; crowd ones are not trained on)"
        )
    check = CocoCheck(json_file, len(images), len(kept), num_usable, dict(skipped))
    return {**coco, "annotations": kept}, check


def _is_nonempty_file(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def _geometry_problem(ann: dict, image: dict) -> str | None:
    """The reason to skip ``ann`` (see the module docstring), or None if it is usable."""
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_finite, bbox))):
        return "degenerate box"
    if bbox[2] <= 0 or bbox[3] <= 0:
        return "degenerate box"
    segmentation = ann.get("segmentation")
    if not segmentation:
        return "empty segmentation"
    if isinstance(segmentation, dict):
        return None if _is_valid_rle(segmentation, image) else "bad RLE"
    if not isinstance(segmentation, list) or not all(map(_is_polygon, segmentation)):
        return "bad polygon"
    return None


def _is_finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_polygon(polygon) -> bool:
    """A flat [x0, y0, x1, y1, ...] list of at least 3 points."""
    return (
        isinstance(polygon, list)
        and len(polygon) >= 6
        and len(polygon) % 2 == 0
        and all(map(_is_finite, polygon))
    )


def _is_valid_rle(rle: dict, image: dict) -> bool:
    """COCO RLE of the image's size whose run lengths cover every pixel exactly once."""
    height, width = image["height"], image["width"]
    if rle.get("size") != [height, width]:
        return False
    counts = rle.get("counts")
    if isinstance(counts, str):
        try:
            counts = _decode_rle_string(counts)
        except ValueError:
            return False
    if not isinstance(counts, list) or not all(isinstance(c, int) and c >= 0 for c in counts):
        return False
    return sum(counts) == height * width


def _decode_rle_string(counts: str) -> list[int]:
    """Run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString`` in Python).

    pycocotools itself does not check the total: it decodes a short string into a mask whose
    tail is uninitialised memory, so the check needs the run lengths.
    """
    runs, position = [], 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position == len(counts):
                raise ValueError("RLE string ends inside a number")
            char = ord(counts[position]) - 48
            value |= (char & 0x1F) << shift
            more = char & 0x20
            position, shift = position + 1, shift + 5
            if not more and char & 0x10:
                value |= -1 << shift  # negative: a delta
        if len(runs) > 2:
            value += runs[-2]  # runs after the second are stored as deltas
        runs.append(value)
    return runs


def _dataset_dicts(json_file: Path, image_root: Path) -> list[dict]:
    """detectron2 dataset dicts (``load_coco_json``'s layout) of the checked json."""
    return _records(_load_checked(json_file, image_root)[0], image_root)


def _records(coco: dict, image_root: Path) -> list[dict]:
    """detectron2 dataset dicts of a checked COCO dict."""
    id_map = {i: k for k, i in enumerate(sorted(c["id"] for c in coco["categories"]))}
    by_image = {image["id"]: [] for image in coco["images"]}
    for ann in coco["annotations"]:
        segmentation = ann["segmentation"]
        if isinstance(segmentation, dict) and isinstance(segmentation["counts"], list):
            segmentation = mask_util.frPyObjects(segmentation, *segmentation["size"])
        by_image[ann["image_id"]].append(
            {
                "bbox": ann["bbox"],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": id_map[ann["category_id"]],
                "iscrowd": ann.get("iscrowd", 0),
                "segmentation": segmentation,
            }
        )
    return [
        {
            "file_name": str(image_root / image["file_name"]),
            "height": image["height"],
            "width": image["width"],
            "image_id": image["id"],
            "annotations": by_image[image["id"]],
        }
        for image in sorted(coco["images"], key=lambda image: image["id"])
    ]
