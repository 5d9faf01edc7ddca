# Mask R-CNN ViTDet-B on COCO initialised from SAM's ViT-B image encoder instead of MAE: the same
# network (patch 16, 14x14 windows, global blocks 2, 5, 8, 11, relative positions), so the
# encoder's trunk loads into backbone.net (checkpoint format "sam"); SAM's neck, prompt encoder
# and mask decoder are dropped, the pyramid and the detector heads start fresh. SAM's absolute
# positions are a 64x64 grid (1024 / 16) without a cls slot: the ViT keeps that layout here so
# they load as they are, not resampled to a 14x14 pretraining grid and back.
from ..COCO.mask_rcnn_vitdet_b_100ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.net.pretrain_img_size = 1024
model.backbone.net.pretrain_use_cls_token = False
# https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth
train.init_checkpoint = "sam_vit_b_01ec64.pth"
