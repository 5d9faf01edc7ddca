"""A seeded synthetic instance-segmentation set in COCO format: shapes on textured backgrounds.

Five classes with distinct outlines and, most of the time, distinct hues: circle (ellipse, red),
rectangle (blue), triangle (green), star (yellow), cross (purple); one object in five takes a
random hue, so colour alone does not decide the class. Each image holds 2-6 objects, with areas
drawn log-uniformly from 300 to 16000 px (COCO small < 32^2 <= medium < 96^2 <= large), so all
three COCO area ranges occur at 256 px. Later objects occlude earlier ones: an object's stored
polygons are its *visible* part (exact polygon difference, several polygons when it is split) and
its box and area are those of that visible mask. A placement is retried when it would leave an
earlier object less than 35% visible or with a hole (COCO polygons cannot hold holes).

Layout under ``root``::

    train/000000.jpg ...          val/000000.jpg ...
    annotations/instances_train.json, annotations/instances_val.json
    manifest.json                 parameters and a "complete" flag, written first and last

Image ``i`` of a split is drawn from ``np.random.default_rng((seed, split, i))`` alone, so the
same parameters give byte-identical files. Generate it with ``tools/make_synthetic.py``, or let
a run generate it: ``register_synthetic`` registers the two splits without touching the disk,
and the set is written (by the main process, the others wait) the first time a run reads it.
"""

import colorsys
import json
import shutil
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
import shapely
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm
from shapely.geometry import Polygon, box
from tqdm import tqdm

from .coco import CHECKED_FLAG, DatasetError, load_checked_dicts

CLASSES = ("circle", "rectangle", "triangle", "star", "cross")
CLASS_HUES = (0.0, 220.0, 120.0, 50.0, 285.0)  # degrees, one per class
SPLITS = ("train", "val")
MANIFEST_VERSION = 1

MIN_AREA, MAX_AREA = 300.0, 16000.0  # px^2 of a whole shape, drawn log-uniformly
MIN_VISIBLE = 0.35  # fraction of an object that must stay visible under later ones
MIN_PART_AREA = 4.0  # px^2; smaller slivers left by occlusion are dropped
PLACEMENT_TRIES = 20
JPEG_QUALITY = 90


def generate(
    root: str | Path,
    *,
    num_train: int = 600,
    num_val: int = 100,
    image_size: int = 256,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, tuple[Path, Path]]:
    """Write the set under ``root`` unless a complete one with these parameters is there.

    Returns ``{"synthetic_train": (json_file, image_dir), "synthetic_val": (...)}``. A set this
    function wrote (it has a manifest) is regenerated when incomplete or made with other
    parameters; folders without a manifest are only replaced with ``overwrite=True``.
    """
    root = Path(root)
    manifest = root / "manifest.json"
    splits = split_paths(root)
    params = {
        "version": MANIFEST_VERSION,
        "num_train": num_train,
        "num_val": num_val,
        "image_size": image_size,
        "seed": seed,
    }
    state = json.loads(manifest.read_text()) if manifest.is_file() else None
    if state == {**params, "complete": True} and not overwrite:
        return splits
    ours = [root / "annotations", *(root / split for split in SPLITS)]
    if state is None and not overwrite and any(path.exists() for path in ours):
        raise FileExistsError(
            f"{root} holds train/, val/ or annotations/ without a manifest.json of this "
            "generator; pass overwrite=True (--overwrite) to replace them"
        )
    for path in ours:
        shutil.rmtree(path, ignore_errors=True)
    (root / "annotations").mkdir(parents=True)
    _write_json(manifest, {**params, "complete": False})
    for split_index, (json_file, image_dir) in enumerate(splits.values()):
        num_images = (num_train, num_val)[split_index]
        coco = _generate_split(image_dir, num_images, image_size, seed, split_index)
        _write_json(json_file, coco)
    _write_json(manifest, {**params, "complete": True})  # last: marks the set complete
    return splits


def split_paths(root: str | Path) -> dict[str, tuple[Path, Path]]:
    """``{"synthetic_train": (json_file, image_dir), "synthetic_val": (...)}`` under ``root``."""
    root = Path(root)
    return {
        f"synthetic_{split}": (root / "annotations" / f"instances_{split}.json", root / split)
        for split in SPLITS
    }


