"""TorchScript and ONNX exports of a tiny random ViTDet against the eager model (CPU).

Stated tolerances (float32, measured: see docs/EXPORT.md): detections: boxes 1e-3 px, scores
and mask probabilities 1e-5, classes identical; backbone maps 1e-4. The detector is traced on
image A and run on images with other numbers of detections (B, C), none ("empty"), and other
aspect ratios.
"""

import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from vitdet.export import (
    BackboneForExport,
    DetectorForExport,
    canvas_input,
    eager_detections,
    export_metadata,
    export_onnx,
    export_torchscript,
    io_spec,
    max_abs_diffs,
    normalize_canvas,
    read_metadata,
    run_onnx,
    run_torchscript,
)
from vitdet.modeling.rel_pos_attention import rel_pos_attention
from vitdet.predictor import Predictor

from helpers import COCO_CONFIG as CONFIG
from helpers import REPO, TEST_SIZE, scene
from helpers import TINY_DETECTOR as TINY

DETECTION_ATOL = {"boxes": 1e-3, "classes": 0.0, "scores": 1e-5, "masks": 1e-5}
FEATURE_ATOL = 1e-4
FORMATS = {"torchscript": (export_torchscript, run_torchscript), "onnx": (export_onnx, run_onnx)}
NUM_ON_A = 3  # detections on image A: the score threshold is set between its 3rd and 4th
# Resized images (3, h, w) uint8, as the test-time resize leaves them; A is traced.
IMAGES = {
    "A": torch.as_tensor(scene(96, TEST_SIZE, seed=0).transpose(2, 0, 1).copy()),
    "B": torch.as_tensor(scene(TEST_SIZE, 72, seed=2).transpose(2, 0, 1).copy()),
    "C": torch.as_tensor(scene(TEST_SIZE, TEST_SIZE, seed=3).transpose(2, 0, 1).copy()),
    "empty": torch.zeros(3, 80, TEST_SIZE, dtype=torch.uint8),
}
DOCS = REPO / "docs" / "EXPORT.md"
# Runs the docs' script on both exports in a fresh interpreter; argv: script, image.npy,
# image.png, exports...; saves <export>.npz and fails if vitdet or detectron2 got imported.
STANDALONE = """
import runpy, sys
import numpy as np
script, image, picture, *exports = sys.argv[1:]
for path in exports:
    _, boxes, classes, scores, masks = runpy.run_path(script)["detect"](path, np.load(image))
    np.savez(path + ".npz", boxes=boxes, classes=classes, scores=scores, masks=masks)
sys.argv = [script, exports[0], picture]
runpy.run_path(script, run_name="__main__")
assert not {m.split(".")[0] for m in sys.modules} & {"vitdet", "detectron2"}
"""


@pytest.fixture(scope="module")
def weights(tiny_detector_weights):
    return tiny_detector_weights


@pytest.fixture(scope="module")
def predictor(weights):
    """The tiny model, keeping the detections that score above A's NUM_ON_A-th best."""
    predictor = Predictor.from_config_file(CONFIG, weights, overrides=TINY, device="cpu")
    box_predictor = predictor.model.roi_heads.box_predictor
    box_predictor.test_topk_per_image = 100
    scores = eager_detections(predictor.model, IMAGES["A"])[2]
    box_predictor.test_score_thresh = float(scores[NUM_ON_A - 1] + scores[NUM_ON_A]) / 2
    counts = {name: len(eager_detections(predictor.model, im)[0]) for name, im in IMAGES.items()}
    # the premise of the tests: the traced count is not the only one the graphs can give
    assert counts["A"] == NUM_ON_A and counts["empty"] == 0, counts
    assert len({counts["A"], counts["B"], counts["C"]}) == 3, counts
    return predictor


@pytest.fixture(scope="module")
def detector_exports(predictor, tmp_path_factory):
    """{format: path} of the detector traced on image A, on a TEST_SIZE square canvas."""
    folder = tmp_path_factory.mktemp("exports")
    module = DetectorForExport(predictor.model).eval()
    sample = canvas_input(IMAGES["A"], TEST_SIZE, TEST_SIZE)
    metadata = {**export_metadata(predictor), **io_spec(module, sample)}
    paths = {}
    for name, (export, _) in FORMATS.items():
        paths[name] = folder / f"model.{name}"
        export(module, sample, paths[name], metadata=metadata)
    return paths


def _assert_within(diffs: dict[str, float], atol: dict[str, float]) -> None:
    assert {name: d for name, d in diffs.items() if d > atol[name]} == {}, diffs


