# A small ViTDet trained from scratch on the synthetic shapes set (synthetic_train /
# synthetic_val, generated under $DETECTRON2_DATASETS/synthetic when absent) on 2 CPU cores.
# Same model and recipe code as configs/COCO, smaller numbers; each change says why.
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import CosineParamScheduler

from vitdet.data.synthetic import CLASSES
from vitdet.modeling.roi_heads import MaskSampledROIHeads

from ..common.data.coco_lsj import dataloader
from ..common.models.mask_rcnn_vitdet import model
from ..common.optim import AdamW as optimizer
from ..common.train import train

image_size = 256  # the synthetic images are 256 x 256; == LSJ crop == square_pad == img_size
pyramid_channels = 64  # every pyramid level, the RPN head and the RoI heads' input

# ViT: 256 px / patch 16 = 16 x 16 tokens; window 8 = 2 x 2 windows, 2 global blocks.
net = model.backbone.net
net.img_size = image_size
net.embed_dim = 192
net.depth = 6
net.num_heads = 3  # head dim 64, as in ViT-B
net.window_size = 8
net.global_attn_indexes = (2, 5)
# No drop path (0.05 before): 1100 iterations from scratch are too short to need it. Single
# runs of 800 iterations, one thread each, Intel Xeon with AMX: box / mask AP 49.1 / 44.6
# against 48.0 / 44.7.
net.drop_path_rate = 0.0
net.pretrain_img_size = image_size  # no pretraining: learn the position table at 16 x 16
model.backbone.out_channels = pyramid_channels

# Objects are 17-126 px wide at 256 px (areas 300-16000 px^2): anchors a quarter of the
# 1024 px ones, so each level keeps its anchor/stride ratio of 8.
model.proposal_generator.anchor_generator.sizes = [[16], [32], [64], [128], [256]]
model.proposal_generator.head.in_channels = pyramid_channels
# One 3x3 conv in the RPN head (detectron2's FPN default; the ViTDet recipe has two): the RPN's
# losses are the smallest of the step's here, and each conv at p2 (64 x 64) costs as much as
# the pyramid's own. Proposals: 1/16 of the pixels of a 1024 px image and at most 6 objects per
# image; 500 per level kept before the training NMS.
model.proposal_generator.head.conv_dims = [-1]
model.proposal_generator.pre_nms_topk = (500, 1000)
model.proposal_generator.post_nms_topk = (500, 500)

# RoI heads sized for the CPU: 2fc box head (no convs), 128 RoIs per image, 2-conv mask head,
# all at pyramid_channels. Where a training step goes (tools/benchmarks/synthetic.py steps: CPU
# seconds of one thread, 8 images, median of 3 steps, initial weights; Intel Xeon with AMX,
# 2026-12-07), this config vs the same backbone with the released heads (256-channel pyramid,
# 2-conv RPN head, 4conv1fc box head, 512 RoIs/image, 4-conv mask head on every foreground RoI):
#                    bf16: this config   released heads    fp32: this config   released heads
#   backbone (ViT + pyramid)  0.09            0.15                  0.16             0.42
#   RPN                       0.06            0.14                  0.07             0.62
#   RoI heads                 0.06            5.31                  0.08             8.49
#   forward                   0.22            5.61                  0.32             9.53
#   step                      0.54           14.81                  0.90            28.06
# The released box head alone is 4 * (49 * 256 * 256 * 9) + 12544 * 1024 = 128 MMAC per RoI,
# x 512 RoIs x 8 images = 526 GMAC forward; here 3136 * 256 + 256 * 256 = 0.87 MMAC per RoI,
# x 128 x 8 = 0.9 GMAC. The 64-channel pyramid makes each 3x3 conv 16x cheaper than at 256
# (128 channels: 2.5 s per fp32 step instead of 1.4, AMD EPYC).
roi_heads = model.roi_heads
roi_heads.num_classes = len(CLASSES)
roi_heads.batch_size_per_image = 128
# The mask head trains on 8 of each image's foreground RoIs (vitdet/modeling/roi_heads.py), not
# on all of them: once the RPN has learnt, an image has 32 (128 x 0.25), near-copies around its
# at most 6 objects, and at trained weights all 32 made a step 1.39x as long (the steps
# benchmark with train.init_checkpoint=<this config's model_final.pth> --vs
# model.roi_heads.mask_rois_per_image=null: fp32 0.97 vs 1.35 CPU s, bf16 0.60 vs 0.83).
roi_heads._target_ = MaskSampledROIHeads
roi_heads.mask_rois_per_image = 8
# RoI -> level assignment scaled like the anchors (224 / 4): at 224 nearly every RoI of a 256 px
# image lands on p2, where RoIAlign's backward is slow; an fp32 step took 1.5 s instead of 1.25.
roi_heads.box_pooler.canonical_box_size = 56
roi_heads.mask_pooler.canonical_box_size = 56
roi_heads.box_head.input_shape.channels = pyramid_channels
roi_heads.box_head.conv_dims = []
roi_heads.box_head.fc_dims = [256, 256]
roi_heads.box_predictor.input_shape.channels = 256
# Every detection (up to 100 per image) goes to the COCO evaluation, not only those scoring
# >= 0.05 (detectron2's default): the low-score ones still add recall. The same weights: box /
# mask AP 49.87 / 47.03 -> 50.07 / 47.21. tools/demo.py draws with its own threshold (0.5).
roi_heads.box_predictor.test_score_thresh = 0.0
roi_heads.mask_head.input_shape.channels = pyramid_channels
roi_heads.mask_head.conv_dims = [pyramid_channels] * 3  # 2 convs + the upsampling deconv

