"""tools/sam_demo.py (prompt files, COCO boxes, automatic masks, bad inputs) and the
tools/benchmarks/sam.py command, on the tiny SAM."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from vitdet.sam import SamPredictor, build_sam

from helpers import load_tool, scene


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    torch.save(build_sam("vit_tiny").state_dict(), path)
    return path


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(scene(90, 140, seed=1)).save(folder / "a.png")
    Image.fromarray(scene(120, 80, seed=2)).save(folder / "sub" / "b.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def run_demo(tmp_path, *args):
    out = tmp_path / "out"
    code = load_tool("sam_demo").main(["--model-type", "vit_tiny", "--output", str(out), *args])
    records = json.loads((out / "masks.json").read_text()) if (out / "masks.json").exists() else []
    return code, out, records


def test_demo_prompt_file(tmp_path, images, tiny_checkpoint, capsys, one_thread):
    prompts = {
        "a.png": [
            {"points": [[30, 40]], "labels": [1]},
            {"box": [10, 10, 100, 80]},
            {"points": [[50, 50], [20, 70]], "labels": [1, 0], "box": [5, 5, 120, 85]},
        ],
        "b.png": {"points": [[200, 10]], "labels": [1]},  # outside the 80 x 120 image
    }
    prompt_file = tmp_path / "prompts.json"
    prompt_file.write_text(json.dumps(prompts))
    code, out, records = run_demo(
        tmp_path,
        "--checkpoint",
        str(tiny_checkpoint),
        "--input",
        str(images),
        "--prompts",
        str(prompt_file),
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "FAILED" in err and "broken.jpg" in err and "b.png: point outside" in err
    assert len(records) == 3 and (out / "a.jpg").is_file()
    # the records are the predictor's masks for the same prompts, in original pixels
    predictor = SamPredictor(build_sam("vit_tiny", tiny_checkpoint))
    image = scene(90, 140, seed=1)
    predictor.set_image(image)
    masks, iou, _ = predictor.predict(np.array([[30, 40]]), np.array([1]), multimask_output=True)
    mask = mask_utils.decode(records[0]["segmentation"]).astype(bool)
    assert mask.shape == (90, 140)
    assert np.array_equal(mask, masks[np.argmax(iou)])
    assert records[0]["score"] == pytest.approx(float(iou.max()), abs=1e-6)
    assert records[1]["prompt"] == {"box": [10.0, 10.0, 100.0, 80.0]}
    assert records[0]["area"] == int(mask.sum())


def test_demo_coco_boxes_and_everything(tmp_path, images, tiny_checkpoint, one_thread):
    coco = {
        "images": [{"id": 7, "file_name": "a.png", "height": 90, "width": 140}],
        "annotations": [
            {"id": 1, "image_id": 7, "bbox": [10, 10, 50, 40], "category_id": 3},
            {"id": 2, "image_id": 7, "bbox": [60, 20, 70, 60], "category_id": 5},
        ],
        "categories": [{"id": 3, "name": "x"}, {"id": 5, "name": "y"}],
    }
    coco_file = tmp_path / "coco.json"
    coco_file.write_text(json.dumps(coco))
    code, _, records = run_demo(
        tmp_path,
        "--checkpoint",
        str(tiny_checkpoint),
        "--input",
        str(images / "a.png"),
        "--coco",
        str(coco_file),
    )
    assert code == 0
    assert [r["category_id"] for r in records] == [3, 5]
    code, out, records = run_demo(
        tmp_path,
        "--input",
        str(images / "a.png"),
        str(images / "sub"),
        "--everything",
        "--points-per-side=4",
        "--pred-iou-thresh=0",
        "--stability-score-thresh=0",
    )
    assert code == 0 and records and (out / "sub" / "b.jpg").is_file()
    assert {r["image_id"] for r in records} == {0, 1}


def test_demo_usage_errors(tmp_path, images, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert run_demo(tmp_path, "--input", str(images), "--prompts", str(bad))[0] == 2
    assert run_demo(tmp_path, "--input", str(tmp_path / "nothing*.png"), "--everything")[0] == 2
    with pytest.raises(SystemExit) as e:  # argparse: one prompt source is required
        run_demo(tmp_path, "--input", str(images))
    assert e.value.code == 2


def test_benchmark_command(tmp_path, capsys, one_thread):
    out = tmp_path / "bench.json"
    args = ["--model-type", "vit_tiny", "--repeats", "1", "--warmup", "0", "--prompt-repeats", "1"]
    assert load_tool("benchmarks/sam").main([*args, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "CPU:" in text and "torch" in text and "| image encoder |" in text
    result = json.loads(out.read_text())
    assert [r["task"] for r in result["rows"]][0] == "image encoder"
    assert all(r["diff"] < 1e-4 for r in result["rows"])
