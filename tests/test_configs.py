"""Every config loads and builds; released state-dict layouts and cross-file invariants."""

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from vitdet.modeling.roi_align import ROIPooler

from helpers import KEYS_DIR, REPO

CONFIGS = sorted(
    str(p.relative_to(REPO)) for d in ("COCO", "LVIS") for p in (REPO / "configs" / d).glob("*.py")
)
# released checkpoint -> config that must reproduce its layout, and its parameter count (M)
RELEASED = {
    "mask_rcnn_vitdet_b_100ep": ("configs/COCO/mask_rcnn_vitdet_b_100ep.py", 110.9),
    "mask_rcnn_vitdet_l_100ep": ("configs/COCO/mask_rcnn_vitdet_l_100ep.py", 330.7),
    "mask_rcnn_vitdet_h_75ep": ("configs/COCO/mask_rcnn_vitdet_h_75ep.py", 661.2),
    "cascade_mask_rcnn_vitdet_b_100ep": ("configs/COCO/cascade_mask_rcnn_vitdet_b_100ep.py", 141.2),
}


def load(path: str):
    cfg = LazyConfig.load(str(REPO / path))
    roi_heads = cfg.model.roi_heads
    predictors = roi_heads.get("box_predictors") or [roi_heads.box_predictor]
    for predictor in predictors:
        # the federated loss reads LVIS class frequencies when the model is built
        predictor.use_fed_loss = False
    return cfg


def build_on_meta(cfg) -> torch.nn.Module:
    with torch.device("meta"):
        return instantiate(cfg.model)


def read_keys(name: str) -> dict[str, tuple[int, ...]]:
    keys = {}
    for line in (KEYS_DIR / f"{name}.txt").read_text().splitlines():
        key, shape = line.split("\t")
        keys[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return keys


def test_all_configs_found():
    assert len(CONFIGS) == 12


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_state_dict_layout_matches_release(name):
    path, millions = RELEASED[name]
    model = build_on_meta(load(path))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = read_keys(name)
    assert sorted(set(ours) - set(expected)) == []
    assert sorted(set(expected) - set(ours)) == []
    assert {k: v for k, v in ours.items() if expected[k] != v} == {}
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == millions


@pytest.mark.parametrize("path", CONFIGS)
def test_config_builds_with_recipe_invariants(path):
    cfg = load(path)
    net = cfg.model.backbone.net
    model = build_on_meta(cfg)
    assert type(model).__name__ == "GeneralizedRCNN"
    # lr decay depth == ViT depth
    assert cfg.optimizer.params.num_layers == net.depth
    # LSJ size == square_pad == img_size
    lsj = cfg.dataloader.train.mapper.augmentations
    crop = [a for a in lsj if "FixedSizeCrop" in str(a._target_)][0]
    assert tuple(crop.crop_size) == (net.img_size, net.img_size)
    assert model.backbone.square_pad == net.img_size
    assert cfg.dataloader.test.mapper.augmentations[0].max_size == net.img_size
    # schedule fits inside the run, warm-up is 250 iterations
    assert max(cfg.lr_multiplier.scheduler.milestones) < cfg.train.max_iter
    assert cfg.lr_multiplier.warmup_length * cfg.train.max_iter == pytest.approx(250)
    assert cfg.dataloader.train.total_batch_size == 64
    # the ViT and the pyramid meet through the Backbone contract only
    assert model.backbone.net.output_shape()["last_feat"].stride == 16
    expected_globals = {12: (2, 5, 8, 11), 24: (5, 11, 17, 23), 32: (7, 15, 23, 31)}[net.depth]
    assert tuple(net.global_attn_indexes) == expected_globals
    if "LVIS" in path:
        assert cfg.model.roi_heads.num_classes == 1203
    # RoIAlign with the vectorised backward in every pooler
    for name in ("box_pooler", "mask_pooler"):
        assert type(getattr(model.roi_heads, name)) is ROIPooler, name


def shrink(cfg, size: int = 64):
    """The same recipe with toy numbers, to run a real step quickly."""
    net = cfg.model.backbone.net
    net.update(embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,), img_size=size)
    net.window_size = 2
    cfg.optimizer.params.num_layers = 2
    cfg.model.roi_heads.batch_size_per_image = 16
    cfg.model.proposal_generator.pre_nms_topk = (50, 50)
    cfg.model.proposal_generator.post_nms_topk = (20, 20)
    return cfg


@pytest.mark.parametrize(
    "path",
    [
        "configs/COCO/mask_rcnn_vitdet_b_100ep.py",
        "configs/COCO/cascade_mask_rcnn_vitdet_b_100ep.py",
        "configs/LVIS/mask_rcnn_vitdet_b_100ep.py",
    ],
)
def test_shrunk_model_trains_and_infers(path):
    cfg = shrink(load(path))
    model = instantiate(cfg.model)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    assert optimizer.param_groups[0]["lr"] > 0

    image = torch.randint(0, 255, (3, 64, 48), dtype=torch.uint8)
    inst = Instances((64, 48))
    inst.gt_boxes = Boxes(torch.tensor([[4.0, 6.0, 30.0, 40.0]]))
    inst.gt_classes = torch.tensor([3])
    mask = torch.zeros(1, 64, 48, dtype=torch.bool)
    mask[:, 6:40, 4:30] = True
    inst.gt_masks = BitMasks(mask)
    model.train()
    with EventStorage():
        losses = model([{"image": image, "instances": inst}])
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    optimizer.step()

    model.eval()
    with torch.no_grad():
        out = model([{"image": image, "height": 128, "width": 96}])[0]["instances"]
    assert out.image_size == (128, 96)
    if len(out):
        assert out.pred_masks.shape[-2:] == (128, 96)
