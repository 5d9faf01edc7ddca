"""Synthetic set generator and checked COCO registration: tiny, seeded, on disk under tmp."""

import hashlib
import itertools
import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from PIL import Image

from vitdet.config import load_config, register_datasets
from vitdet.data import DatasetError, check_coco, num_classes, register_coco
from vitdet.data.images import read_image
from vitdet.data.mapper import DetectionMapper
from vitdet.data.synthetic import CLASSES, generate

from helpers import REPO

SMALL, LARGE = 32**2, 96**2  # COCO area ranges


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _decode(segmentation: list[list[float]], size: int) -> np.ndarray:
    """(H, W) bool mask of COCO polygons."""
    rles = mask_util.frPyObjects(segmentation, size, size)
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, dict[str, tuple[Path, Path]]]:
    root = tmp_path_factory.mktemp("synthetic")
    return root, generate(root, num_train=40, num_val=8, seed=0)


def test_generate_is_deterministic(tmp_path):
    digests = [
        _digest(generate(tmp_path / name, num_train=3, num_val=2, seed=seed)["synthetic_train"][1])
        for name, seed in (("a", 0), ("b", 0), ("c", 1))
    ]
    assert len(digests[0]) == 3
    assert digests[0] == digests[1]
    assert digests[0] != digests[2]
    jsons = [
        (tmp_path / name / "annotations" / "instances_val.json").read_bytes() for name in "abc"
    ]
    assert jsons[0] == jsons[1] != jsons[2]


def test_generate_layout_and_counts(synthetic):
    root, splits = synthetic
    assert set(splits) == {"synthetic_train", "synthetic_val"}
    assert splits["synthetic_train"] == (root / "annotations/instances_train.json", root / "train")
    for (json_file, image_dir), num_images in zip(splits.values(), (40, 8), strict=True):
        coco = json.loads(json_file.read_text())
        assert [c["name"] for c in coco["categories"]] == list(CLASSES)
        assert len(coco["images"]) == len(list(image_dir.glob("*.jpg"))) == num_images
        objects_per_image = np.bincount([a["image_id"] for a in coco["annotations"]])[1:]
        assert len(objects_per_image) == num_images
        assert objects_per_image.min() >= 1 and objects_per_image.max() <= 6
    train = json.loads(splits["synthetic_train"][0].read_text())["annotations"]
    assert {a["category_id"] for a in train} == set(range(1, len(CLASSES) + 1))
    areas = np.array([a["area"] for a in train])
    assert (areas < SMALL).any() and ((areas >= SMALL) & (areas < LARGE)).any()
    assert (areas >= LARGE).any()
    assert 2.5 <= len(train) / 40 <= 5  # 2-6 drawn per image, a few dropped under occlusion


def test_annotations_are_the_visible_masks(synthetic):
    _, splits = synthetic
    coco = json.loads(splits["synthetic_train"][0].read_text())
    size = coco["images"][0]["height"]
    masks = defaultdict(list)
    for ann in coco["annotations"]:
        assert ann["iscrowd"] == 0
        assert all(len(p) >= 6 and len(p) % 2 == 0 for p in ann["segmentation"])
        mask = _decode(ann["segmentation"], size)
        ys, xs = np.nonzero(mask)
        box = [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
        np.testing.assert_allclose(ann["bbox"], box, atol=1)
        assert ann["area"] == mask.sum()
        masks[ann["image_id"]].append(mask)
    # Visible parts do not overlap (polygons of touching objects share a boundary pixel at most).
    overlap, total, touching = 0, 0, 0
    for image_masks in masks.values():
        total += sum(m.sum() for m in image_masks)
        for a, b in itertools.combinations(image_masks, 2):
            shared = (a & b).sum()
            assert shared <= 0.05 * min(a.sum(), b.sum())
            overlap += shared
            touching += (a[:, 1:] & b[:, :-1]).any() or (a[1:] & b[:-1]).any()
    assert overlap <= 0.005 * total
    assert touching >= 10  # occlusion happens
    assert sum(len(a["segmentation"]) > 1 for a in coco["annotations"]) >= 1  # split objects


def test_generate_is_idempotent(tmp_path):
    json_file, image_dir = generate(tmp_path, num_train=2, num_val=1)["synthetic_train"]
    files = [json_file, *image_dir.iterdir()]
    mtimes = [p.stat().st_mtime_ns for p in files]
    generate(tmp_path, num_train=2, num_val=1)
    assert [p.stat().st_mtime_ns for p in files] == mtimes

    generate(tmp_path, num_train=2, num_val=1, overwrite=True)
    assert json_file.stat().st_mtime_ns != mtimes[0]

    manifest = tmp_path / "manifest.json"  # an interrupted run: the manifest says incomplete
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "complete": False}))
    (image_dir / "000001.jpg").unlink()
    generate(tmp_path, num_train=2, num_val=1)
    assert len(list(image_dir.iterdir())) == 2

    foreign = tmp_path / "foreign"
    (foreign / "train").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="manifest"):
        generate(foreign, num_train=2, num_val=1)


