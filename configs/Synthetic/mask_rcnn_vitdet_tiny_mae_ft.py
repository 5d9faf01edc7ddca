# The Synthetic ViTDet fine-tuned from an MAE-pretrained backbone: the recipe for a pretrained
# ViT (ViTDet's: layer-wise lr decay, a lower lr, more drop path) on top of the from-scratch
# config, whose data, model and schedule it keeps.
#   python tools/pretrain_mae.py --config-file configs/MAE/mae_vit_tiny_synthetic_unlabeled.py
#   python tools/train_net.py --config-file configs/Synthetic/mask_rcnn_vitdet_tiny_mae_ft.py
# tools/benchmarks/mae.py compares it with the from-scratch recipe (both swept over the lr) on
# 10% and 100% of the labeled images; its table is in docs/MAE.md.
from .mask_rcnn_vitdet_tiny import dataloader, lr_multiplier, model, optimizer, train

# model_final.pth of configs/MAE/mae_vit_tiny_synthetic_unlabeled.py (its train.output_dir); the
# decoder is dropped and the 8 x 8 position table resized to 16 x 16 on loading.
train.init_checkpoint = "./output/mae_vit_tiny_synthetic_unlabeled/model_final.pth"

# Block i of 6 learns at lr * 0.75^(6 - i) (patch embed 0.75^7 = 0.13x, the last block 0.75x),
# the pyramid and heads (random) at lr: keep what pretraining learned in the lower blocks.
optimizer.params.lr_decay_rate = 0.75
optimizer.lr = 5e-4  # half the from-scratch lr; 1e-3 is the sweep's other value
model.backbone.net.drop_path_rate = 0.1  # ViTDet-B's; the from-scratch config has 0.05