def register_synthetic(root: str | Path) -> None:
    """Register ``synthetic_train`` and ``synthetic_val`` under ``root`` (resolved), lazily.

    Nothing is read or written now: the class names are constants. The set is generated when a
    run first reads a split's dicts (a training or evaluation loader), if absent or incomplete.
    Registering again with the same root does nothing; with another root it is an error.
    """
    root = Path(root).resolve()
    for name, (json_file, image_dir) in split_paths(root).items():
        if name in DatasetCatalog.list():
            registered = MetadataCatalog.get(name).get("json_file")
            if registered != str(json_file):
                raise DatasetError(
                    f"dataset {name!r} is already registered with json_file={registered}; "
                    f"cannot register it again with {json_file}"
                )
            continue
        DatasetCatalog.register(name, partial(_generated_dicts, root, name))
        MetadataCatalog.get(name).set(
            thing_classes=list(CLASSES),
            thing_dataset_id_to_contiguous_id={k + 1: k for k in range(len(CLASSES))},
            json_file=str(json_file),
            image_root=str(image_dir),
            evaluator_type="coco",
            **{CHECKED_FLAG: True},
        )


def _generated_dicts(root: Path, name: str) -> list[dict]:
    """The checked dicts of split ``name``, generating the set first (main process) if needed."""
    if comm.is_main_process():
        generate(root)  # returns at once when the set is there and complete
    comm.synchronize()
    json_file, image_dir = split_paths(root)[name]
    return load_checked_dicts(json_file, image_dir)


def _generate_split(
    image_dir: Path, num_images: int, image_size: int, seed: int, split_index: int
) -> dict:
    """Draw and write the images of one split; return its COCO dict."""
    image_dir.mkdir(parents=True)
    images, annotations = [], []
    progress = tqdm(range(num_images), desc=f"synthetic {image_dir.name}", disable=None)
    for index in progress:
        rng = np.random.default_rng((seed, split_index, index))
        image, objects = render_image(rng, image_size)
        file_name = f"{index:06d}.jpg"
        bgr = np.ascontiguousarray(image[..., ::-1])  # RGB -> BGR for OpenCV
        cv2.imwrite(str(image_dir / file_name), bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        image_id = index + 1
        images.append(
            {"id": image_id, "file_name": file_name, "height": image_size, "width": image_size}
        )
        for obj in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **obj})
    categories = [
        {"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASSES)
    ]
    return {
        "info": {"description": "vitdet synthetic shapes", "version": str(MANIFEST_VERSION)},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def render_image(rng: np.random.Generator, image_size: int) -> tuple[np.ndarray, list[dict]]:
    """Draw one image: ``(image (H, W, 3) uint8 RGB, COCO annotations without ids)``."""
    canvas = box(0, 0, image_size, image_size)
    placed: list[tuple[int, shapely.Geometry, list[Polygon]]] = []  # (category, whole, visible)
    for _ in range(rng.integers(2, 7)):
        category = int(rng.integers(len(CLASSES)))
        outline = _unit_outline(category, rng)
        area = float(np.exp(rng.uniform(np.log(MIN_AREA), np.log(MAX_AREA))))
        margin = 0.5 * np.sqrt(area)
        for _ in range(PLACEMENT_TRIES):
            centre = rng.uniform(margin, image_size - margin, size=2)
            shape = Polygon(outline * np.sqrt(area) + centre).intersection(canvas)
            if shape.area < 0.7 * area:  # mostly outside the image
                continue
            uncovered = [_polygon_parts(parts, shape) for _, _, parts in placed]
            if all(
                sum(p.area for p in parts) >= MIN_VISIBLE * whole.area
                and not any(len(p.interiors) for p in parts)
                for (_, whole, _), parts in zip(placed, uncovered, strict=True)
            ):
                placed = [(c, w, parts) for (c, w, _), parts in zip(placed, uncovered, strict=True)]
                placed.append((category, shape, _polygon_parts([shape], None)))
                break

    image = _background(rng, image_size)
    objects = []
    for category, whole, parts in placed:
        polygons = [np.round(p.exterior.coords[:-1], 2).ravel().tolist() for p in parts]
        rle = mask_util.merge(mask_util.frPyObjects(polygons, image_size, image_size))
        mask = mask_util.decode(rle).astype(bool)  # (H, W), the visible part
        image[mask] = _object_fill(rng, category, whole, image_size)[mask]
        objects.append(
            {
                "category_id": category + 1,
                "segmentation": polygons,
                "area": float(mask_util.area(rle)),
                "bbox": mask_util.toBbox(rle).tolist(),  # of the visible mask
                "iscrowd": 0,
            }
        )
    image = image * rng.uniform(0.9, 1.1, size=3) + rng.uniform(-15, 15)  # colour jitter
    image += rng.normal(0.0, rng.uniform(2.0, 6.0), size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), objects


def _polygon_parts(parts: list[Polygon], cut: shapely.Geometry | None) -> list[Polygon]:
    """The polygons of ``parts`` minus ``cut``, without slivers under MIN_PART_AREA."""
    geometry = shapely.union_all(parts)
    if cut is not None:
        geometry = geometry.difference(cut)
    return [
        p
        for p in shapely.get_parts(geometry)
        if p.geom_type == "Polygon" and p.area >= MIN_PART_AREA
    ]


def _unit_outline(category: int, rng: np.random.Generator) -> np.ndarray:
    """A randomly rotated outline of the class, centred at 0 with area 1: (N, 2) xy."""
    name = CLASSES[category]
    if name == "circle":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        points = np.stack([np.cos(t), rng.uniform(0.7, 1.0) * np.sin(t)], axis=1)
    elif name == "rectangle":
        a = rng.uniform(0.45, 1.0)
        points = np.array([[-1, -a], [1, -a], [1, a], [-1, a]])
    elif name == "triangle":
        t = np.deg2rad(90 + np.array([0, 120, 240]) + rng.normal(0, 8, size=3))
        points = np.stack([np.cos(t), np.sin(t)], axis=1)
    elif name == "star":
        t = np.deg2rad(90 + 36 * np.arange(10))
        radius = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.4, 0.5))
        points = np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)
    else:  # cross: a plus sign with arms of half-width w
        w = rng.uniform(0.28, 0.38)
        quarter = np.array([[w, w], [w, 1], [-w, 1]])  # one arm, counter-clockwise
        points = np.concatenate([quarter @ _rotation(k * np.pi / 2) for k in range(4)])
    points = points @ _rotation(rng.uniform(0, 2 * np.pi))
    return points / np.sqrt(Polygon(points).area)


