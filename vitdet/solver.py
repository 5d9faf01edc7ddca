"""Optimizer pieces of the ViTDet recipe: layer-wise lr decay and weight-decay exclusions."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn
from detectron2.layers.batch_norm import LayerNorm as ChannelLayerNorm
from detectron2.solver.build import reduce_param_groups

__all__ = [
    "NORM_TYPES",
    "vit_layer_id",
    "vit_lr_decay_rate",
    "vitdet_param_groups",
]


def vit_layer_id(name: str, num_layers: int) -> int:
    """Layer id of a parameter for lr decay, as detectron2's `get_vit_lr_decay_rate` assigns
    it to full model names: 0 for the embeddings, i + 1 for ``blocks.i`` (but not its optional
    ``residual`` conv block), ``num_layers + 1`` for everything else (pyramid, heads, SAM's
    neck, and any name outside ``backbone`` / SAM's ``image_encoder``)."""
    if name.startswith(("backbone", "image_encoder")):  # a detector's ViT or SAM's encoder
        if ".pos_embed" in name or ".patch_embed" in name:
            return 0
        if ".blocks." in name and ".residual." not in name:
            return int(name.split(".blocks.")[1].split(".")[0]) + 1
    return num_layers + 1


def vit_lr_decay_rate(name: str, *, lr_decay_rate: float = 1.0, num_layers: int = 12) -> float:
    """lr multiplier of parameter ``name``: ``lr_decay_rate ** (num_layers + 1 - layer_id)``.

    Names are full model names (``backbone.net.blocks.3.attn.qkv.weight``).
    """
    return lr_decay_rate ** (num_layers + 1 - vit_layer_id(name, num_layers))


# The norm layers whose parameters take ``weight_decay_norm``: exactly the torch classes of
# detectron2's `get_default_optimizer_params`, which the released models were trained with.
# detectron2's channel-first LayerNorm (pyramid, heads) is not among them.
NORM_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def vitdet_param_groups(
    model: nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    lr_decay_rate: float = 1.0,
    num_layers: int = 12,
    weight_decay_norm: float | None = None,
    no_weight_decay: Sequence[str] = (),
    channel_norm_is_norm: bool = False,
) -> list[dict]:
    """AdamW parameter groups: detectron2's `get_default_optimizer_params` with the ViT
    layer-wise lr decay, in the form the recipes set it.

    Args:
        lr_decay_rate, num_layers: lr of a parameter is ``base_lr * vit_lr_decay_rate(name)``.
        weight_decay_norm: weight decay of parameters of ``NORM_TYPES`` modules; None: the
            default ``weight_decay`` (upstream ViT-H).
        no_weight_decay: parameter names (last component, e.g. ``"pos_embed"``) trained
            without weight decay (upstream's ``overrides={name: {"weight_decay": 0.0}}``).
        channel_norm_is_norm: opt-in, not upstream: detectron2's channel-first LayerNorm of
            the pyramid and heads also takes ``weight_decay_norm``.
    """
    norm_types = NORM_TYPES + (ChannelLayerNorm,) if channel_norm_is_norm else NORM_TYPES
    groups = []
    seen = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or param in seen:
                continue
            seen.add(param)
            name = f"{module_name}.{param_name}"
            decay = weight_decay
            if isinstance(module, norm_types) and weight_decay_norm is not None:
                decay = weight_decay_norm
            if param_name in no_weight_decay:
                decay = 0.0
            factor = vit_lr_decay_rate(name, lr_decay_rate=lr_decay_rate, num_layers=num_layers)
            groups.append({"params": [param], "lr": base_lr * factor, "weight_decay": decay})
    return reduce_param_groups(groups)
