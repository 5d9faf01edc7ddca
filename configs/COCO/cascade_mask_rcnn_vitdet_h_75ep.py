# Cascade Mask R-CNN: the Mask R-CNN recipe of the same backbone with cascade box heads.
from ..common.models.cascade_roi_heads import cascade_roi_heads
from .mask_rcnn_vitdet_h_75ep import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads = cascade_roi_heads
