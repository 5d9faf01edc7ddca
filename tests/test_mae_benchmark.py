"""Seeded label subsets (``<dataset>@<percent>%``) and tools/benchmarks/mae.py's stages: which
runs start, in what order, what is skipped or resumed, the table, the goal check and the
picture. The tools are never run: a fake launcher writes what a finished run writes."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from detectron2.config import instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog

from vitdet.checkpoint import load_checkpoint
from vitdet.config import load_config, register_datasets
from vitdet.data import DatasetError, register_coco
from vitdet.data.subset import parse_subset_name, select_subset, subset_indices

from helpers import REPO, load_tool, tiny_synthetic
from helpers import SYNTHETIC_CONFIG as SYNTHETIC

# --- subsets --------------------------------------------------------------------------------


def test_subset_is_seeded_sized_and_nested():
    ten = subset_indices(600, 10)
    assert ten == subset_indices(600, 10)  # the same images every time
    assert len(ten) == 60 and len(set(ten)) == 60 and ten == sorted(ten)
    assert all(0 <= i < 600 for i in ten)
    assert set(ten) < set(subset_indices(600, 20))  # 10% is inside 20%
    assert subset_indices(600, 100) == list(range(600))
    assert ten != subset_indices(600, 10, seed=1)
    assert len(subset_indices(7, 1)) == 1  # never empty
    assert len(subset_indices(600, 2.5)) == 15


def test_subset_chooses_by_image_id_not_by_load_order():
    records = [{"image_id": i, "file_name": f"{i}.jpg"} for i in range(50)]
    chosen = select_subset(records, 20)
    assert len(chosen) == 10
    again = select_subset(records[::-1], 20)
    assert {r["image_id"] for r in again} == {r["image_id"] for r in chosen}
    assert [r["image_id"] for r in again] == sorted((r["image_id"] for r in chosen), reverse=True)
    with pytest.raises(DatasetError, match="unique image_id"):
        select_subset(records + records[:1], 20)


def test_subset_names():
    assert parse_subset_name("synthetic_train@10%") == ("synthetic_train", 10.0)
    assert parse_subset_name("coco@home@2.5%") == ("coco@home", 2.5)
    assert parse_subset_name("synthetic_train") is None
    assert parse_subset_name("synthetic_train@10") is None
    for bad in ("a@0%", "a@150%"):
        with pytest.raises(DatasetError, match=r"\(0, 100\]"):
            parse_subset_name(bad)


def test_config_names_a_subset_of_a_registered_dataset(tmp_path):
    splits = tiny_synthetic(tmp_path / "data")
    base = f"shapes_{tmp_path.name}"
    register_coco(base, *splits["train"])
    name = f"{base}@25%"
    cfg = load_config(SYNTHETIC, [f"dataloader.train.dataset.names={name}"])
    try:
        register_datasets(cfg)
        records = DatasetCatalog.get(name)
        everything = DatasetCatalog.get(base)
        assert len(records) == 2  # 25% of 8 images
        assert {r["file_name"] for r in records} < {r["file_name"] for r in everything}
        assert [r["image_id"] for r in records] == [
            r["image_id"] for r in select_subset(everything, 25)
        ]
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == MetadataCatalog.get(base).thing_classes
        assert meta.get("json_file") is None  # an evaluation converts the subset's records
        register_datasets(cfg)  # again: nothing changes
        missing = load_config(SYNTHETIC, ["dataloader.train.dataset.names=nowhere@10%"])
        with pytest.raises(DatasetError, match="'nowhere' is not registered"):
            register_datasets(missing)
    finally:
        for registered in (name, base):
            DatasetCatalog.remove(registered)
            MetadataCatalog.remove(registered)


# --- the benchmark's stages -----------------------------------------------------------------


@pytest.fixture(scope="module")
def bench():
    return load_tool("benchmarks/mae")


def value(command: list[str], key: str) -> str | None:
    found = [c.split("=", 1)[1] for c in command if c.startswith(f"{key}=")]
    return found[-1] if found else None


def test_jobs_commands(bench, tmp_path):
    built = bench.build_jobs(
        tmp_path, bench.ARMS, finetune_iters=300, eval_period=100, opts=["optimizer.lr=1e-4"]
    )
    jobs = {job.name: job for job in built}
    # The start priority: ARMS order, each pretraining just before the first arm needing it.
    assert list(jobs) == [
        "random_10", "mae", "mae_10", "random_100", "mae_100", "random_10_lr5e-4",
        "random_10_lr2e-3", "mae_10_lr1e-3", "random_100_lr2e-3", "mae_10_scratch_recipe",
        "mae_convstem", "mae_convstem_10", "mae_sincos_10", "mae_long", "mae_long_10",
        "mae_long_100", "mae_long_100_lr1e-3", "supervised", "supervised_10",
    ]  # fmt: skip
    for job in jobs.values():
        assert "--resume" in job.command
        assert value(job.command, "train.output_dir") == str(job.folder)
    mae10, random100 = jobs["mae_10"].command, jobs["random_100"].command
    assert value(mae10, "dataloader.train.dataset.names") == "synthetic_train@10%"
    assert value(random100, "dataloader.train.dataset.names") is None  # the config's, all
    assert value(mae10, "train.init_checkpoint") == str(tmp_path / "mae" / "model_final.pth")
    assert value(random100, "train.init_checkpoint") is None
    assert jobs["mae_10"].after == ("mae",) and jobs["random_10"].after == ()
    assert jobs["mae_convstem_10"].after == ("mae_convstem",)
    assert jobs["mae_long_100"].after == ("mae_long",)
    supervised = jobs["supervised"].command
    assert "tools/train_net.py" in supervised and "--register-coco" in supervised
    assert value(supervised, "dataloader.train.dataset.names") == bench.UNLABELED_TRAIN
    assert value(jobs["supervised_10"].command, "train.init_checkpoint") == str(
        tmp_path / "supervised" / "backbone_init.pth"
    )
    assert jobs["supervised_10"].prepare is not None and jobs["mae_10"].prepare is None
    assert value(jobs["mae_long_100"].command, "train.init_checkpoint") == str(
        tmp_path / "mae_long" / "model_final.pth"
    )
    for arm in ("mae_10", "random_100"):  # one schedule for every arm; the user's opts last
        command = jobs[arm].command
        assert value(command, "train.max_iter") == "300"
        assert value(command, "train.eval_period") == "100"
        assert value(command, "lr_multiplier.warmup_length") == str(100 / 300)
        assert command[-1] == "optimizer.lr=1e-4"
    assert value(jobs["mae_10_lr1e-3"].command, "optimizer.lr") == "1e-4"  # the user's wins
    main = bench.build_jobs(tmp_path, [a for a in bench.ARMS if a.group == "main"],
                            finetune_iters=300, eval_period=100, opts=[])  # fmt: skip
    assert "mae_convstem" not in {job.name for job in main}  # only the pretraining it needs


def test_pretraining_configs_differ_only_in_schedule(bench):
    """The budget row changes the pretraining's length and nothing else of its recipe."""
    configs = {pre.name: REPO / pre.config for pre in bench.PRETRAININGS}
    short, long = load_config(configs["mae"]), load_config(configs["mae_long"])
    assert (short.model, short.optimizer, short.dataloader) == (
        long.model,
        long.optimizer,
        long.dataloader,
    )
    assert long.train.max_iter == 7.5 * short.train.max_iter
    assert long.lr_multiplier.warmup_length == short.lr_multiplier.warmup_length == 0.05


