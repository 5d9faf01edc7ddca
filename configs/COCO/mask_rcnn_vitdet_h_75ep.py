# Mask R-CNN, ViT-H, 75 epochs.
from .mask_rcnn_vitdet_b_100ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.net.embed_dim = 1280
model.backbone.net.depth = 32
model.backbone.net.num_heads = 16
model.backbone.net.drop_path_rate = 0.5
model.backbone.net.global_attn_indexes = (7, 15, 23, 31)
optimizer.params.lr_decay_rate = 0.9
optimizer.params.num_layers = 32
# Upstream ViT-H decays every parameter: norms and pos_embed too.
optimizer.params.weight_decay_norm = None
optimizer.params.no_weight_decay = ()
# MAE ViT-H uses patch 14; its patch embedding is resampled to 16 (the paper's p14to16).
train.init_checkpoint = "detectron2://ImageNetPretrained/MAE/mae_pretrain_vit_huge_p14to16.pth"

# 75 ep = 100 ep * 3 / 4: 138281 it; milestones 163889 * 3 // 4, 177546 * 3 // 4
train.max_iter = 184375 * 3 // 4
lr_multiplier.scheduler.milestones = [163889 * 3 // 4, 177546 * 3 // 4]
lr_multiplier.warmup_length = 250 / train.max_iter