# Data: LSJ at 256 px with a scale range of 0.75-1.25: 0.1 would shrink a 17 px object to 2 px.
# (Tuning, fp32: lr 4e-4 with scales 0.5-1.5 gave box / mask AP 20.0 / 14.2 after 200 it and
# 38.7 / 35.0 after 400; lr 1e-3 with 0.75-1.25, changed together, 25.3 / 22.6 and 36.5 / 36.8.)
dataloader.train.dataset.names = "synthetic_train"
dataloader.test.dataset.names = "synthetic_val"
dataloader.train.mapper.augmentations[1].update(
    min_scale=0.75, max_scale=1.25, target_height=image_size, target_width=image_size
)
dataloader.train.mapper.augmentations[2].crop_size = (image_size, image_size)
dataloader.test.mapper.augmentations[0].update(short_edge_length=image_size, max_size=image_size)
dataloader.train.total_batch_size = 8
dataloader.train.aspect_ratio_grouping = False  # all inputs are padded to one square anyway
dataloader.train.num_workers = 1
dataloader.test.num_workers = 1

# Schedule: 1100 it x 8 images = 15 epochs of the 600 training images: 10.6 min on 2 idle cores
# of an AMD EPYC with AVX512-BF16 (bf16, 2 threads: 0.58 s per step), box / mask AP 50.2 / 46.8
# (issue 14's time to accuracy: box >= 50 and mask >= 45 within 12 minutes). 1500 it gave 52.8 /
# 51.0 in 14.5 min (its AP at 1000 it: 49.2 / 47.5; 1250: 52.5 / 51.2); 1000 it alone 49.3 / 46.3.
# `make demo` trains it as 2 processes x 1 thread (Makefile): on an Intel Xeon with AMX, 11.0
# min (0.59 s per step) to 50.9 / 48.8 without drop path and with test_score_thresh 0
# (docs/BENCHMARKS.md). With the one-conv RPN head, 500 proposals per level and 8 mask RoIs per
# image (above), 7.3-7.6 min (0.39-0.40 s per step) to 50.6 / 47.1; in fp32 with oneDNN held to
# AVX-512 without bf16 (a stand-in for a CPU without native bf16): 9.9-10.9 min to 50.7 / 47.2
# (seed 0, two runs) and 10.4 min to 51.8 / 47.0 (seed 1).
train.max_iter = 1100
train.eval_period = 550
train.checkpointer.period = 550
train.log_period = 20
train.seed = 0
# Precision "auto": bf16 autocast where the CPU computes bf16 natively (AVX512-BF16 / AMX), fp32
# elsewhere. On an AMD EPYC with AVX512-BF16, bf16 took 35% less CPU time per step than fp32 for
# nearly the same AP (box / mask 50.1 / 46.8 vs 49.7 / 47.5 after 1000 iterations, 20.4 vs 31.4
# CPU min, one thread); on an Intel Xeon without it, emulated bf16 took 2.0 s per step against
# 0.96 s in fp32.
train.amp.enabled = True
train.amp.dtype = "auto"

optimizer.lr = 1e-3  # from scratch, batch 8 (see the tuning note at the data settings)
optimizer.weight_decay = 0.05
optimizer.params.lr_decay_rate = 1.0  # no pretrained layers to protect
# Weight decay off on every norm, pos_embed and the rel-pos tables (not upstream's rule, which
# decays the rel-pos tables and the heads' channel LayerNorms): the AP figures of this config
# were measured so.
optimizer.params.weight_decay_norm = 0.0
optimizer.params.no_weight_decay = ("pos_embed", "rel_pos_h", "rel_pos_w")
optimizer.params.channel_norm_is_norm = True
optimizer.params.num_layers = net.depth

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.01),
    warmup_length=100 / train.max_iter,
    warmup_factor=0.001,
)