def test_backbone_init_keeps_the_vit_and_builds_new_heads(bench, tmp_path, one_thread):
    """The supervised ceiling's init: the trained detector's ViT, the rest as a new detector's;
    it loads strictly into the fine-tuning model."""
    config = bench.MAE_FT_CONFIG
    torch.manual_seed(1)
    trained = instantiate(load_config(REPO / config).model).state_dict()
    torch.save({"model": trained}, tmp_path / "model_final.pth")
    dst = tmp_path / "backbone_init.pth"
    bench.backbone_init(tmp_path / "model_final.pth", dst, config)
    torch.manual_seed(0)
    fresh = instantiate(load_config(REPO / config).model)
    fresh_state = {k: v.clone() for k, v in fresh.state_dict().items()}
    report = load_checkpoint(fresh, str(dst))
    assert not report.new and not report.refused
    for key, value in fresh.state_dict().items():
        expected = trained[key] if key.startswith("backbone.net.") else fresh_state[key]
        assert torch.equal(value, expected), key
    assert not torch.equal(trained["roi_heads.box_predictor.cls_score.weight"],
                           fresh_state["roi_heads.box_predictor.cls_score.weight"])  # fmt: skip
    with pytest.raises(ValueError, match="not a checkpoint"):
        torch.save({"model": {"blocks.0.x": torch.zeros(1)}}, tmp_path / "other.pth")
        bench.backbone_init(tmp_path / "other.pth", dst, config)


