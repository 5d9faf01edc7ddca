# configs/Synthetic/mask_rcnn_vitdet_tiny_mae_ft.py with the conv stem of
# configs/MAE/mae_vit_tiny_synthetic_convstem.py, initialised from that pretraining.
from ..MAE.mae_vit_tiny_synthetic_convstem import model as _mae
from .mask_rcnn_vitdet_tiny_mae_ft import dataloader, lr_multiplier, model, optimizer, train

model.backbone.net.patch_embed_layer = _mae.patch_embed_layer
train.init_checkpoint = "./output/mae_vit_tiny_synthetic_convstem/model_final.pth"
