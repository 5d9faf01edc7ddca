"""SAM fine-tuning: the prompted-mask evaluator, the configs/SAM training recipes (meta device,
the release's key layout, invariants) and a tiny run through tools/train_net.py (training,
evaluation writing sam/* metrics and pictures, resume)."""

import json

import pytest
import torch
from detectron2.config import instantiate
from detectron2.data import MetadataCatalog
from detectron2.structures import BitMasks, Instances

from vitdet.config import load_config
from vitdet.data.synthetic import generate
from vitdet.modeling.sam.training import TrainableSam, mask_iou
from vitdet.sam.evaluation import PromptedMaskEvaluator

from helpers import REPO, load_tool

SAM_CONFIGS = REPO / "configs" / "SAM"
KEYS = REPO / "tests" / "data" / "sam_keys"
train_net = load_tool("train_net")


def test_evaluator_miou_and_pictures(tmp_path):
    MetadataCatalog.get("sam_eval_test").set(thing_classes=["a", "b"])
    gt = torch.zeros(2, 8, 8, dtype=torch.bool)
    gt[0, :4], gt[1, 4:, :4] = True, True  # 32 and 16 px
    half = gt.clone()
    half[0, 2:4] = False  # IoU 0.5
    inst = Instances((8, 8), gt_masks=BitMasks(gt), gt_classes=torch.tensor([0, 1]))
    coords = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[1.0, 6.0], [0.0, 0.0]]])
    labels = torch.tensor([[1, -1], [1, -1]])
    box_coords = torch.tensor([[[0.0, 0.0], [8.0, 4.0]], [[0.0, 4.0], [4.0, 8.0]]])
    prompts = {
        "box_coords": box_coords,
        "box_labels": torch.tensor([[2, 3], [2, 3]]),
        "point_coords": coords,
        "point_labels": labels,
        "click_coords": coords,
        "click_labels": labels,
    }
    output = {"sam": {"box": gt, "point": half, "click1": half, "prompts": prompts}}
    record = {"image": torch.zeros(3, 8, 8, dtype=torch.uint8), "instances": inst}
    evaluator = PromptedMaskEvaluator("sam_eval_test", output_dir=str(tmp_path))
    evaluator.reset()
    evaluator.process([{**record, "file_name": "x/one.jpg"}], [output])
    evaluator.process([{**record, "file_name": "x/two.jpg"}], [output])
    results = evaluator.evaluate()["sam"]
    assert results == pytest.approx({"box_mIoU": 1.0, "point_mIoU": 0.75, "click1_mIoU": 0.75})
    assert list(results) == ["box_mIoU", "point_mIoU", "click1_mIoU"]
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["one.png", "two.png"]


