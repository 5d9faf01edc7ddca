# AdamW of the ViTDet recipe with layer-wise lr decay; norms, pos_embed and rel-pos tables
# without weight decay. `params.model` is set by the trainer.
import torch
from detectron2.config import LazyCall as L

from vitdet.solver import vitdet_param_groups

AdamW = L(torch.optim.AdamW)(
    params=L(vitdet_param_groups)(
        base_lr="${..lr}",
        weight_decay="${..weight_decay}",
        lr_decay_rate=0.7,
        num_layers=12,  # == model.backbone.net.depth (tested)
    ),
    lr=1e-4,
    betas=(0.9, 0.999),
    weight_decay=0.1,
)
