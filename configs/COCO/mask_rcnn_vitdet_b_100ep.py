# Root recipe: Mask R-CNN, ViT-B, COCO, LSJ 1024, 100 epochs, MAE init.
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from ..common.data.coco_lsj import dataloader
from ..common.models.mask_rcnn_vitdet import model
from ..common.optim import AdamW as optimizer
from ..common.train import train

train.amp.enabled = True
train.ddp.fp16_compression = True
train.init_checkpoint = "detectron2://ImageNetPretrained/MAE/mae_pretrain_vit_base.pth"

# 100 ep = 184375 it * 64 images / 118000 images per epoch
train.max_iter = 184375

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01],
        # x0.1 at 8/9 and 26/27 of the schedule (~88.9 and ~96.3 epochs):
        # 163889 = round(184375 * 8 / 9), 177546 = round(184375 * 26 / 27)
        milestones=[163889, 177546],
        num_updates="${train.max_iter}",
    ),
    warmup_length=250 / train.max_iter,
    warmup_factor=0.001,
)