def _rotation(angle: float) -> np.ndarray:
    """(2, 2) matrix rotating row vectors by ``angle`` radians."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, s], [-s, c]])


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A muted textured background, (H, W, 3) float32 RGB in 0-255: gradient, stripes or noise."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    along = (x * np.cos(angle) + y * np.sin(angle)) / size  # (H, W), in [-sqrt 2, sqrt 2]
    base = rng.uniform(60, 200) + rng.normal(0, 15, size=3)  # greyish, a little tinted
    kind = rng.integers(3)
    if kind == 0:  # linear gradient towards a second muted colour
        other = rng.uniform(60, 200) + rng.normal(0, 15, size=3)
        t = (along - along.min()) / (along.max() - along.min())  # (H, W), 0 -> 1
        image = base + (other - base) * t[..., None]
    elif kind == 1:  # stripes
        period = rng.uniform(8, 32) / size
        image = base + rng.uniform(10, 30) * np.sin(2 * np.pi * along / period)[..., None]
    else:  # low-frequency noise: a coarse random grid, upsampled
        coarse = rng.normal(0, 25, size=(8, 8, 3)).astype(np.float32)
        image = base + cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    return image.astype(np.float32)


def _object_fill(
    rng: np.random.Generator, category: int, shape: shapely.Geometry, size: int
) -> np.ndarray:
    """The object's paint over the whole canvas, (H, W, 3) float RGB: a jittered class hue
    (a random hue one time in five) with a linear shading across the shape."""
    hue = CLASS_HUES[category] + rng.normal(0, 8) if rng.random() < 0.8 else rng.uniform(0, 360)
    rgb = colorsys.hsv_to_rgb(hue / 360 % 1.0, rng.uniform(0.55, 1.0), rng.uniform(0.6, 1.0))
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = shape.centroid.x, shape.centroid.y
    angle = rng.uniform(0, 2 * np.pi)
    extent = max(np.sqrt(shape.area), 1.0)
    along = ((x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)) / extent  # (H, W)
    shading = 1 + rng.uniform(0.0, 0.3) * np.clip(along, -1, 1)
    return 255 * np.asarray(rgb, dtype=np.float32) * shading[..., None]


def _write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` through a temporary file, so a reader never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    tmp.replace(path)
