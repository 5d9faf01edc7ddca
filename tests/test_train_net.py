"""tools/train_net.py on a tiny generated dataset: training, evaluation, exact resume, atomic
checkpoints, checked overrides, dataset errors; the engine pieces in isolation."""

import json
import shutil
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.utils.events import EventStorage
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vitdet import device as device_module
from vitdet.checkpoint import CheckpointError
from vitdet.config import ConfigError, load_config, setup_datasets
from vitdet.data.loader import build_resumable_train_loader
from vitdet.data.synthetic import CLASSES
from vitdet.device import resolve_amp_dtype
from vitdet.engine import build_trainer, evaluation_rows
from vitdet.engine.run_state import RunCheckpointer
from vitdet.engine.trainer import Trainer
from vitdet.export import read_metadata
from vitdet.predictor import Predictor
from vitdet.provenance import Provenance, read_provenance

from helpers import REPO, load_tool, tiny_overrides, tiny_synthetic
from helpers import SYNTHETIC_CONFIG as SYNTHETIC_PATH

SYNTHETIC_CONFIG = str(SYNTHETIC_PATH)
COCO_CONFIG = str(REPO / "configs" / "COCO" / "mask_rcnn_vitdet_b_100ep.py")
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


train_net = load_tool("train_net")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_synthetic(tmp_path_factory.mktemp("synthetic"))


def register_args(dataset) -> tuple[list[str], str, str]:
    """``--register-coco`` arguments under fresh names (the catalog is per process)."""
    tag = uuid.uuid4().hex[:8]
    train, val = f"tiny_train_{tag}", f"tiny_val_{tag}"
    args = ["--register-coco", train, *dataset["train"], "--register-coco", val, *dataset["val"]]
    return args, train, val


def run(argv: list[str]) -> int:
    return train_net.cli(["--config-file", SYNTHETIC_CONFIG, *argv])


@pytest.fixture(scope="module")
def full_run(dataset, tmp_path_factory):
    """4 iterations, checkpoints after iterations 2 and 4, evaluation at the end."""
    output_dir = tmp_path_factory.mktemp("full")
    register, train_name, val_name = register_args(dataset)
    overrides = tiny_overrides(output_dir, train_name, val_name)
    assert run([*register, *overrides]) == 0
    return output_dir


def read_metrics(output_dir) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines()]


def load_pth(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_run_writes_logs_events_and_checkpoints(full_run):
    rows = read_metrics(full_run)
    train_rows = [r for r in rows if "total_loss" in r]
    assert [r["iteration"] for r in train_rows] == [0, 1, 2, 3]
    assert all(np.isfinite(r["total_loss"]) and r["lr"] > 0 for r in train_rows)
    final = rows[-1]  # the evaluation after the last iteration
    assert final["train_iterations"] == 4 and final["train_seconds"] > 0
    assert {"bbox/AP", "segm/AP", "bbox/AP-circle"} <= final.keys()
    evaluations = [r for r in rows if "bbox/AP" in r]
    assert evaluation_rows(full_run, "bbox/AP") == evaluations and evaluations[-1] == final
    assert evaluation_rows(full_run, "segm/AP", "total_loss") == train_rows + evaluations
    assert evaluation_rows(full_run / "not_a_run", "bbox/AP") == []
    assert list(full_run.glob("events.out.tfevents.*"))
    assert (full_run / "config.yaml").is_file()

    names = sorted(p.name for p in full_run.glob("*.pth"))
    assert names == ["model_0000001.pth", "model_0000003.pth", "model_final.pth"]
    assert (full_run / "last_checkpoint").read_text() == "model_final.pth"
    assert not list(full_run.glob("*.tmp"))
    state = load_pth(full_run / "model_final.pth")
    assert state["iteration"] == 3 and state["trainer"]["iteration"] == 3
    assert {"model", "optimizer"} <= state.keys() | state["trainer"].keys()


def test_evaluation_equals_pycocotools_on_kept_results(full_run, dataset):
    results = json.loads((full_run / "eval_results.json").read_text())
    detections = json.loads((full_run / "inference" / "coco_instances_results.json").read_text())
    assert detections, "the tiny model should still output (low-score) detections"
    ground_truth = COCO(dataset["val"][0])
    for task in ("bbox", "segm"):
        # mask AP: areas from the masks, as detectron2 does (a bbox would set the area)
        dts = [{k: v for k, v in d.items() if task == "bbox" or k != "bbox"} for d in detections]
        coco_eval = COCOeval(ground_truth, ground_truth.loadRes(dts), task)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
        expected = [100 * s if s >= 0 else float("nan") for s in coco_eval.stats[:6]]
        ours = [results[task][m] for m in METRICS]
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-9)
        assert {f"AP-{name}" for name in CLASSES} <= results[task].keys()