def test_wrapper_equals_eager_inference(predictor):
    model = predictor.model
    module = DetectorForExport(model).eval()
    for image in IMAGES.values():
        _, h, w = image.shape
        canvas, size = canvas_input(image, TEST_SIZE, TEST_SIZE)
        canvas[:, h:] = canvas[:, :, w:] = 255.0  # the canvas outside the image is ignored
        with torch.no_grad():
            ours = module(canvas, size)
        expected = eager_detections(model, image)
        _assert_within(max_abs_diffs(module.output_names, expected, ours), DETECTION_ATOL)
        boxes = ours[0]
        assert (boxes >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()

    spec = io_spec(module, canvas_input(IMAGES["A"], TEST_SIZE, TEST_SIZE))
    assert spec["inputs"] == {
        "image": {"shape": [3, TEST_SIZE, TEST_SIZE], "dtype": "float32"},
        "image_size": {"shape": [2], "dtype": "int64"},
    }
    assert spec["outputs"]["masks"] == {"shape": ["N", 1, 28, 28], "dtype": "float32"}
    assert spec["outputs"]["classes"] == {"shape": ["N"], "dtype": "int64"}
    metadata = export_metadata(predictor)
    assert (metadata["short_edge_length"], metadata["max_size"]) == (TEST_SIZE, TEST_SIZE)
    assert len(metadata["class_names"]) == 80 and metadata["input_format"] == "RGB"


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_detector_export_traced_on_a_runs_on_others(fmt, predictor, detector_exports):
    run = FORMATS[fmt][1]
    names = DetectorForExport.output_names
    for image in IMAGES.values():
        outputs = run(detector_exports[fmt], canvas_input(image, TEST_SIZE, TEST_SIZE))
        expected = eager_detections(predictor.model, image)
        assert [o.shape for o in outputs] == [tuple(e.shape) for e in expected]
        _assert_within(max_abs_diffs(names, expected, outputs), DETECTION_ATOL)
    metadata = read_metadata(detector_exports[fmt])
    assert list(metadata["outputs"]) == list(names)
    assert metadata["class_names"] == list(predictor.metadata.thing_classes)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_backbone_export(fmt, predictor, tmp_path, monkeypatch):
    # Small chunks: eager and TorchScript take the ViT's chunked attention path (the real chunk
    # size does from ~1024 px on), which the ONNX export replaces by the plain path.
    monkeypatch.setitem(rel_pos_attention.__kwdefaults__, "chunk_elements", 1024)
    model = predictor.model
    module = BackboneForExport(model.backbone).eval()
    sample, other = (
        (normalize_canvas(model, *canvas_input(IMAGES[n], TEST_SIZE, TEST_SIZE))[None],)
        for n in ("A", "C")
    )
    export, run = FORMATS[fmt]
    path = tmp_path / f"backbone.{fmt}"
    export(module, sample, path, metadata=io_spec(module, sample))
    with torch.no_grad():
        expected = module(*other)
    outputs = run(path, other)
    assert module.output_names == ("p2", "p3", "p4", "p5", "p6")
    assert [o.shape for o in outputs] == [
        (1, 256, TEST_SIZE // s, TEST_SIZE // s) for s in (4, 8, 16, 32, 64)
    ]
    diffs = max_abs_diffs(module.output_names, expected, outputs)
    assert max(diffs.values()) <= FEATURE_ATOL, diffs
    assert read_metadata(path)["inputs"]["image"]["shape"] == [1, 3, TEST_SIZE, TEST_SIZE]


def test_docs_script_runs_exports_without_vitdet(predictor, detector_exports, tmp_path):
    """docs/EXPORT.md's script gives Predictor's results in original pixels, from either
    export, importing neither vitdet nor detectron2."""
    (code,) = re.findall(r"```python\n(# run_exported\.py.*?)```", DOCS.read_text(), re.DOTALL)
    script = tmp_path / "run_exported.py"
    script.write_text(code)
    image = scene(150, 260, seed=4)  # resized to 74 x 128
    np.save(tmp_path / "image.npy", image)
    Image.fromarray(image).save(tmp_path / "image.png")
    paths = [str(detector_exports[fmt]) for fmt in sorted(FORMATS)]
    run = subprocess.run(
        [sys.executable, "-c", STANDALONE, str(script), str(tmp_path / "image.npy")]
        + [str(tmp_path / "image.png"), *paths],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr

    expected = predictor(image)
    assert len(expected) > 0
    lines = run.stdout.splitlines()
    assert len(lines) == len(expected) and lines[0].split()[0] in predictor.metadata.thing_classes
    for path in paths:
        got = np.load(path + ".npz")
        assert got["masks"].shape == (len(expected), 150, 260)
        np.testing.assert_array_equal(got["classes"], expected.pred_classes.numpy())
        np.testing.assert_allclose(got["scores"], expected.scores.numpy(), atol=1e-5)
        np.testing.assert_allclose(got["boxes"], expected.pred_boxes.tensor.numpy(), atol=1e-3)
        differ = got["masks"] != expected.pred_masks.numpy()
        assert differ.sum() <= 1e-3 * expected.pred_masks.sum(), differ.sum()


def test_export_tool(weights, tmp_path):
    Image.fromarray(scene(100, 140, seed=5)).save(tmp_path / "scene.png")
    output = tmp_path / "out" / "model.onnx"
    argv = ["--config-file", CONFIG, "--weights", weights, "--format", "onnx", "--what", "model"]
    argv += ["--output", output, "--sample-image", tmp_path / "scene.png", "--", *TINY]
    run = subprocess.run(
        [sys.executable, REPO / "tools" / "export.py", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert f"wrote onnx of the model ({TEST_SIZE} x {TEST_SIZE}) to {output}" in out
    assert f"image: float32 (3, {TEST_SIZE}, {TEST_SIZE})" in out
    assert "masks: float32 (N, 1, 28, 28)" in out
    checks = re.findall(r"max \|onnx - eager\| on sample \d, (\d+) detections: .*: ok", out)
    assert checks == ["4", "4"], out  # TINY keeps the 4 best
    metadata = read_metadata(output)
    assert metadata["what"] == "model" and metadata["config"] == CONFIG.name
