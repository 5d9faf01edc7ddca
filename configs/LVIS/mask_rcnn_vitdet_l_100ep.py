# Mask R-CNN, ViT-L, LVIS v1: the LVIS ViT-B recipe with the COCO ViT-L backbone.
from ..COCO.mask_rcnn_vitdet_l_100ep import model as coco
from ..COCO.mask_rcnn_vitdet_l_100ep import optimizer as coco_optimizer
from ..COCO.mask_rcnn_vitdet_l_100ep import train as coco_train
from .mask_rcnn_vitdet_b_100ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone = coco.backbone
optimizer.params.lr_decay_rate = coco_optimizer.params.lr_decay_rate
optimizer.params.num_layers = coco_optimizer.params.num_layers
train.init_checkpoint = coco_train.init_checkpoint