def test_eval_only_reproduces_the_final_evaluation(full_run, dataset, tmp_path):
    register, train_name, val_name = register_args(dataset)
    overrides = tiny_overrides(tmp_path, train_name, val_name)
    weights = f"train.init_checkpoint={full_run / 'model_final.pth'}"
    assert run(["--eval-only", *register, *overrides, weights]) == 0
    results = (tmp_path / "eval_results.json").read_text()  # text: NaN-safe, exact numbers
    assert results == (full_run / "eval_results.json").read_text()
    assert not list(tmp_path.glob("*.pth"))  # evaluation writes no checkpoint


def test_resume_after_interruption_matches_uninterrupted_run(full_run, dataset, tmp_path):
    # The interrupted run: it wrote the checkpoint after iteration 2 and died before 4.
    output_dir = tmp_path / "resumed"
    output_dir.mkdir()
    shutil.copy(full_run / "model_0000001.pth", output_dir)
    (output_dir / "last_checkpoint").write_text("model_0000001.pth")

    register, train_name, val_name = register_args(dataset)
    overrides = tiny_overrides(output_dir, train_name, val_name)
    assert run(["--resume", *register, *overrides]) == 0

    rows = [r for r in read_metrics(output_dir) if "total_loss" in r]
    assert [r["iteration"] for r in rows] == [2, 3]  # continued, not restarted
    # (logged losses are medians over the run's history, so they are not compared; the same
    # weights after two more steps need the same batches and RoI samples)
    resumed = load_pth(output_dir / "model_final.pth")
    uninterrupted = load_pth(full_run / "model_final.pth")
    assert resumed["iteration"] == uninterrupted["iteration"] == 3
    for key, value in uninterrupted["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=1e-6)
    for group, expected in zip(
        resumed["trainer"]["optimizer"]["param_groups"],
        uninterrupted["trainer"]["optimizer"]["param_groups"],
        strict=True,
    ):
        assert group["lr"] == pytest.approx(expected["lr"])
    states = resumed["trainer"]["optimizer"]["state"]
    for index, expected in uninterrupted["trainer"]["optimizer"]["state"].items():
        torch.testing.assert_close(states[index]["exp_avg"], expected["exp_avg"], atol=1e-6, rtol=0)


def test_crash_while_saving_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    checkpointer = RunCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000001")
    good = {k: v.clone() for k, v in model.state_dict().items()}

    def crash_mid_write(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with torch.no_grad():
        model.weight.add_(1.0)
    for name in ("model_0000001", "model_0000002"):  # overwrite the good one, or a new one
        with pytest.raises(OSError, match="disk full"):
            checkpointer.save(name)
    monkeypatch.undo()

    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000001.pth"]
    fresh = torch.nn.Linear(3, 2)
    RunCheckpointer(fresh, str(tmp_path)).resume_or_load("", resume=True)
    for key, value in good.items():
        assert torch.equal(fresh.state_dict()[key], value)


def test_resume_from_a_checkpoint_of_another_model_is_an_error(tmp_path):
    RunCheckpointer(torch.nn.Linear(3, 2), str(tmp_path)).save("model_final")
    other = RunCheckpointer(torch.nn.Linear(3, 4), str(tmp_path))
    with pytest.raises(CheckpointError, match="does not fit the model"):
        other.resume_or_load("", resume=True)


def test_override_typo_fails_clearly(capsys):
    assert run(["model.backbone.net.embed_dimm=64"]) == 2
    err = capsys.readouterr().err
    assert "'model.backbone.net' has no key 'embed_dimm'" in err and "embed_dim" in err
    assert run(["train.amp.enable=True"]) == 2
    assert "did you mean enabled" in capsys.readouterr().err


def test_overrides_accept_constructor_arguments_and_list_items():
    cfg = load_config(
        SYNTHETIC_CONFIG,
        [
            "model.backbone.net.use_act_checkpoint=True",  # a ViT argument the config omits
            "dataloader.train.mapper.augmentations.0.horizontal=False",
            "+train.note=added on purpose",
        ],
    )
    assert cfg.model.backbone.net.use_act_checkpoint is True
    assert cfg.dataloader.train.mapper.augmentations[0].horizontal is False
    with pytest.raises(ConfigError, match="list of 3 items"):
        load_config(SYNTHETIC_CONFIG, ["dataloader.train.mapper.augmentations.3.pad=True"])


def test_broken_annotation_file_fails_before_training(tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [], "annotations": [')
    argv = ["--register-coco", f"broken_{uuid.uuid4().hex[:8]}", str(broken), str(tmp_path)]
    assert run([*argv, f"train.output_dir={tmp_path}/out"]) != 0
    assert str(broken) in capsys.readouterr().err


def test_num_classes_follow_the_registered_dataset(dataset):
    _, train_name, val_name = register_args(dataset)
    names = [f"dataloader.train.dataset.names={train_name}"]
    names.append(f"dataloader.test.dataset.names={val_name}")
    coco = [(train_name, *dataset["train"]), (val_name, *dataset["val"])]

    cfg = load_config(COCO_CONFIG, names)
    assert cfg.model.roi_heads.num_classes == 80
    setup_datasets(cfg, coco, overrides=names)
    assert cfg.model.roi_heads.num_classes == len(CLASSES)
    with torch.device("meta"):
        model = instantiate(cfg.model)
    assert model.roi_heads.box_predictor.cls_score.out_features == len(CLASSES) + 1
    assert model.roi_heads.mask_head.predictor.out_channels == len(CLASSES)  # interpolated

    explicit = [*names, "model.roi_heads.num_classes=7"]
    cfg = load_config(COCO_CONFIG, explicit)
    with pytest.raises(ConfigError, match="num_classes=7 was given"):
        setup_datasets(cfg, overrides=explicit)


def test_training_set_without_annotations_is_refused():
    dicts = [{"file_name": "a.jpg", "height": 8, "width": 8, "annotations": []}]
    with pytest.raises(ValueError, match="no instance annotations"):
        build_resumable_train_loader(dicts, mapper=dict, total_batch_size=1, seed=0)


def _random_mapper(d: dict) -> dict:
    """An "augmentation" that draws from all three global RNGs."""
    return {"index": d["index"], "draw": (np.random.rand(), torch.rand(()).item())}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_resumed_at_k_yields_the_batches_of_an_uninterrupted_run(num_workers):
    dicts = [{"index": i, "annotations": [{"iscrowd": 0}]} for i in range(5)]

    def batches(start_iter: int, count: int) -> list:
        loader = build_resumable_train_loader(
            dicts,
            mapper=_random_mapper,
            total_batch_size=4,
            grad_accum_steps=2,  # micro-batches of 2: two per iteration
            seed=3,
            aspect_ratio_grouping=False,
            num_workers=num_workers,
        )
        loader.start_at(start_iter)
        it = iter(loader)
        return [next(it) for _ in range(count)]

    uninterrupted = batches(0, 8)
    assert batches(3, 2) == uninterrupted[6:8]
    samples = [d for batch in uninterrupted for d in batch]
    assert len({d["draw"] for d in samples}) == len(samples)  # new random draws every sample
    assert sorted(d["index"] for d in samples[:5]) == list(range(5))  # epoch 1: a permutation


class _MeanSquares(torch.nn.Module):
    """A loss that is a mean over the images of the batch (so accumulation is exact)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor([1.0, -2.0]))

    def forward(self, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": torch.stack([((x * self.weight).sum() - 1) ** 2 for x in batch]).mean()}


def _one_step(batches: list, accum: int, amp_dtype=None, clip: float = 0.0) -> Trainer:
    model = _MeanSquares()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(
        model,
        batches,
        optimizer,
        seed=0,
        amp_dtype=amp_dtype,
        grad_accum_steps=accum,
        clip_grad_norm=clip,
    )
    with EventStorage() as trainer.storage:
        trainer.run_step()
    return trainer


def test_gradient_accumulation_equals_the_full_batch():
    images = [torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0])]
    full = _one_step([images], accum=1)
    accumulated = _one_step([images[:1], images[1:]], accum=2)
    torch.testing.assert_close(accumulated.model.weight, full.model.weight)


@pytest.mark.parametrize("amp_dtype", [None, torch.float16])
def test_gradient_clipping_scales_the_true_gradient_to_the_norm(amp_dtype):
    # loss (x . w - 1)^2 at w = (1, -2), x = (1, 2): gradient 2 * (-4) * x = (-8, -16)
    gradient = torch.tensor([-8.0, -16.0])
    norm = float(gradient.norm())  # 17.89
    start = torch.tensor([1.0, -2.0])
    images = [[torch.tensor([1.0, 2.0])]]
    free = _one_step(images, accum=1, amp_dtype=amp_dtype, clip=100.0)  # above the norm
    torch.testing.assert_close(free.model.weight.detach(), start - 0.1 * gradient)
    clipped = _one_step(images, accum=1, amp_dtype=amp_dtype, clip=0.5)
    expected = start - 0.1 * gradient * 0.5 / norm
    torch.testing.assert_close(clipped.model.weight.detach(), expected, rtol=1e-3, atol=1e-5)
    for trainer in (free, clipped):  # the norm before clipping, fp16's loss scale removed
        assert trainer.storage.history("grad_norm").latest() == pytest.approx(norm, rel=1e-3)
    assert "grad_norm" not in _one_step(images, accum=1).storage.histories()


def test_mixed_precision_dtypes():
    images = [[torch.tensor([1.0, 2.0])]]
    bf16 = _one_step(images, accum=1, amp_dtype=torch.bfloat16)
    assert bf16.grad_scaler is None and "grad_scaler" not in bf16.state_dict()
    fp16 = _one_step(images, accum=1, amp_dtype=torch.float16)
    assert fp16.state_dict()["grad_scaler"]["scale"] > 0
    assert torch.isfinite(fp16.model.weight).all()


def test_unknown_amp_dtype_is_a_config_error():
    cfg = load_config(SYNTHETIC_CONFIG, ["train.amp.enabled=True", "train.amp.dtype=float8"])
    with pytest.raises(ConfigError, match="train.amp.dtype='float8'"):
        build_trainer(cfg)


def test_synthetic_config_invariants():
    cfg = LazyConfig.load(SYNTHETIC_CONFIG)
    net = cfg.model.backbone.net
    crop = cfg.dataloader.train.mapper.augmentations[2]
    resize = cfg.dataloader.train.mapper.augmentations[1]
    assert tuple(crop.crop_size) == (net.img_size, net.img_size) == (256, 256)
    assert resize.target_height == resize.target_width == net.img_size
    assert cfg.dataloader.test.mapper.augmentations[0].max_size == net.img_size
    assert cfg.optimizer.params.num_layers == net.depth
    assert max(net.global_attn_indexes) < net.depth
    assert (net.img_size // net.patch_size) % net.window_size == 0  # windows tile the grid
    assert cfg.model.roi_heads.num_classes == len(CLASSES)
    channels = cfg.model.backbone.out_channels
    roi_heads = cfg.model.roi_heads
    assert cfg.model.proposal_generator.head.in_channels == channels
    assert roi_heads.box_head.input_shape.channels == channels
    assert roi_heads.mask_head.input_shape.channels == channels
    assert roi_heads.box_predictor.input_shape.channels == roi_heads.box_head.fc_dims[-1]
    model = instantiate(cfg.model)
    assert model.backbone.square_pad == net.img_size


@pytest.mark.parametrize(
    "device, flags, expected",
    [
        ("cpu", {"avx512f", "avx512_bf16"}, torch.bfloat16),  # AMD EPYC (Zen 4)
        ("cpu", {"avx512f", "amx_bf16", "amx_tile"}, torch.bfloat16),  # Sapphire Rapids
        ("cpu", {"avx512f", "avx2"}, None),  # a Xeon without native bf16: fp32, not emulated
        ("cpu", set(), None),
    ],
)
def test_auto_precision_follows_the_cpu_flags(device, flags, expected):
    choice = resolve_amp_dtype("auto", device, flags=frozenset(flags))
    assert choice.dtype == expected
    assert ("has " if expected else "none of") in choice.reason
    # an explicit dtype is taken as asked, whatever the CPU
    assert resolve_amp_dtype("bfloat16", device, flags=frozenset()).dtype == torch.bfloat16
    assert resolve_amp_dtype("float16", device, flags=frozenset()).dtype == torch.float16


def test_auto_precision_is_logged_and_used_by_the_trainer(monkeypatch, caplog):
    cfg = load_config(SYNTHETIC_CONFIG, ["train.device=cpu"])
    assert cfg.train.amp.enabled and cfg.train.amp.dtype == "auto"
    for flags, dtype in (({"avx512_bf16"}, torch.bfloat16), ({"avx2"}, None)):
        monkeypatch.setattr(device_module, "cpu_flags", lambda f=flags: frozenset(f))
        with caplog.at_level("INFO", logger="vitdet.engine.runner"):
            trainer, _ = build_trainer(cfg)
        assert trainer.amp_dtype == dtype
        assert "Precision: " + ("bfloat16" if dtype else "float32") in caplog.text
        caplog.clear()


def test_a_trained_checkpoint_predicts_alone(full_run, dataset, tmp_path):
    """The checkpoint records the config, the overrides and the training classes: the demo
    needs neither --config-file nor the dataset registration (issue: a model trained on a
    --register-coco set could not be run without re-registering both splits)."""
    checkpoint = full_run / "model_final.pth"
    record = read_provenance(checkpoint)
    assert record.classes == CLASSES and record.config_file == SYNTHETIC_CONFIG
    coco = json.loads(open(dataset["val"][0]).read())
    assert list(record.category_ids) == [c["id"] for c in coco["categories"]]

    demo = load_tool("demo")
    out = tmp_path / "demo"
    argv = ["--weights", str(checkpoint), "--input", dataset["val"][1], "--output", str(out)]
    assert demo.main([*argv, "--confidence-threshold", "0"]) == 0
    results = json.loads((out / "predictions.json").read_text())
    assert results and {r["category_id"] for r in results} <= set(record.category_ids)
    predictor = Predictor.from_config_file(None, checkpoint, device="cpu")
    assert predictor.metadata.thing_classes == list(CLASSES)
    assert predictor.model.roi_heads.num_classes == len(CLASSES)
    export = load_tool("export")
    exported = tmp_path / "model.pt"
    argv = ["--weights", str(checkpoint), "--format", "torchscript", "--output", str(exported)]
    assert export.main(argv) == 0
    assert read_metadata(exported)["class_names"] == list(CLASSES)


def test_recorded_overrides_cannot_name_callables():
    record = Provenance(SYNTHETIC_CONFIG, ("model._target_=os.system",))
    with pytest.raises(CheckpointError, match="name callables"):
        record.safe_overrides()


def test_retention_counts_checkpoints_from_before_a_resume(dataset, tmp_path):
    """max_to_keep periodic checkpoints plus model_final, across a resume; a stale .tmp of a
    killed write is removed at start."""
    register, train_name, val_name = register_args(dataset)
    keep = ["train.checkpointer.period=1", "train.checkpointer.max_to_keep=2"]
    overrides = [*tiny_overrides(tmp_path, train_name, val_name, max_iter=3), *keep]
    assert run([*register, *overrides]) == 0
    periodic = sorted(p.name for p in tmp_path.glob("model_0*.pth"))
    assert periodic == ["model_0000001.pth", "model_0000002.pth"]
    (tmp_path / "model_0000009.pth.tmp").write_bytes(b"half a checkpoint")
    longer = [*tiny_overrides(tmp_path, train_name, val_name, max_iter=5), *keep]
    assert run(["--resume", *register, *longer]) == 0
    periodic = sorted(p.name for p in tmp_path.glob("model_0*.pth"))
    assert periodic == ["model_0000003.pth", "model_0000004.pth"]
    assert (tmp_path / "model_final.pth").is_file() and not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.max_iter=abc", "'train.max_iter' is 1100 (int), not a str"),
        ("model.backbone.net.global_attn_indexes=3", "is [2, 5] (list), not a int"),
        ("model.roi_heads.no_such_argument=1", "has no key 'no_such_argument'"),  # **kwargs
        ("train.output_dir=/dev/null/out", "train.output_dir=/dev/null/out: cannot create"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(override, words, capsys):
    assert run([override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err


def test_training_skips_and_counts_an_unreadable_image(dataset, tmp_path, capsys):
    """One of the 8 training images is truncated: it is skipped, named in the log and counted
    in the metrics, and training goes on; over the stated fraction, training stops (exit 2)."""
    data = tmp_path / "data"
    shutil.copytree(Path(dataset["train"][1]), data / "train")
    broken = sorted((data / "train").iterdir())[3]
    broken.write_bytes(broken.read_bytes()[:200])  # truncated JPEG
    train = (dataset["train"][0], str(data / "train"))
    tag = uuid.uuid4().hex[:8]
    names = (f"broken_train_{tag}", f"broken_val_{tag}")
    register = ["--register-coco", names[0], *train, "--register-coco", names[1], *dataset["val"]]
    out = tmp_path / "run"
    overrides = tiny_overrides(out, *names)  # 4 iterations of 2 images: one epoch
    assert run([*register, *overrides, "dataloader.train.max_unreadable_fraction=0.2"]) == 0
    rows = [r for r in read_metrics(out) if "data/unreadable_images" in r]
    assert rows[-1]["data/unreadable_images"] == 1
    assert broken.name in (out / "log.txt").read_text()

    assert run([*register, *tiny_overrides(tmp_path / "strict", *names)]) == 2
    assert "1 of 8 training images could not be used" in capsys.readouterr().err


def test_ddp_stride_warning_is_silenced_for_size_one_dimensions_only():
    # DDP's message (torch 2.14, reducer.cpp) for the mask predictor's 1 x 1 weight, and for a
    # 3 x 3 weight whose layout really differs
    from vitdet.engine.runner import _SIZE_ONE_STRIDES_WARNING

    def message(sizes, grad_strides, view_strides):
        return (
            "Grad strides do not match bucket view strides. This may indicate grad was not "
            "created according to the gradient layout contract, or that the param's strides "
            "changed since DDP was constructed.  This is not an error, but may impair "
            f"performance.\ngrad.sizes() = {sizes}, strides() = {grad_strides}\n"
            f"bucket_view.sizes() = {sizes}, strides() = {view_strides} (Triggered internally)"
        )

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message=_SIZE_ONE_STRIDES_WARNING, category=UserWarning)
        for sizes, grad_strides, view_strides in [
            ([5, 64, 1, 1], [64, 1, 64, 64], [64, 1, 1, 1]),
            ([8, 4, 3, 3], [36, 1, 12, 4], [36, 9, 3, 1]),
        ]:
            warnings.warn(message(sizes, grad_strides, view_strides), UserWarning, stacklevel=1)
    assert len(caught) == 1 and "[8, 4, 3, 3]" in str(caught[0].message)
