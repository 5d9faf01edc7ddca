# Segment Anything with a ViT-B image encoder (Kirillov et al. 2023; the release's
# sam_vit_b_01ec64.pth loads strictly: vitdet.sam.build_sam("vit_b", checkpoint=...)).
# The encoder is ViTDet's ViT-B (configs/common/models/mask_rcnn_vitdet.py): patch 16,
# 14x14 windows, global blocks 2, 5, 8, 11, decomposed relative positions; SAM's neck maps it to
# a 256-channel embedding read by the prompt encoder and the two-way-transformer mask decoder.
from functools import partial

import torch.nn as nn
from detectron2.config import LazyCall as L

from vitdet.modeling.sam import (
    MaskDecoder,
    PromptEncoder,
    Sam,
    SamImageEncoder,
    TwoWayTransformer,
)

model = L(Sam)(
    image_encoder=L(SamImageEncoder)(
        img_size=1024,
        patch_size=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        mlp_ratio=4.0,
        out_chans=256,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=14,
        global_attn_indexes=(2, 5, 8, 11),
    ),
    prompt_encoder=L(PromptEncoder)(
        embed_dim="${..image_encoder.out_chans}",
        image_embedding_size=(64, 64),  # 1024 / 16: the encoder's token grid
        input_image_size=(1024, 1024),  # == image_encoder.img_size (tested)
        mask_in_chans=16,
    ),
    mask_decoder=L(MaskDecoder)(
        transformer_dim="${..image_encoder.out_chans}",
        transformer=L(TwoWayTransformer)(
            depth=2,
            embedding_dim="${..transformer_dim}",
            num_heads=8,
            mlp_dim=2048,
        ),
        num_multimask_outputs=3,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    ),
    # RGB in 0-255 units, ImageNet mean / std (as the ViTDet detectors).
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
)
