"""ONNX export of the tiny SAM: prompt path (the release's input convention) and image
encoder, run with onnxruntime against eager and against SamPredictor."""

import numpy as np
import pytest
import torch

from vitdet.sam import SamPredictor, build_sam
from vitdet.sam.export import (
    SamEncoderForExport,
    SamPromptForExport,
    encoder_input,
    export_onnx,
    max_abs_diffs,
    prompt_sample,
    run_onnx,
)

from helpers import load_tool, scene

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = build_sam("vit_tiny")
    image = scene(90, 140, seed=3)
    predictor = SamPredictor(model)
    predictor.set_image(image)
    return model, image, predictor


def test_encoder_export(setup, tmp_path, one_thread):
    model, image, predictor = setup
    x = encoder_input(model, image)
    module = SamEncoderForExport(model)
    export_onnx(module, [x], tmp_path / "encoder.onnx")
    assert max(max_abs_diffs(module, tmp_path / "encoder.onnx", [x]).values()) < TOLERANCE
    (embedding,) = run_onnx(tmp_path / "encoder.onnx", [x])
    np.testing.assert_allclose(embedding, predictor.get_image_embedding().numpy(), atol=TOLERANCE)


def test_prompt_export_matches_predictor(setup, tmp_path, one_thread):
    model, image, predictor = setup
    embedding = predictor.get_image_embedding()
    point = np.array([[30.0, 40.0]])
    sample = prompt_sample(
        model, embedding, np.array([[30.0, 40.0], [0, 0]]), np.array([1, -1]), (90, 140)
    )
    module = SamPromptForExport(model)
    path = tmp_path / "prompt.onnx"
    export_onnx(module, sample, path)
    assert max(max_abs_diffs(module, path, sample).values()) < TOLERANCE
    masks, iou, low = run_onnx(path, sample)
    assert masks.shape == (1, 4, 90, 140) and low.shape == (1, 4, 32, 32)
    expected = predictor.predict(point, np.array([1]), multimask_output=True, return_logits=True)
    for got, want in zip((masks[0, 1:], iou[0, 1:], low[0, 1:]), expected, strict=True):
        np.testing.assert_allclose(got, want, atol=TOLERANCE)

    # the same file: another image size, a box (corners 2 / 3), points and a mask prompt
    box = np.array([10.0, 12.0, 120.0, 70.0])
    mask_in = torch.as_tensor(expected[2][:1])[None]
    coords = np.array([[50.0, 60.0], box[:2], box[2:]])
    sample = prompt_sample(
        model, embedding, coords, np.array([0, 2, 3]), (90, 140), mask_input=mask_in
    )
    assert max(max_abs_diffs(module, path, sample).values()) < TOLERANCE
    masks, iou, _ = run_onnx(path, sample)
    want = predictor.predict(
        np.array([[50.0, 60.0]]),
        np.array([0]),
        box=box,
        mask_input=expected[2][:1],
        multimask_output=False,
        return_logits=True,
    )
    np.testing.assert_allclose(masks[0, :1], want[0], atol=TOLERANCE)
    np.testing.assert_allclose(iou[0, :1], want[1], atol=TOLERANCE)
    other = prompt_sample(model, embedding, coords, np.array([0, 2, 3]), (200, 77))
    assert run_onnx(path, other)[0].shape == (1, 4, 200, 77)


def test_single_mask_export(setup, tmp_path, one_thread):
    model, _, predictor = setup
    embedding = predictor.get_image_embedding()
    module = SamPromptForExport(model, return_single_mask=True)
    one = prompt_sample(
        model, embedding, np.array([[30.0, 40.0], [0, 0]]), np.array([1, -1]), (90, 140)
    )
    export_onnx(module, one, tmp_path / "single.onnx")
    three = prompt_sample(
        model, embedding, np.array([[30.0, 40.0], [5, 6], [0, 0]]), np.array([1, 1, -1]), (90, 140)
    )
    for sample in (one, three):
        assert max(max_abs_diffs(module, tmp_path / "single.onnx", sample).values()) < TOLERANCE
    _, iou_one, _ = run_onnx(tmp_path / "single.onnx", one)
    eager_all = SamPromptForExport(model)(*one)[1]
    assert iou_one[0, 0] == pytest.approx(eager_all[0, 1:].max().item(), abs=TOLERANCE)
    _, iou_three, _ = run_onnx(tmp_path / "single.onnx", three)
    assert iou_three[0, 0] == pytest.approx(
        SamPromptForExport(model)(*three)[1][0, 0].item(), abs=TOLERANCE
    )


def test_export_tool(tmp_path, capsys, one_thread):
    code = load_tool("sam_export").main(["--model-type", "vit_tiny", "--output", str(tmp_path)])
    assert code == 0
    assert (tmp_path / "sam_vit_tiny_prompt.onnx").is_file()
    assert (tmp_path / "sam_vit_tiny_encoder.onnx").is_file()
    assert "max abs diff" in capsys.readouterr().out
