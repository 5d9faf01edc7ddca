# Mask R-CNN with a ViT-B backbone and the simple feature pyramid (ViTDet), COCO heads.
# detectron2's FPN Mask R-CNN supplies the heads; only what differs is set here.
from functools import partial

import torch.nn as nn
from detectron2 import model_zoo
from detectron2.config import LazyCall as L

from vitdet.modeling import LastLevelMaxPool, SimpleFeaturePyramid, ViT
from vitdet.modeling.channel_norm import ChannelLayerNorm
from vitdet.modeling.roi_align import ROIPooler

model = model_zoo.get_config("common/models/mask_rcnn_fpn.py").model

# RGB input, ImageNet mean / std in 0-255 units.
model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]
model.input_format = "RGB"

model.backbone = L(SimpleFeaturePyramid)(
    net=L(ViT)(
        img_size=1024,
        patch_size=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        drop_path_rate=0.1,
        window_size=14,
        mlp_ratio=4,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        global_attn_indexes=(2, 5, 8, 11),
        use_rel_pos=True,
        out_feature="last_feat",
    ),
    in_feature="${.net.out_feature}",
    out_channels=256,
    scale_factors=(4.0, 2.0, 1.0, 0.5),
    top_block=L(LastLevelMaxPool)(),
    square_pad="${.net.img_size}",
)

# LN in the box and mask heads (detectron2's "LN" as one fused call: channel_norm.py), 2 convs
# in the RPN head, 4conv1fc box head.
model.roi_heads.box_head.conv_norm = ChannelLayerNorm
model.roi_heads.mask_head.conv_norm = ChannelLayerNorm
model.proposal_generator.head.conv_dims = [-1, -1]
model.roi_heads.box_head.conv_dims = [256, 256, 256, 256]
model.roi_heads.box_head.fc_dims = [1024]
# detectron2's poolers with RoIAlign as band matmuls on the CPU (roi_align.py); same arguments,
# same results to float rounding
model.roi_heads.box_pooler._target_ = ROIPooler
model.roi_heads.mask_pooler._target_ = ROIPooler
