"""Predictor, image reading and tools/demo.py on a tiny random ViTDet (CPU, a few seconds each)."""

import copy
import json
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import instantiate
from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, Instances
from omegaconf import OmegaConf
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from vitdet.config import load_config
from vitdet.data.images import ImageReadError, VideoFrames, expand_inputs, read_image
from vitdet.demo import coco_results, output_names
from vitdet.predictor import Predictor, dataset_metadata

from helpers import COCO_CONFIG as CONFIG
from helpers import REPO, TEST_SIZE, load_tool, scene
from helpers import TINY_DETECTOR as TINY

# Inputs the demo refuses, and the words of the reason it gives.
BAD_KINDS = {
    "empty.jpg": "empty file",
    "truncated.jpg": "truncated",
    "text.jpg": "not an image",
    "oversized.png": "too large",
}


demo_tool = load_tool("demo")


@pytest.fixture(scope="module")
def weights(tiny_detector_weights):
    return tiny_detector_weights


@pytest.fixture(scope="module")
def predictor(weights):
    return Predictor.from_config_file(CONFIG, weights, overrides=TINY, device="cpu")


def _oversized_png(path, side: int = 9500) -> None:
    """A valid black grayscale PNG of side x side px (> Pillow's 89.5 MP limit), ~90 kB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    compressor = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte + side gray pixels
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit gray
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
    path.write_bytes(png + chunk(b"IEND", b""))


def _write_bad_inputs(folder) -> None:
    """One file per kind of input the demo must refuse (``BAD_KINDS``)."""
    (folder / "empty.jpg").write_bytes(b"")
    Image.fromarray(scene(64, 80)).save(folder / "full.jpg", quality=90)
    data = (folder / "full.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "full.jpg").unlink()
    (folder / "text.jpg").write_text("not a picture\n")
    _oversized_png(folder / "oversized.png")


def _write_odd_inputs(folder) -> dict[str, tuple[int, int]]:
    """Readable but unusual images; returns each file's upright (H, W)."""
    Image.fromarray(scene(70, 100)).convert("L").save(folder / "gray.png")
    rgba = np.dstack([scene(60, 90), np.full((60, 90), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    gray16 = (np.linspace(0, 65535, 50 * 80).reshape(50, 80)).astype(np.uint16)
    Image.fromarray(gray16).save(folder / "gray16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    Image.fromarray(scene(40, 96)).save(folder / "rotated.jpg", exif=exif)
    return {
        "gray.png": (70, 100),
        "rgba.png": (60, 90),
        "gray16.png": (50, 80),
        "rotated.jpg": (96, 40),
    }


# --------------------------------------------------------------------------------------------
# Reading images


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    _write_bad_inputs(folder)
    return folder


@pytest.mark.parametrize("name", sorted(BAD_KINDS))
def test_read_image_refuses_bad_files_with_reason(bad_inputs, name):
    with pytest.raises(ImageReadError) as info:
        read_image(bad_inputs / name)
    assert info.value.path == str(bad_inputs / name)
    assert BAD_KINDS[name] in info.value.reason
    assert str(info.value).startswith(f"{bad_inputs / name}: ")


def test_read_image_missing_file_and_decompression_bomb(tmp_path, monkeypatch):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "missing.png")
    Image.fromarray(scene(100, 100)).save(tmp_path / "small.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10000 px > 2x: Pillow's own error
    with pytest.raises(ImageReadError, match="too large"):
        read_image(tmp_path / "small.png")


def test_read_image_grayscale_and_palette(tmp_path):
    picture = scene(30, 40)
    Image.fromarray(picture).convert("L").save(tmp_path / "gray.png")
    gray = read_image(tmp_path / "gray.png")
    assert gray.shape == (30, 40, 3) and gray.dtype == np.uint8
    assert (gray == gray[:, :, :1]).all()
    np.testing.assert_array_equal(gray[:, :, 0], np.asarray(Image.fromarray(picture).convert("L")))

    palette = Image.fromarray(picture).convert("P")
    palette.info["transparency"] = palette.getpixel((0, 0))
    palette.save(tmp_path / "palette.png", transparency=palette.getpixel((0, 0)))
    assert (read_image(tmp_path / "palette.png")[0, 0] == 255).all()  # transparent -> white


def test_read_image_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (200, 100, 0)
    rgba[..., 3] = [[0, 255, 128], [0, 255, 128]]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    rgb = read_image(tmp_path / "rgba.png")
    assert rgb.shape == (2, 3, 3)
    np.testing.assert_array_equal(rgb[0, 0], (255, 255, 255))  # transparent -> white
    np.testing.assert_array_equal(rgb[0, 1], (200, 100, 0))  # opaque -> its colour
    np.testing.assert_allclose(rgb[0, 2], (227, 178, 128), atol=1)  # half: the mean


def test_read_image_16_bit_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 1000, 32768, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "gray16.png")
    assert Image.open(tmp_path / "gray16.png").mode == "I;16"
    rgb = read_image(tmp_path / "gray16.png")
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 1, 4, 128, 255])  # round(v * 255 / 65535)
    assert (rgb == rgb[:, :, :1]).all()


def test_read_image_applies_exif_orientation(tmp_path):
    image = np.zeros((40, 96, 3), np.uint8)
    image[:20, :20] = 255  # a white block at the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    Image.fromarray(image).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    upright = read_image(tmp_path / "rotated.jpg")
    assert upright.shape == (96, 40, 3)  # H and W swapped
    assert upright[:20, -20:].mean() > 200 and upright[:20, :20].mean() < 50  # now top-right


def test_expand_inputs(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/1.jpg", "a/b/2.PNG", "a/b/clip.mp4", "a/notes.txt", "c.jpg"):
        (tmp_path / name).write_bytes(b"x")
    found, unmatched = expand_inputs(
        [str(tmp_path / "a"), str(tmp_path / "*.jpg"), str(tmp_path / "a/1.jpg"), "nope*.png"]
    )
    relative = [p.relative_to(tmp_path).as_posix() for p in map(lambda p: p.absolute(), found)]
    assert relative == ["a/1.jpg", "a/b/2.PNG", "a/b/clip.mp4", "c.jpg"]
    assert unmatched == ["nope*.png"]


def test_output_names_are_unique_and_relative():
    inputs = ["d/x/a.jpg", "d/x/a.png", "d/y/a.jpg", "d/y/b.v2.jpg"]
    assert output_names(inputs) == ["x/a", "x/a_2", "y/a", "y/b.v2"]
    assert output_names(["d/x/a.jpg"]) == ["a"]


# --------------------------------------------------------------------------------------------
# Predictor


def test_predictor_returns_original_coordinates(predictor):
    image = scene(90, 160)  # non-square: resized to 72 x 128, padded to 128 x 128
    instances = predictor(image)
    assert len(instances) > 0
    assert instances.image_size == (90, 160)
    assert instances.pred_masks.shape[1:] == (90, 160)
    boxes = instances.pred_boxes.tensor
    assert (boxes >= 0).all() and (boxes[:, 0::2] <= 160).all() and (boxes[:, 1::2] <= 90).all()
    # The same picture given in BGR order gives the same detections.
    bgr = predictor(np.ascontiguousarray(image[:, :, ::-1]), format="BGR")
    torch.testing.assert_close(bgr.pred_boxes.tensor, boxes)
    with pytest.raises(ValueError, match="expected an \\(H, W, 3\\) uint8 image"):
        predictor(image[:, :, 0])


def test_predictor_resize_is_the_evaluation_mappers(predictor, tmp_path):
    cfg = load_config(CONFIG, TINY)
    mapper = instantiate(cfg.dataloader.test.mapper)  # detectron2 DatasetMapper(is_train=False)
    assert not mapper.is_train
    for height, width in ((90, 160), (200, 130)):
        path = tmp_path / f"{height}x{width}.png"
        Image.fromarray(scene(height, width)).save(path)
        mapped = mapper({"file_name": str(path), "height": height, "width": width})
        ours = predictor.preprocess(read_image(path))
        assert (ours["height"], ours["width"]) == (height, width)
        assert max(ours["image"].shape[1:]) == TEST_SIZE
        assert torch.equal(ours["image"], mapped["image"])


def test_predictor_batch_and_score_threshold(predictor):
    images = [scene(90, 160, seed=1), scene(128, 100, seed=2)]
    batch = predictor.predict_batch(images)
    for image, batched in zip(images, batch, strict=True):
        single = predictor(image)  # square padding: batching does not change the input
        torch.testing.assert_close(batched.scores, single.scores, atol=1e-4, rtol=1e-4)
        assert batched.pred_masks.shape[1:] == image.shape[:2]
    threshold = float(batch[0].scores.median())
    strict = copy.copy(predictor)  # the same model
    strict.score_threshold = threshold
    kept = strict(images[0])
    assert 0 < len(kept) < len(batch[0]) and (kept.scores >= threshold).all()


def test_dataset_metadata_and_category_ids():
    cfg = OmegaConf.create(
        {"model": {"roi_heads": {"num_classes": 80}}, "dataloader": {"test": {"dataset": {}}}}
    )
    assert dataset_metadata(cfg).thing_classes[0] == "person"  # COCO's names
    cfg.model.roi_heads.num_classes = 3
    assert dataset_metadata(cfg).thing_classes == ["class_0", "class_1", "class_2"]
    MetadataCatalog.get("test_demo_shapes").set(
        thing_classes=["disc", "square", "star"],
        thing_dataset_id_to_contiguous_id={10: 0, 20: 1, 30: 2},
    )
    cfg.dataloader.test.dataset.names = "test_demo_shapes"
    metadata = dataset_metadata(cfg)
    assert metadata.thing_classes == ["disc", "square", "star"]
    instances = Instances((4, 5), pred_boxes=Boxes(torch.tensor([[1.0, 1.0, 3.0, 4.0]])))
    instances.scores = torch.tensor([0.9])
    instances.pred_classes = torch.tensor([2])
    instances.pred_masks = torch.zeros(1, 4, 5, dtype=torch.bool)
    (result,) = coco_results(instances, image_id=7, file_name="a.jpg", metadata=metadata)
    assert result["category_id"] == 30 and result["bbox"] == [1.0, 1.0, 2.0, 3.0]
    assert result["segmentation"]["size"] == [4, 5] and result["file_name"] == "a.jpg"


# --------------------------------------------------------------------------------------------
# tools/demo.py


def _run_demo_tool(weights, inputs, output, *extra) -> int:
    argv = ["--config-file", str(CONFIG), "--weights", str(weights), "--input", *map(str, inputs)]
    argv += ["--output", str(output), "--confidence-threshold", "0", *extra, "--", *TINY]
    return demo_tool.main(argv)


def test_demo_batch_with_bad_inputs(weights, tmp_path, capsys):
    folder = tmp_path / "inputs"
    folder.mkdir()
    Image.fromarray(scene(90, 160)).save(folder / "scene.png")
    sizes = {"scene.png": (90, 160), **_write_odd_inputs(folder)}
    _write_bad_inputs(folder)
    out = tmp_path / "out"

    assert _run_demo_tool(weights, [folder], out) == 1  # some failed

    stderr = capsys.readouterr().err
    for name, reason in BAD_KINDS.items():
        assert f"FAILED {folder / name}: " in stderr and reason in stderr
    assert stderr.count("FAILED") == len(BAD_KINDS)
    drawn = {p.name for p in out.glob("*.jpg")}
    assert drawn == {name.rsplit(".", 1)[0] + ".jpg" for name in sizes}
    for name, size in sizes.items():  # pictures upright, at the input's size
        picture = np.asarray(Image.open(out / (name.rsplit(".", 1)[0] + ".jpg")))
        assert picture.shape[:2] == size
    drawn = np.asarray(Image.open(out / "scene.jpg")).astype(int)
    assert np.abs(drawn - scene(90, 160)).mean() > 5  # boxes, masks and labels were drawn

    results = json.loads((out / "predictions.json").read_text())
    files = {r["image_id"]: r["file_name"] for r in results}
    assert sorted(files.values()) == sorted(str(folder / name) for name in sizes)
    gt = COCO()
    gt.dataset = {
        "images": [
            dict(id=i, file_name=f, height=sizes[f.rsplit("/", 1)[1]][0]) for i, f in files.items()
        ],
        "categories": [{"id": i} for i in range(1, 91)],
        "annotations": [],
    }
    gt.createIndex()
    loaded = gt.loadRes(results)  # pycocotools' own checks
    assert len(loaded.getAnnIds()) == len(results)
    coco_ids = MetadataCatalog.get("coco_2017_val").thing_dataset_id_to_contiguous_id
    for r in results:
        height, width = sizes[r["file_name"].rsplit("/", 1)[1]]
        assert r["segmentation"]["size"] == [height, width]
        assert mask_util.decode(r["segmentation"]).shape == (height, width)
        x, y, w, h = r["bbox"]
        assert 0 <= x <= x + w <= width + 1e-3 and 0 <= y <= y + h <= height + 1e-3
        assert r["category_id"] in coco_ids  # COCO dataset ids (mapping: see the unit test)


def test_demo_usage_errors(weights, tmp_path, capsys):
    assert _run_demo_tool(weights, [tmp_path / "nothing*.jpg"], tmp_path / "out") == 2
    assert "no input files" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # an override among the inputs
        demo_tool.parse_args(
            ["--config-file", str(CONFIG), "--weights", str(weights), "--input", "a.jpg"]
            + ["model.x=1", "--output", "o"]
        )
    assert info.value.code == 2
    Image.fromarray(scene(32, 32)).save(tmp_path / "scene.png")
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    assert _run_demo_tool(tmp_path / "notes.pth", [tmp_path / "scene.png"], tmp_path / "out") == 2
    assert "error: --weights" in capsys.readouterr().err


def test_demo_video_and_all_good_exit_status(weights, tmp_path):
    """The tool as a user runs it: one image and a 3-frame video, all succeed -> exit 0."""
    Image.fromarray(scene(64, 96)).save(tmp_path / "scene.png")
    writer = cv2.VideoWriter(
        str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5, (96, 64)
    )
    for seed in range(3):
        writer.write(scene(64, 96, seed=seed))
    writer.release()
    out = tmp_path / "out"
    argv = ["--config-file", CONFIG, "--weights", weights, "--input", tmp_path / "scene.png"]
    argv += [tmp_path / "clip.mp4", "--output", out, "--confidence-threshold", "0", "--", *TINY]
    run = subprocess.run(
        [sys.executable, REPO / "tools" / "demo.py", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "FAILED" not in run.stderr
    assert (out / "scene.jpg").is_file()
    video = VideoFrames(out / "clip.mp4")
    frames = list(video)
    assert len(frames) == 3 and frames[0].shape == (64, 96, 3) and video.fps == 5
    results = json.loads((out / "predictions.json").read_text())
    frame_ids = {r["frame"]: r["image_id"] for r in results if r["file_name"].endswith(".mp4")}
    assert sorted(frame_ids) == [0, 1, 2] and len(set(frame_ids.values())) == 3


def test_demo_register_coco_follows_the_dataset(tmp_path, capsys):
    """A model trained on a --register-coco dataset: the demo registers it the same way, so
    num_classes, class names and category ids follow the json."""
    from vitdet.data.synthetic import CLASSES, generate

    splits = generate(tmp_path / "data", num_train=2, num_val=2, image_size=128)
    json_file, image_dir = splits["synthetic_val"]
    coco = json.loads(json_file.read_text())
    dataset_ids = {c["id"] for c in coco["categories"]}
    register = ["--register-coco", "mine_val", str(json_file), str(image_dir)]
    # the same flags as in training
    select = ["dataloader.train.dataset.names=mine_val", "dataloader.test.dataset.names=mine_val"]

    torch.manual_seed(0)
    model_cfg = load_config(CONFIG, [*TINY, f"model.roi_heads.num_classes={len(CLASSES)}"])
    weights = tmp_path / "five.pth"
    torch.save({"model": instantiate(model_cfg.model).state_dict()}, weights)
    out = tmp_path / "out"
    argv = ["--config-file", str(CONFIG), "--weights", str(weights), "--input", str(image_dir)]
    argv += ["--output", str(out), "--confidence-threshold", "0", *register, "--", *TINY, *select]
    assert demo_tool.main(argv) == 0
    results = json.loads((out / "predictions.json").read_text())
    assert results and {r["category_id"] for r in results} <= dataset_ids
    assert [c for c in MetadataCatalog.get("mine_val").thing_classes] == list(CLASSES)

    # without the registration the 80-class config does not fit the 5-class weights
    assert _run_demo_tool(weights, [image_dir], tmp_path / "o2") == 2
    # a broken json is a usage error naming the file
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    bad = ["--register-coco", "broken_val", str(broken), str(image_dir)]
    assert _run_demo_tool(weights, [image_dir], tmp_path / "o3", *bad) == 2
    assert "broken.json" in capsys.readouterr().err
