"""tools/benchmarks/synthetic.py steps on the toy recipe: both variants timed, in one table."""

import json
import sys

from vitdet.data.coco import register_coco

from helpers import load_tool, tiny_overrides, tiny_synthetic

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