def test_synthetic_set_registers_cleanly(synthetic, registered):
    _, splits = synthetic
    json_file, image_dir = splits["synthetic_val"]
    assert check_coco(json_file, image_dir).skipped == {}
    register_coco(registered("synthetic"), json_file, image_dir)
    assert num_classes(registered("synthetic")) == len(CLASSES)


# -- registration and checks on a hand-written json ------------------------------------------

SQUARE = [10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]


def _dataset(tmp_path: Path, edit=None) -> tuple[Path, Path]:
    """Two 64x64 images (file contents are never decoded), categories 1 and 7, three
    annotations (ids 1-3): two polygons and one RLE. ``edit(coco)`` changes it before writing."""
    image_root = tmp_path / "images"
    image_root.mkdir(exist_ok=True)
    for name in ("a.jpg", "b.jpg"):
        (image_root / name).write_bytes(b"not decoded")
    rle = mask_util.encode(np.asfortranarray(np.eye(64, dtype=np.uint8)))
    coco = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "height": 64, "width": 64},
            {"id": 2, "file_name": "b.jpg", "height": 64, "width": 64},
        ],
        "categories": [{"id": 7, "name": "star"}, {"id": 1, "name": "circle"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20],
             "segmentation": [SQUARE], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [10, 10, 20, 20],
             "segmentation": [SQUARE, SQUARE], "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 7, "bbox": [0, 0, 64, 64],
             "segmentation": {"size": [64, 64], "counts": rle["counts"].decode()}, "iscrowd": 0},
        ],
    }  # fmt: skip
    if edit is not None:
        edit(coco)
    json_file = tmp_path / "instances.json"
    json_file.write_text(json.dumps(coco))
    return json_file, image_root


@pytest.fixture
def registered():
    """Names for test datasets, unregistered afterwards."""
    names = set()

    def name(suffix: str) -> str:
        names.add(f"_test_data_{suffix}")
        return f"_test_data_{suffix}"

    yield name
    for n in names & set(DatasetCatalog.list()):
        DatasetCatalog.remove(n)
        MetadataCatalog.remove(n)


def test_register_good_dataset(tmp_path, registered):
    json_file, image_root = _dataset(tmp_path)
    register_coco(registered("good"), json_file, image_root)
    dicts = DatasetCatalog.get(registered("good"))
    assert [d["image_id"] for d in dicts] == [1, 2]
    assert dicts[0]["file_name"] == str(image_root.resolve() / "a.jpg")
    assert [[a["category_id"] for a in d["annotations"]] for d in dicts] == [[0, 1], [1]]
    meta = MetadataCatalog.get(registered("good"))
    assert meta.thing_classes == ["circle", "star"]
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 7: 1}
    assert meta.evaluator_type == "coco" and meta.json_file == str(json_file.resolve())
    assert num_classes(registered("good")) == 2

    register_coco(registered("good"), json_file, image_root)  # same paths: nothing happens
    (tmp_path / "other").mkdir()
    other_json, _ = _dataset(tmp_path / "other")
    with pytest.raises(DatasetError, match="already registered"):
        register_coco(registered("good"), other_json, image_root)


def _set(path, value):
    """An edit setting ``coco[path[0]][path[1]]...[path[-1]] = value``."""

    def edit(coco):
        target = coco
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda coco: coco.pop("categories"), "not a COCO json"),
        (_set(("annotations", 1, "category_id"), 3), "annotation id 2 has category_id 3"),
        (_set(("annotations", 2, "image_id"), 9), "annotation id 3 has image_id 9"),
        (_set(("images", 1, "file_name"), "gone.jpg"), "image id 2 'gone.jpg'"),
        (_set(("annotations", 1, "id"), 1), "'annotations' id 1 occurs twice"),
        (lambda coco: coco["images"][0].pop("height"), "entry of 'images' lacks"),
    ],
)
def test_structural_problems_raise(tmp_path, registered, edit, message):
    json_file, image_root = _dataset(tmp_path, edit)
    with pytest.raises(DatasetError, match=message) as error:
        register_coco(registered("broken"), json_file, image_root)
    assert str(json_file.resolve()) in str(error.value)
    assert registered("broken") not in DatasetCatalog.list()


def test_unreadable_json_raises(tmp_path):
    json_file = tmp_path / "instances.json"
    with pytest.raises(DatasetError, match="cannot read"):
        check_coco(json_file, tmp_path)  # missing
    json_file.write_text("{not json")
    with pytest.raises(DatasetError, match=f"{json_file}: cannot read"):
        check_coco(json_file, tmp_path)


