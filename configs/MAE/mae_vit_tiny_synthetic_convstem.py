# The conv-stem variant of configs/MAE/mae_vit_tiny_synthetic_unlabeled.py: the patchify conv
# replaced by vitdet.modeling.ConvStem (3x3 stride-2 convs 24-48-96-192 with a channel LayerNorm
# + ReLU, then a 1x1 conv), for configs/Synthetic/mask_rcnn_vitdet_tiny_convstem_mae_ft.py.
from functools import partial

from detectron2.layers.batch_norm import LayerNorm

from vitdet.modeling import ConvStem

from .mae_vit_tiny_synthetic_unlabeled import dataloader, lr_multiplier, model, optimizer, train

model.patch_embed_layer = partial(ConvStem, norm_layer=LayerNorm)
train.output_dir = "./output/mae_vit_tiny_synthetic_convstem"
