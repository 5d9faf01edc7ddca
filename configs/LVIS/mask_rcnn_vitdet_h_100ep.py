# Mask R-CNN, ViT-H, LVIS v1: the LVIS ViT-B recipe with the COCO ViT-H backbone and optimizer
# settings, drop path 0.4.
from ..COCO.mask_rcnn_vitdet_h_75ep import model as coco
from ..COCO.mask_rcnn_vitdet_h_75ep import optimizer as coco_optimizer
from ..COCO.mask_rcnn_vitdet_h_75ep import train as coco_train
from .mask_rcnn_vitdet_b_100ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone = coco.backbone
model.backbone.net.drop_path_rate = 0.4  # COCO ViT-H: 0.5
for key in ("lr_decay_rate", "num_layers", "weight_decay_norm", "no_weight_decay"):
    optimizer.params[key] = coco_optimizer.params[key]
train.init_checkpoint = coco_train.init_checkpoint
optimizer.lr = 1e-4  # 2e-4 is for B and L only