def finished_run(bench, folder: Path, curve: list[tuple[int, float]], lr: float) -> None:
    """What a finished fine-tuning run leaves: metrics.json eval rows, config.yaml, weights."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"iteration": it - 1, "total_loss": 1.0} for it, _ in curve]
    rows += [
        {"iteration": it - 1, "train_iterations": it, "train_cpu_seconds": 6.0 * it,
         "bbox/AP": ap, "bbox/AP50": ap + 20, "bbox/AP75": ap - 5,
         "segm/AP": ap - 3, "segm/AP50": ap + 15, "segm/AP75": ap - 8}
        for it, ap in curve
    ]  # fmt: skip
    (folder / "metrics.json").write_text("\n".join(map(json.dumps, rows)) + "\n")
    (folder / "config.yaml").write_text(
        f"optimizer:\n  lr: {lr}\n  params:\n    lr_decay_rate: 0.75\n"
        "model:\n  backbone:\n    net:\n      drop_path_rate: 0.1\n"
        "      norm_layer: !!python/name:torch.nn.LayerNorm ''\n"  # as a run writes; not built
    )
    (folder / "model_final.pth").write_bytes(b"")


class FakeProcess:
    """A run that finishes at its first poll, having written ``on_finish``'s files."""

    def __init__(self, on_finish, returncode: int = 0):
        self.on_finish, self.returncode = on_finish, None
        self._code = returncode

    def poll(self):
        if self.returncode is None:
            self.on_finish()
            self.returncode = self._code
        return self.returncode


def test_stages_skip_done_runs_respect_order_and_report_failures(bench, tmp_path):
    arms = [a for a in bench.ARMS if a.group == "main"]
    jobs = bench.build_jobs(tmp_path, arms, finetune_iters=300, eval_period=100, opts=[])
    finished_run(bench, tmp_path / "finetune_random_10", [(100, 5.0), (300, 9.0)], 1e-3)
    half = tmp_path / "finetune_random_100"  # interrupted: no final evaluation yet
    finished_run(bench, half, [(100, 5.0)], 1e-3)
    (half / "model_final.pth").unlink()
    started = []

    def launch(job):
        assert all(dep in done_names() for dep in job.after), job.name
        started.append(job.name)

        def finish():
            if job.name == "mae":
                (job.folder).mkdir(parents=True, exist_ok=True)
                (job.folder / "model_final.pth").write_bytes(b"")
            else:
                finished_run(bench, job.folder, [(100, 1.0), (300, 2.0)], 5e-4)

        return FakeProcess(finish)

    def done_names():
        return {job.name for job in jobs if job.done()}

    assert bench.run_jobs(jobs, max_jobs=2, launch=launch, poll_seconds=0) == started
    # random_10 was complete; random_100 is resumed (its command has --resume); mae_* after mae.
    assert sorted(started) == ["mae", "mae_10", "mae_100", "random_100"]
    assert started.index("mae") < started.index("mae_10")
    assert bench.run_jobs(jobs, max_jobs=2, launch=launch, poll_seconds=0) == []  # all done

    fresh = bench.build_jobs(tmp_path / "again", arms, finetune_iters=300, eval_period=100, opts=[])
    # Runs that do not wait for the failed pretraining still run; those that do are named.
    with pytest.raises(
        SystemExit, match="failed: random_10, mae, random_100; not run: mae_10, mae_100"
    ):
        bench.run_jobs(
            fresh, max_jobs=1, launch=lambda job: FakeProcess(lambda: None, 1), poll_seconds=0
        )


def test_a_run_another_invocation_started_is_waited_for_not_started_twice(bench, tmp_path):
    folder = tmp_path / "finetune_x"
    folder.mkdir()
    marker = folder / "finished"
    job = bench.Job("x", folder, [], marker.exists)
    write_later = "import pathlib, sys, time; time.sleep(0.5); pathlib.Path(sys.argv[1]).touch()"
    other = subprocess.Popen([sys.executable, "-c", write_later, str(marker)])
    cmdline = Path(f"/proc/{other.pid}/cmdline")
    for _ in range(200):  # Popen may return before the child's exec is visible
        if cmdline.read_bytes():
            break
        time.sleep(0.01)
    (folder / "harness.pid").write_text(str(other.pid))

    def launch(job):
        raise AssertionError("started twice")

    assert bench.run_jobs([job], max_jobs=1, launch=launch, poll_seconds=0.05) == []
    assert marker.exists() and other.wait() == 0
    # A stale pid file (that process is gone) does not stop a start.
    marker.unlink()
    launched = bench.run_jobs(
        [job], max_jobs=1, launch=lambda j: FakeProcess(marker.touch), poll_seconds=0
    )
    assert launched == ["x"]


