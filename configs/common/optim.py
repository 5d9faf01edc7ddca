# AdamW of the ViTDet recipe (ViT-B / L): layer-wise lr decay; detectron2's common AdamW
# (weight_decay_norm=0.0 on torch norm layers) plus upstream's pos_embed exclusion
# (`overrides={"pos_embed": {"weight_decay": 0.0}}`). Rel-pos tables and the pyramid's and
# heads' channel LayerNorms are decayed, as upstream does. `params.model` is set by the trainer.
import torch
from detectron2.config import LazyCall as L

from vitdet.solver import vitdet_param_groups

AdamW = L(torch.optim.AdamW)(
    params=L(vitdet_param_groups)(
        base_lr="${..lr}",
        weight_decay="${..weight_decay}",
        lr_decay_rate=0.7,
        num_layers=12,  # == model.backbone.net.depth (tested)
        weight_decay_norm=0.0,
        no_weight_decay=("pos_embed",),
    ),
    lr=1e-4,
    betas=(0.9, 0.999),
    weight_decay=0.1,
)