@pytest.mark.parametrize("size", ["b", "l", "h"])
def test_finetune_configs_meta_and_release_keys(size):
    cfg = load_config(SAM_CONFIGS / f"sam_vit_{size}_finetune.py")
    with torch.device("meta"):
        model = instantiate(cfg.model)
    assert isinstance(model, TrainableSam) and model.freeze_image_encoder
    release = [line.split()[0] for line in (KEYS / f"sam_vit_{size}.txt").read_text().splitlines()]
    assert sorted(model.state_dict()) == sorted(release)
    assert cfg.optimizer.params.num_layers == cfg.model.image_encoder.depth
    # the test resize makes the longest side the encoder's input size
    aug = cfg.dataloader.test.mapper.augmentations[0]
    assert aug.short_edge_length == aug.max_size == cfg.model.image_encoder.img_size
    assert cfg.dataloader.train.mapper.augmentations[0].max_size == aug.max_size
    full = load_config(
        SAM_CONFIGS / f"sam_vit_{size}_finetune.py",
        ["model.freeze_image_encoder=False", "model.embedding_cache_size=0"],
    )
    with torch.device("meta"):
        model = instantiate(full.model)
    full.optimizer.params.model = model
    groups = instantiate(full.optimizer.params)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_tiny_synthetic_config_invariants():
    cfg = load_config(SAM_CONFIGS / "sam_vit_tiny_synthetic.py")
    enc, pe = cfg.model.image_encoder, cfg.model.prompt_encoder
    assert tuple(pe.input_image_size) == (enc.img_size, enc.img_size)
    assert tuple(pe.image_embedding_size) == (enc.img_size // enc.patch_size,) * 2
    assert cfg.optimizer.params.num_layers == enc.depth
    assert cfg.dataloader.test.mapper.keep_annotations


def _run(argv):
    assert train_net.cli(argv) == 0


def test_train_net_sam_tiny(tmp_path, one_thread):
    # 3 images of 256 px
    (json_file, image_dir), _ = generate(
        tmp_path / "data", num_train=3, num_val=1, image_size=256
    ).values()
    out = tmp_path / "run"
    common = [
        "--config-file",
        str(SAM_CONFIGS / "sam_vit_tiny_synthetic.py"),
        "--register-coco",
        "sam_tiny_train",
        str(json_file),
        str(image_dir),
    ]
    overrides = [
        f"train.output_dir={out}",
        "dataloader.train.dataset.names=sam_tiny_train",
        "dataloader.test.dataset.names=sam_tiny_train",
        "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0",
        "train.eval_period=2",
        "train.checkpointer.period=2",
        "train.log_period=1",
        "train.amp.enabled=False",
        "model.num_correction_points=1",
        "model.num_mask_only_iterations=1",
    ]
    _run(common + overrides + ["train.max_iter=2"])
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    evals = [r for r in rows if "sam/box_mIoU" in r]
    assert len(evals) == 1 and 0 <= evals[0]["sam/click3_mIoU"] <= 1
    assert {"sam/point_mIoU", "sam/click1_mIoU", "sam/click5_mIoU"} <= set(evals[0])
    assert "loss_mask_focal" in rows[0] and "loss_iou" in rows[0]
    assert list((out / "prompts").glob("iter_*/*.png"))
    _run(["--resume"] + common + overrides + ["train.max_iter=4"])
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert [r["iteration"] for r in rows if "sam/box_mIoU" in r] == [2, 4]  # the final evaluations
    assert (out / "model_final.pth").is_file()


def test_localization_probe_disks_and_rows(one_thread):
    probe = load_tool("benchmarks/sam_localization")
    target = probe.disks(torch.tensor([[128.0, 128.0], [0.0, 0.0]]), 128)
    area = torch.pi * probe.RADIUS**2 / 4  # in cells of 2 x 2 px
    assert target[0].sum().item() == pytest.approx(area, rel=0.03)
    assert target[1].sum().item() == pytest.approx(area / 4, rel=0.06)  # a corner: a quarter
    assert target[0, 64, 64] == 1 and target[0, 64, 64 + 16] == 0  # 30 px = 15 cells
    rows = probe.run(True, 1, 1e-3, steps=0)
    assert len(rows) == 1 and rows[0]["step"] == 0 and 0 <= rows[0]["iou"] <= 1


def test_diagnosis_columns_match_the_evaluation_prompts(one_thread):
    diagnosis = load_tool("benchmarks/sam_diagnose")
    torch.manual_seed(0)
    cfg = load_config(SAM_CONFIGS / "sam_vit_tiny_synthetic.py")
    model = instantiate(cfg.model).eval()
    records = []
    for shift in (0, 40):
        gt = torch.zeros(2, 192, 256, dtype=torch.bool)
        gt[0, 20 + shift : 120 + shift, 30:150] = True
        gt[1, 100:180, 140 + shift : 200 + shift] = True
        image = torch.randint(0, 256, (3, 192, 256), dtype=torch.uint8)
        records.append({"image": image, "instances": Instances((192, 256), gt_masks=BitMasks(gt))})
    rows = diagnosis.diagnose(model, [records], limit=None)
    with torch.no_grad():
        embeddings = model.embed([r["image"] for r in records])
        pairs = zip(records, embeddings, strict=True)
        expected = [model.predict_instances(r, e)["sam"] for r, e in pairs]
    for prompt in ("box", "point"):  # "as evaluated": the masks PromptedMaskEvaluator scores
        ious = torch.cat(
            [
                mask_iou(e[prompt], r["instances"].gt_masks.tensor)
                for e, r in zip(expected, records, strict=True)
            ]
        )
        # equal up to pixels whose logit is ~0: the diagnosis embeds the images as a batch, and
        # on some CPUs (an Intel Xeon with AMX) batched kernels differ in the last bits
        assert rows[prompt] == pytest.approx(ious.numpy(), abs=1e-3)
        assert (rows[f"{prompt}_best"] >= rows[prompt] - 1e-6).all()
    assert (rows["box_best"] >= rows["box_chosen"]).all() and rows["box"].max() > 0
    assert rows["area"].tolist() == [12000, 4800, 12000, 4800]
    assert len(diagnosis.diagnose(model, [records], limit=1)["box"]) == 2
    assert "| d | all | 4 |" in diagnosis.table({"d": rows})
    assert ((rows["box_spill"] >= 0) & (rows["box_spill"] <= 1)).all()
    assert "of the box masks spill" in diagnosis.spill_summary({"d": rows})


def test_spill_counts_pixels_on_other_objects_only():
    spill = load_tool("benchmarks/sam_diagnose").spill
    gt = torch.zeros(2, 4, 4, dtype=torch.bool)
    gt[0, :2] = True  # rows 0-1
    gt[1, 1:3] = True  # rows 1-2: row 1 is on both (an overlap counts as its own)
    pred = torch.zeros(2, 4, 4, dtype=torch.bool)
    pred[0, :3] = True  # own 8 px, 4 px of row 2 on object 1 only
    pred[1, 3] = True  # 4 px on no object: background, not spill
    assert spill(pred, gt) == pytest.approx([4 / 12, 0.0])
    assert spill(torch.zeros_like(pred), gt) == [0.0, 0.0]
