"""tools/benchmarks/speed.py on a tiny model: the report's structure and parity, never its times."""

import json
import sys

import pytest
import torch

from helpers import load_tool

reference = pytest.importorskip("detectron2.modeling")
pytestmark = pytest.mark.skipif(
    not hasattr(reference, "ViT"), reason="installed detectron2 has no reference ViT"
)


def run_tool(monkeypatch, *args: str):
    """The tool's main() in this process with ``args`` (restores the thread count)."""
    tool = load_tool("benchmarks/speed")
    monkeypatch.setattr(sys, "argv", ["benchmark.py", "--tiny", "--threads", "1", *args])
    threads = torch.get_num_threads()
    try:
        tool.main()
    finally:
        torch.set_num_threads(threads)
    return tool


def test_tiny_benchmark_report(tmp_path, monkeypatch):
    pytest.importorskip("timm")  # the reference Block imports timm
    out = tmp_path / "bench.json"
    tasks = ["backbone_infer", "backbone_infer_bf16", "backbone_train"]
    args = ["--repeats", "1", "--train-repeats", "1", "--no-memory", "--json", str(out)]
    tool = run_tool(monkeypatch, *args, "--tasks", *tasks)
    result = json.loads(out.read_text())
    assert {"machine", "ceiling", "rows", "args"} <= set(result)
    assert {"cpu", "cores", "threads", "torch", "date", "training_gemms"} <= set(result["machine"])
    assert result["ceiling"]["best_gflops"] == max(result["ceiling"]["gflops"].values())
    rows = {row["task"]: row for row in result["rows"]}
    assert list(rows) == ["backbone_infer", "backbone_infer_bf16", "backbone_train"]
    for row in rows.values():
        for impl in ("ref", "ours"):
            assert len(row[impl]["wall_s"]) == 1 and row[impl]["median_s"] > 0
            assert 0 <= row[impl]["sys_s"][0] <= row[impl]["cpu_s"][0] + 0.01  # rusage ticks
            assert row[impl]["page_faults"][0] >= 0
    infer = rows["backbone_infer"]
    assert list(infer["max_abs_diff"]) == ["p2", "p3", "p4", "p5", "p6"]
    assert max(infer["max_abs_diff"].values()) <= 1e-4
    assert infer["gmac"] > 0 and infer["ours"]["gflops"] > 0
    assert rows["backbone_train"]["max_abs_diff"] <= 1e-4  # the same loss, drop path included
    bf16 = rows["backbone_infer_bf16"]["max_abs_diff_vs_fp32_reference"]
    assert set(bf16) == {"ref", "ours"}
    assert "| B | backbone_infer |" in tool.markdown(result)
    assert "B backbone_train: in the kernel (medians) ref " in tool.markdown(result)
    assert "our training GEMMs: " in tool.markdown(result)


def test_memory_probe_reports_the_task_peak(capsys, monkeypatch):
    run_tool(monkeypatch, "--probe-task", "backbone_infer", "--probe-impl", "ours")
    peak = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["peak_mb"]
    assert peak >= 0


def test_reference_detector_keeps_detectron2_heads():
    pytest.importorskip("timm")
    from detectron2.modeling.poolers import ROIPooler as D2ROIPooler

    from vitdet.modeling.roi_align import ROIPooler

    models = load_tool("benchmarks/speed").build_detectors("B", True, "cpu")
    for name in ("box_pooler", "mask_pooler"):
        assert type(getattr(models["ref"].roi_heads, name)) is D2ROIPooler
        assert type(getattr(models["ours"].roi_heads, name)) is ROIPooler
