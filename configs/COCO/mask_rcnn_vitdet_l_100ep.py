# Mask R-CNN, ViT-L: only the backbone size, drop path, lr decay and init differ from ViT-B.
from .mask_rcnn_vitdet_b_100ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.net.embed_dim = 1024
model.backbone.net.depth = 24
model.backbone.net.num_heads = 16
model.backbone.net.drop_path_rate = 0.4
model.backbone.net.global_attn_indexes = (5, 11, 17, 23)
optimizer.params.lr_decay_rate = 0.8
optimizer.params.num_layers = 24
train.init_checkpoint = "detectron2://ImageNetPretrained/MAE/mae_pretrain_vit_large.pth"
