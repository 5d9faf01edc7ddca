"""The COCO / LVIS recipes give every parameter upstream ViTDet's lr and weight decay.

Reference: detectron2's projects/ViTDet configs, written down below, applied with detectron2's
own `get_default_optimizer_params` and `get_vit_lr_decay_rate` to detectron2's own ViT and
simple feature pyramid (`model_zoo` common/models/mask_rcnn_vitdet.py) under our heads. Ours:
the optimizer of each of our config files on our model. Both are built on the meta device.
"""

import copy
from dataclasses import dataclass, field
from functools import partial

import pytest
import torch
from detectron2 import model_zoo
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling.backbone.vit import get_vit_lr_decay_rate
from detectron2.solver.build import get_default_optimizer_params

from helpers import REPO


@dataclass(frozen=True)
class Upstream:
    """One upstream recipe: backbone size and the `optimizer` / `optimizer.params` fields."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    drop_path_rate: float
    lr: float
    lr_decay_rate: float
    # common/optim.py AdamW: weight_decay_norm=0.0; ViT-H configs: None
    weight_decay_norm: float | None = 0.0
    # COCO mask_rcnn_vitdet_b_100ep.py: {"pos_embed": {"weight_decay": 0.0}}; ViT-H: {}
    overrides: dict = field(default_factory=lambda: {"pos_embed": {"weight_decay": 0.0}})
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)


# projects/ViTDet/configs/COCO/mask_rcnn_vitdet_{b,l}_100ep.py, ..._h_75ep.py
COCO_B = Upstream(768, 12, 12, (2, 5, 8, 11), 0.1, lr=1e-4, lr_decay_rate=0.7)
COCO_L = Upstream(1024, 24, 16, (5, 11, 17, 23), 0.4, lr=1e-4, lr_decay_rate=0.8)
COCO_H = Upstream(
    1280, 32, 16, (7, 15, 23, 31), 0.5, lr=1e-4, lr_decay_rate=0.9,
    weight_decay_norm=None, overrides={},
)  # fmt: skip
# projects/ViTDet/configs/LVIS/mask_rcnn_vitdet_{b,l,h}_100ep.py: lr 2e-4 (B, L), H drop path 0.4
LVIS_B = Upstream(768, 12, 12, (2, 5, 8, 11), 0.1, lr=2e-4, lr_decay_rate=0.7)
LVIS_L = Upstream(1024, 24, 16, (5, 11, 17, 23), 0.4, lr=2e-4, lr_decay_rate=0.8)
LVIS_H = Upstream(
    1280, 32, 16, (7, 15, 23, 31), 0.4, lr=1e-4, lr_decay_rate=0.9,
    weight_decay_norm=None, overrides={},
)  # fmt: skip

# The cascade configs take the optimizer and backbone of their Mask R-CNN recipe, as upstream.
UPSTREAM = {
    "COCO/mask_rcnn_vitdet_b_100ep": COCO_B,
    "COCO/cascade_mask_rcnn_vitdet_b_100ep": COCO_B,
    "COCO/mask_rcnn_vitdet_l_100ep": COCO_L,
    "COCO/cascade_mask_rcnn_vitdet_l_100ep": COCO_L,
    "COCO/mask_rcnn_vitdet_h_75ep": COCO_H,
    "COCO/cascade_mask_rcnn_vitdet_h_75ep": COCO_H,
    "LVIS/mask_rcnn_vitdet_b_100ep": LVIS_B,
    "LVIS/cascade_mask_rcnn_vitdet_b_100ep": LVIS_B,
    "LVIS/mask_rcnn_vitdet_l_100ep": LVIS_L,
    "LVIS/cascade_mask_rcnn_vitdet_l_100ep": LVIS_L,
    "LVIS/mask_rcnn_vitdet_h_100ep": LVIS_H,
    "LVIS/cascade_mask_rcnn_vitdet_h_100ep": LVIS_H,
}


def load(name: str):
    cfg = LazyConfig.load(str(REPO / "configs" / f"{name}.py"))
    roi_heads = cfg.model.roi_heads
    for predictor in roi_heads.get("box_predictors") or [roi_heads.box_predictor]:
        predictor.use_fed_loss = False  # reads LVIS class frequencies when built
    return cfg


def upstream_backbone(up: Upstream):
    """detectron2's own ViT + simple feature pyramid config, sized as upstream's recipe, but
    with the ViT built now, on the CPU, 4 channels per head: its ViT cannot be built on the
    meta device (`.item()` of the drop-path rates), and the width changes neither a parameter
    name nor a module type, which are all that lr and weight decay depend on."""
    backbone = model_zoo.get_config("common/models/mask_rcnn_vitdet.py").model.backbone
    backbone.net.update(
        embed_dim=4 * up.num_heads,
        depth=up.depth,
        num_heads=up.num_heads,
        drop_path_rate=up.drop_path_rate,
        window_block_indexes=[i for i in range(up.depth) if i not in up.global_attn_indexes],
    )
    backbone.in_feature = backbone.net.out_feature
    backbone.net = instantiate(backbone.net)
    return backbone


def by_name(model: torch.nn.Module, groups: list[dict]) -> dict[str, tuple[float, float]]:
    """parameter name -> (lr, weight decay); every parameter exactly once."""
    of_param = {}
    for group in groups:
        for p in group["params"]:
            assert p not in of_param
            of_param[p] = (group["lr"], group["weight_decay"])
    names = dict(model.named_parameters())
    assert set(of_param) == set(names.values())
    return {name: of_param[p] for name, p in names.items()}


def test_all_recipes_listed():
    found = {
        str(p.relative_to(REPO / "configs"))[: -len(".py")]
        for d in ("COCO", "LVIS")
        for p in (REPO / "configs" / d).glob("*.py")
    }
    assert found == set(UPSTREAM)


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_lr_and_weight_decay_of_every_parameter_are_upstreams(name):
    up = UPSTREAM[name]
    cfg = load(name)
    net = cfg.model.backbone.net
    assert (net.embed_dim, net.depth, net.num_heads) == (up.embed_dim, up.depth, up.num_heads)
    assert tuple(net.global_attn_indexes) == up.global_attn_indexes
    assert net.drop_path_rate == up.drop_path_rate
    assert cfg.optimizer.lr == up.lr
    assert cfg.optimizer.weight_decay == up.weight_decay
    assert tuple(cfg.optimizer.betas) == up.betas

    cfg_reference = copy.deepcopy(cfg)
    cfg_reference.model.backbone = upstream_backbone(up)
    with torch.device("meta"):
        ours = instantiate(cfg.model)
        reference = instantiate(cfg_reference.model)
    cfg.optimizer.params.model = ours
    optimizer = instantiate(cfg.optimizer)
    assert isinstance(optimizer, torch.optim.AdamW)
    got = by_name(ours, optimizer.param_groups)
    expected = by_name(
        reference,
        get_default_optimizer_params(
            reference,
            base_lr=up.lr,
            weight_decay=up.weight_decay,
            weight_decay_norm=up.weight_decay_norm,
            lr_factor_func=partial(
                get_vit_lr_decay_rate, lr_decay_rate=up.lr_decay_rate, num_layers=up.depth
            ),
            overrides=up.overrides,
        ),
    )
    assert set(got) == set(expected)  # the released layout: same parameter names
    wrong = {
        k: (got[k], expected[k])
        for k in expected
        if got[k][0] != pytest.approx(expected[k][0], rel=1e-12) or got[k][1] != expected[k][1]
    }
    assert wrong == {}
