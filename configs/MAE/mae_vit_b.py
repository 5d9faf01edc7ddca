# MAE pretraining of ViT-B (He et al. 2021, the released ViT-B recipe) on a folder of unlabeled
# images: ImageNet-1k's training images for the paper's numbers, or any domain's. Point it at
# the folder with dataloader.train.dataset.root=<folder>.
#   python tools/pretrain_mae.py --config-file configs/MAE/mae_vit_b.py --num-gpus 8 \
#       dataloader.train.dataset.root=/data/imagenet/train train.grad_accum_steps=8
# model_final.pth initialises any ViT-B ViTDet config: train.init_checkpoint=<it>.
import torch
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler, get_default_optimizer_params
from fvcore.common.param_scheduler import CosineParamScheduler

from vitdet.data.unlabeled import (
    UnlabeledImages,
    build_unlabeled_train_loader,
    load_eval_images,
    train_transform,
)
from vitdet.modeling.mae import MaskedAutoencoderViT

from ..common.train import train

# Encoder == configs/common/models/mask_rcnn_vitdet.py's ViT-B (patch 16, 768 wide, 12 deep,
# 12 heads, mlp 4, LayerNorm eps 1e-6); decoder 512 wide, 8 deep.
model = L(MaskedAutoencoderViT)(
    img_size=224,  # the fine-tuning ViT's pretrain_img_size: pos_embed (1, 1 + 14 * 14, C)
    patch_size=16,
    embed_dim=768,
    depth=12,
    num_heads=12,
    decoder_embed_dim=512,
    decoder_depth=8,
    decoder_num_heads=16,
    mlp_ratio=4.0,
    mask_ratio=0.75,
    norm_pix_loss=True,
    # RGB in 0-255 units, ImageNet mean / std: the detector's input normalisation.
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
)

dataloader = dict(
    train=L(build_unlabeled_train_loader)(
        dataset=L(UnlabeledImages)(
            root="datasets/unlabeled",
            transform=L(train_transform)(image_size="${model.img_size}", scale=(0.2, 1.0)),
        ),
        total_batch_size=4096,
        seed="${train.seed}",
        grad_accum_steps="${train.grad_accum_steps}",
        num_workers=8,
        max_unreadable_fraction=0.01,  # beyond it, the folder is broken: stop with an error
    ),
    # Fixed images drawn with their reconstructions at every evaluation: the centre 7/8 of the
    # shorter side resized to 224 (as ImageNet evaluation's 256 -> 224).
    test=L(load_eval_images)(
        root="${dataloader.train.dataset.root}",
        image_size="${model.img_size}",
        num_images=8,
        crop_fraction=224 / 256,
    ),
)

# AdamW, betas (0.9, 0.95), weight decay 0.05 except norms and biases;
# lr = base lr 1.5e-4 * batch / 256 = 1.5e-4 * 4096 / 256.
optimizer = L(torch.optim.AdamW)(
    params=L(get_default_optimizer_params)(weight_decay_norm=0.0, weight_decay_bias=0.0),
    lr=1.5e-4 * 4096 / 256,
    betas=(0.9, 0.95),
    weight_decay=0.05,
)

# 800 epochs of ImageNet-1k = 1,281,167 images * 800 / 4096 = 250,228 iterations;
# linear warm-up for 40 of them, then a half cosine to 0 over the rest.
train.max_iter = 250228
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.0),
    warmup_length=40 / 800,
    warmup_factor=0.001,
    rescale_interval=True,
)
train.checkpointer.period = 5000
train.eval_period = 5000
train.output_dir = "./output/mae_vit_b"
