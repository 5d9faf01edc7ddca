"""Layer-wise lr decay and weight-decay exclusions on the real parameter names."""

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling.backbone.vit import get_vit_lr_decay_rate

from vitdet.solver import vit_layer_id, vit_lr_decay_rate

from helpers import KEYS_DIR, REPO

NAMES = [
    line.split("\t")[0]
    for line in (KEYS_DIR / "mask_rcnn_vitdet_b_100ep.txt").read_text().splitlines()
]


def test_layer_ids_of_released_names():
    ids = {name: vit_layer_id(name, 12) for name in NAMES}
    assert ids["backbone.net.pos_embed"] == 0
    assert ids["backbone.net.patch_embed.proj.weight"] == 0
    assert ids["backbone.net.blocks.0.attn.qkv.weight"] == 1
    assert ids["backbone.net.blocks.11.mlp.fc2.bias"] == 12
    assert ids["backbone.simfp_2.0.weight"] == 13
    assert ids["roi_heads.box_predictor.cls_score.weight"] == 13
    assert set(ids.values()) == set(range(14))
    # every block index in the names maps to its own layer
    for name, layer in ids.items():
        if ".blocks." in name:
            assert layer == int(name.split(".")[3]) + 1


def test_decay_rate_values():
    assert vit_lr_decay_rate("backbone.net.pos_embed", lr_decay_rate=0.7, num_layers=12) == (
        pytest.approx(0.7**13)
    )
    assert vit_lr_decay_rate("backbone.net.blocks.11.norm1.weight", lr_decay_rate=0.7) == (
        pytest.approx(0.7)
    )
    assert vit_lr_decay_rate("roi_heads.mask_head.predictor.weight", lr_decay_rate=0.7) == 1.0


def tiny_recipe_groups(path: str = "configs/COCO/mask_rcnn_vitdet_b_100ep.py", **params):
    """(lr, weight decay) by parameter name of a real 3-block model under a recipe's optimizer,
    with ``params`` set on ``optimizer.params``."""
    cfg = LazyConfig.load(str(REPO / path))
    net = cfg.model.backbone.net
    net.update(embed_dim=32, depth=3, num_heads=2, global_attn_indexes=(2,))
    cfg.optimizer.params.update(num_layers=3, **params)
    model = instantiate(cfg.model)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    assert isinstance(optimizer, torch.optim.AdamW)
    by_param = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert p not in by_param
            by_param[p] = group
    names = dict(model.named_parameters())
    assert set(by_param) == set(names.values())  # every parameter is optimised exactly once
    return {name: (by_param[p]["lr"], by_param[p]["weight_decay"]) for name, p in names.items()}


def test_param_groups_of_recipe():
    hp = tiny_recipe_groups()
    base, wd, decay = 1e-4, 0.1, 0.7
    assert hp["backbone.net.pos_embed"] == (pytest.approx(base * decay**4), 0.0)
    assert hp["backbone.net.patch_embed.proj.weight"] == (pytest.approx(base * decay**4), wd)
    assert hp["backbone.net.blocks.2.norm1.weight"] == (pytest.approx(base * decay), 0.0)
    assert hp["backbone.net.blocks.2.mlp.fc1.weight"] == (pytest.approx(base * decay), wd)
    # as upstream: rel-pos tables and detectron2's channel-first LayerNorm (pyramid, heads;
    # not a torch norm class) are decayed
    assert hp["backbone.net.blocks.0.attn.rel_pos_h"] == (pytest.approx(base * decay**3), wd)
    assert hp["backbone.simfp_2.1.weight"] == (pytest.approx(base), wd)
    assert hp["backbone.simfp_2.4.norm.weight"] == (pytest.approx(base), wd)
    assert hp["roi_heads.box_head.conv1.norm.bias"] == (pytest.approx(base), wd)
    assert hp["roi_heads.box_head.fc1.weight"] == (pytest.approx(base), wd)


def test_param_groups_of_vit_h_recipe_decay_everything():
    hp = tiny_recipe_groups("configs/COCO/mask_rcnn_vitdet_h_75ep.py")
    assert {decay for _, decay in hp.values()} == {0.1}
    assert hp["backbone.net.pos_embed"][0] == pytest.approx(1e-4 * 0.9**4)


def test_opt_in_exclusions():
    """The pre-upstream behaviour stays reachable: no decay on every norm (channel LayerNorm
    included), pos_embed and the rel-pos tables."""
    hp = tiny_recipe_groups(
        no_weight_decay=("pos_embed", "rel_pos_h", "rel_pos_w"), channel_norm_is_norm=True
    )
    for name in (
        "backbone.net.pos_embed",
        "backbone.net.blocks.0.attn.rel_pos_h",
        "backbone.net.blocks.2.attn.rel_pos_w",
        "backbone.net.blocks.2.norm1.weight",
        "backbone.simfp_2.1.weight",
        "roi_heads.box_head.conv1.norm.bias",
    ):
        assert hp[name][1] == 0.0, name
    assert hp["roi_heads.box_head.fc1.weight"][1] == 0.1


def test_lr_decay_rate_is_detectron2s():
    names = NAMES + [
        "backbone.net.blocks.3.residual.conv1.weight",  # optional conv block: head's rate
        "net.blocks.3.attn.qkv.weight",  # outside `backbone`: head's rate
        "pos_embed",
    ]
    for name in names:
        for rate, layers in ((0.7, 12), (0.9, 32)):
            assert vit_lr_decay_rate(name, lr_decay_rate=rate, num_layers=layers) == (
                get_vit_lr_decay_rate(name, lr_decay_rate=rate, num_layers=layers)
            ), name
