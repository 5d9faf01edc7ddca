"""tools/benchmarks/synthetic.py steps on the toy recipe and the small SAM: both variants timed,
in one table."""

import json
import sys

import pytest
import torch
from detectron2.config import instantiate

from vitdet.config import load_config
from vitdet.data.coco import register_coco
from vitdet.data.synthetic import generate

from helpers import REPO, SYNTHETIC_CONFIG, load_tool, tiny_overrides, tiny_synthetic

D2_POOLER = "detectron2.modeling.poolers.ROIPooler"


def test_steps_times_the_config_against_overrides(tmp_path, monkeypatch):
    data = tiny_synthetic(tmp_path / "data")
    register_coco("steps_train", *data["train"])
    register_coco("steps_val", *data["val"])
    tool = load_tool("benchmarks/synthetic")
    argv = ["synthetic.py", "steps", "--output-dir", str(tmp_path / "out"), "--steps", "2"]
    argv += ["--profile", "5"]
    argv += tiny_overrides(tmp_path / "run", "steps_train", "steps_val")
    argv += [
        f"--vs=model.roi_heads.{name}._target_={D2_POOLER}"
        for name in ("box_pooler", "mask_pooler")
    ]
    monkeypatch.setattr(sys, "argv", argv)
    tool.main()
    table = json.loads((tmp_path / "out" / "steps.json").read_text())
    assert list(table) == ["config", "vs"]
    for parts in table.values():
        assert 0 < parts["forward"] < parts["step"]
        assert parts["backbone.net"] <= parts["backbone"] <= parts["forward"]
    text = (tmp_path / "out" / "steps.md").read_text()
    assert f"vs: model.roi_heads.box_pooler._target_={D2_POOLER}" in text
    assert "| step |" in text
    for variant in ("config", "vs"):
        profile = (tmp_path / "out" / f"profile_{variant}.txt").read_text()
        assert "Self CPU" in profile and "aten::" in profile


def test_steps_start_from_train_init_checkpoint(tmp_path, monkeypatch):
    """Weights of the same model are loaded (the table names them); another model's are
    refused by the strict loader, so they are not silently ignored."""
    data = tiny_synthetic(tmp_path / "data")
    register_coco("steps_w_train", *data["train"])
    register_coco("steps_w_val", *data["val"])
    overrides = tiny_overrides(tmp_path / "run", "steps_w_train", "steps_w_val")
    model = instantiate(load_config(SYNTHETIC_CONFIG, overrides).model)
    torch.save({"model": model.state_dict()}, tmp_path / "same.pth")
    del model.roi_heads.mask_head.predictor  # a model without the mask predictor
    torch.save({"model": model.state_dict()}, tmp_path / "other.pth")
    tool = load_tool("benchmarks/synthetic")
    argv = ["synthetic.py", "steps", "--output-dir", str(tmp_path / "out"), "--steps", "1"]
    argv += [*overrides, "--vs=model.roi_heads.mask_rois_per_image=null"]

    monkeypatch.setattr(sys, "argv", [*argv, f"train.init_checkpoint={tmp_path / 'same.pth'}"])
    tool.main()
    text = (tmp_path / "out" / "steps.md").read_text()
    assert f"weights: {tmp_path / 'same.pth'}" in text
    assert "vs: model.roi_heads.mask_rois_per_image=null" in text

    monkeypatch.setattr(sys, "argv", [*argv, f"train.init_checkpoint={tmp_path / 'other.pth'}"])
    with pytest.raises(Exception, match="mask_head.predictor"):
        tool.main()


def test_steps_of_the_sam_config(tmp_path, monkeypatch, one_thread):
    """Another training config: the parts its model has (the SAM encoder, not the detector's)."""
    (json_file, image_dir), _ = generate(
        tmp_path / "data", num_train=2, num_val=1, image_size=256
    ).values()
    register_coco("sam_steps_train", json_file, image_dir)
    tool = load_tool("benchmarks/synthetic")
    argv = ["synthetic.py", "steps", "--output-dir", str(tmp_path / "out"), "--steps", "1"]
    argv += ["--config-file", str(REPO / "configs" / "SAM" / "sam_vit_tiny_synthetic.py")]
    argv += [
        f"train.output_dir={tmp_path / 'run'}",
        "dataloader.train.dataset.names=sam_steps_train",
        "dataloader.train.total_batch_size=2",
        "train.amp.enabled=False",
        "--vs=model.num_correction_points=0",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    tool.main()
    table = json.loads((tmp_path / "out" / "steps.json").read_text())
    for parts in table.values():
        assert 0 < parts["image_encoder"] < parts["forward"] < parts["step"]
        assert "backbone" not in parts
    assert list(table) == ["config", "vs"]
    text = (tmp_path / "out" / "steps.md").read_text()
    assert "| image_encoder |" in text and "| roi_heads |" not in text