def test_results_table_goal_and_picture(bench, tmp_path):
    arms = [a for a in bench.ARMS if a.group in ("main", "sweep")]
    curves = {  # final box AP: MAE wins by 6 at 10% (its sweep's best), loses by 1 at 100%
        "random_10": [(150, 10.0), (300, 20.0)],
        "random_10_lr5e-4": [(150, 12.0), (300, 22.0)],
        "random_10_lr2e-3": [(150, 11.0), (300, 21.0)],
        "mae_10": [(150, 20.0), (300, 26.0)],
        "mae_10_lr1e-3": [(150, 21.0), (300, 28.0)],
        "mae_10_scratch_recipe": [(150, 18.0), (300, 25.0)],
        "random_100": [(150, 30.0), (300, 50.0)],
        "random_100_lr2e-3": [(150, 31.0), (300, 48.0)],
        "mae_100": [(150, 35.0), (300, 49.0)],
    }
    for name, curve in curves.items():
        finished_run(bench, tmp_path / f"finetune_{name}", curve, 1e-3)
    mae_rows = [
        {"train_iterations": it, "train_cpu_seconds": it / 2, "mae_eval/loss": loss}
        for it, loss in ((600, 0.6), (1200, 0.4))
    ]
    (tmp_path / "mae").mkdir()
    (tmp_path / "mae" / "metrics.json").write_text("\n".join(map(json.dumps, mae_rows)))

    text = bench.write_results(tmp_path, arms, 300)
    assert "Pretraining `mae`: 1200 iterations, 10.0 CPU min" in text
    assert "0.600, 0.400" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(arms)  # the header and one row per arm
    header, row = ([c.strip() for c in line.strip("|").split("|")] for line in table[:3:2])
    cells = dict(zip(header, row, strict=True))
    assert cells["arm"] == "MAE init, fine-tuning recipe" and cells["labels"] == "10%"
    assert cells["box AP"] == "26.0" and cells["mask AP"] == "23.0"
    assert cells["box AP at 150 / 300 it"] == "20.0 / 26.0"
    assert cells["fine-tuning CPU min"] == "30.0"
    summary = json.loads((tmp_path / "results.json").read_text())
    goal = summary["goal"]
    assert goal["10%"]["mae"] == "mae_10_lr1e-3" and goal["10%"]["random"] == "random_10_lr5e-4"
    assert goal["10%"]["box_AP_gain"] == pytest.approx(6.0) and goal["10%"]["met"]
    assert goal["100%"]["box_AP_gain"] == pytest.approx(-1.0) and not goal["100%"]["met"]
    assert "Goal at 10% labels (mae_10_lr1e-3 vs random_10_lr5e-4): box AP gain +6.0" in text
    assert (tmp_path / "results.md").read_text() == text
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_results_with_the_supervised_ceiling(bench, tmp_path):
    """The supervised pretraining is reported by its box AP, and its arm is neither MAE nor
    random in the goal check."""
    arms = [a for a in bench.ARMS if a.name in ("random_10", "mae_10", "supervised_10")]
    for name, final in (("random_10", 20.0), ("mae_10", 22.0), ("supervised_10", 40.0)):
        finished_run(bench, tmp_path / f"finetune_{name}", [(150, final / 2), (300, final)], 1e-3)
    finished_run(bench, tmp_path / "supervised", [(500, 30.0), (1000, 50.0)], 1e-3)
    (tmp_path / "mae").mkdir()
    (tmp_path / "mae" / "metrics.json").write_text(
        json.dumps({"train_iterations": 600, "train_cpu_seconds": 60, "mae_eval/loss": 0.5})
    )
    text = bench.write_results(tmp_path, arms, 300)
    assert (
        "Pretraining `supervised`: 1000 iterations, 100.0 CPU min; box AP on synthetic_val" in text
    )
    assert "at each evaluation: 30.0, 50.0" in text
    goal = json.loads((tmp_path / "results.json").read_text())["goal"]["10%"]
    assert (goal["mae"], goal["random"], goal["box_AP_gain"]) == ("mae_10", "random_10", 2.0)
