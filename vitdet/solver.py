"""Optimizer pieces of the ViTDet recipe: layer-wise lr decay and weight-decay exclusions."""

from __future__ import annotations

import torch.nn as nn
from detectron2.layers.batch_norm import LayerNorm as ChannelLayerNorm
from detectron2.solver.build import reduce_param_groups

__all__ = [
    "NO_WEIGHT_DECAY",
    "NORM_TYPES",
    "vit_layer_id",
    "vit_lr_decay_rate",
    "vitdet_param_groups",
]

# Parameter names (last component) trained without weight decay, besides all norm layers.
NO_WEIGHT_DECAY = ("pos_embed", "rel_pos_h", "rel_pos_w")


def vit_layer_id(name: str, num_layers: int) -> int:
    """Layer id of a parameter for lr decay: 0 for the embeddings, i + 1 for ``blocks.i``,
    ``num_layers + 1`` for everything after the ViT (pyramid, heads)."""
    if ".pos_embed" in name or ".patch_embed" in name:
        return 0
    if ".blocks." in name:
        return int(name.split(".blocks.")[1].split(".")[0]) + 1
    return num_layers + 1


def vit_lr_decay_rate(name: str, *, lr_decay_rate: float = 1.0, num_layers: int = 12) -> float:
    """lr multiplier of parameter ``name``: ``lr_decay_rate ** (num_layers + 1 - layer_id)``.

    Names are full model names (``backbone.net.blocks.3.attn.qkv.weight``).
    """
    return lr_decay_rate ** (num_layers + 1 - vit_layer_id(name, num_layers))


# Norm layers, whose parameters get no weight decay. detectron2's channel-first LayerNorm
# (pyramid, heads) is included; detectron2's own helper misses it.
NORM_TYPES = (nn.LayerNorm, ChannelLayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


def vitdet_param_groups(
    model: nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    lr_decay_rate: float = 1.0,
    num_layers: int = 12,
) -> list[dict]:
    """AdamW parameter groups of the recipe: lr scaled per ViT layer; norm layers and
    ``NO_WEIGHT_DECAY`` parameters without weight decay."""
    groups = []
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            name = f"{module_name}.{param_name}"
            no_decay = isinstance(module, NORM_TYPES) or param_name in NO_WEIGHT_DECAY
            factor = vit_lr_decay_rate(name, lr_decay_rate=lr_decay_rate, num_layers=num_layers)
            groups.append(
                {
                    "params": [param],
                    "lr": base_lr * factor,
                    "weight_decay": 0.0 if no_decay else weight_decay,
                }
            )
    return reduce_param_groups(groups)