@pytest.mark.parametrize(
    "field, value, reason",
    [
        ("bbox", [10, 10, 0, 20], "degenerate box"),
        ("bbox", [10, 10, 20, float("nan")], "degenerate box"),
        ("bbox", [10, 10, 20], "degenerate box"),
        ("segmentation", [], "empty segmentation"),
        ("segmentation", [[10.0, 10.0, 30.0, 10.0]], "bad polygon"),  # 2 points
        ("segmentation", [SQUARE, SQUARE[:-1]], "bad polygon"),  # odd length
        ("segmentation", {"size": [32, 64], "counts": "P13700000l0"}, "bad RLE"),
        ("segmentation", {"size": [64, 64], "counts": [100, 20, 3000]}, "bad RLE"),  # sum != 4096
        ("segmentation", {"size": [64, 64], "counts": "P13700000l0"}, "bad RLE"),  # too short
    ],
)
def test_geometry_problems_skip_the_annotation(tmp_path, registered, caplog, field, value, reason):
    json_file, image_root = _dataset(tmp_path, _set(("annotations", 1, field), value))
    check = check_coco(json_file, image_root)
    assert check.skipped == {reason: 1}
    assert (check.num_images, check.num_annotations, check.num_usable) == (2, 2, 2)
    with caplog.at_level(logging.WARNING, logger="vitdet.data.coco"):
        register_coco(registered("skip"), json_file, image_root)
    assert f"skipped 1 of 3 annotations (1 {reason})" in caplog.text
    dicts = DatasetCatalog.get(registered("skip"))
    assert [len(d["annotations"]) for d in dicts] == [1, 1]


@pytest.mark.parametrize(
    "edit",
    [
        lambda coco: [ann.update(bbox=[0, 0, 0, 0]) for ann in coco["annotations"]],
        lambda coco: [ann.update(iscrowd=1) for ann in coco["annotations"]],
        lambda coco: coco["annotations"].clear(),
    ],
)
def test_no_usable_annotation_raises(tmp_path, edit):
    json_file, image_root = _dataset(tmp_path, edit)
    with pytest.raises(DatasetError, match="no usable annotation"):
        check_coco(json_file, image_root)


# -- datasets registered elsewhere (detectron2's built-in COCO / LVIS) get the same checks ----


def test_builtin_style_registration_is_checked_when_loaded(tmp_path, registered):
    """A dataset registered with detectron2's own ``register_coco_instances`` (as its
    built-in COCO splits are) and named by a config: loading it skips the bad annotation and
    refuses a missing image file, as vitdet's own registration does."""

    def degenerate(coco):
        coco["annotations"][0]["bbox"] = [10, 10, 0, 20]

    json_file, image_root = _dataset(tmp_path, degenerate)
    name = registered("builtin")
    register_coco_instances(name, {}, str(json_file), str(image_root))
    cfg = load_config(REPO / "configs" / "COCO" / "mask_rcnn_vitdet_b_100ep.py")
    cfg.dataloader.train.dataset.names = name
    register_datasets(cfg)
    dicts = DatasetCatalog.get(name)
    assert sum(len(d["annotations"]) for d in dicts) == 2  # the degenerate box is skipped
    register_datasets(cfg)  # wrapped once, not twice
    (image_root / "b.jpg").unlink()
    with pytest.raises(DatasetError, match=f"dataset '{name}': 1 of 2 image files are missing"):
        DatasetCatalog.get(name)


# -- the mapper reads images as the demo does ---------------------------------------------------


def _mapper(is_train: bool) -> DetectionMapper:
    return DetectionMapper(is_train, augmentations=[], image_format="RGB", use_instance_mask=True)


def test_mapper_reads_rgba_and_16_bit_as_the_demo(tmp_path):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rng.integers(0, 65536, (20, 30), dtype=np.uint16)).save(tmp_path / "16.png")
    for name in ("rgba.png", "16.png"):
        record = {"file_name": str(tmp_path / name), "height": 20, "width": 30}
        image = _mapper(False)(record)["image"]  # c h w
        assert torch.equal(image, torch.as_tensor(read_image(tmp_path / name)).permute(2, 0, 1))


def test_mapper_exif_rotated_file_and_stated_sizes(tmp_path, caplog):
    stored = np.zeros((20, 40, 3), np.uint8)  # stored 40 wide, 20 high; EXIF: rotate 90
    stored[:, :10] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "r.jpg", exif=exif, quality=95)
    path = str(tmp_path / "r.jpg")
    upright = _mapper(False)({"file_name": path, "height": 40, "width": 20})["image"]
    assert upright.shape == (3, 40, 20)
    with caplog.at_level("WARNING", logger="vitdet.data.mapper"):
        as_stored = _mapper(False)({"file_name": path, "height": 20, "width": 40})["image"]
    assert as_stored.shape == (3, 20, 40) and "stored size" in caplog.text
    wrong = {"file_name": path, "height": 30, "width": 30, "annotations": []}
    assert _mapper(True)(wrong) is None  # training: skipped
    with pytest.raises(ValueError, match="the annotations give 30x30"):
        _mapper(False)(wrong)
