# Fine-tune SAM ViT-B from the released weights on COCO-format instance data with the paper's
# simulated prompts (vitdet.modeling.sam.training.TrainableSam): a point or a noisy box, then
# clicks in the error region with the previous logits as the mask prompt; focal + dice 20:1,
# IoU-head MSE. By default the image encoder is frozen (its embeddings cached, so an epoch after
# the first costs the prompt encoder and decoder only); train it too with
#   model.freeze_image_encoder=False model.embedding_cache_size=0
# (layer-wise lr decay 0.8 over the encoder's blocks, the paper's).
#
#   python tools/train_net.py --config-file configs/SAM/sam_vit_b_finetune.py \
#       --register-coco mine data/train.json data/train_images \
#       --register-coco mine_val data/val.json data/val_images \
#       dataloader.train.dataset.names=mine dataloader.test.dataset.names=mine_val
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from vitdet.modeling.sam.training import TrainableSam

from ..common.data.sam_prompts import dataloader
from ..common.optim import AdamW as optimizer
from ..common.train import train
from .sam_vit_b import model

model._target_ = TrainableSam
model.freeze_image_encoder = True
# Embeddings kept in memory: 256 x 64 x 64 float32 = 4 MiB per image, 1000 images = 4 GiB.
model.embedding_cache_size = 1000
# Prompt simulation (the paper's): 1 first prompt + 8 points + 2 mask-only = 11 iterations.
model.num_masks_per_image = 16  # the paper: at most 64 masks per GPU, here 4 images per GPU
model.num_correction_points = 8
model.num_mask_only_iterations = 2
model.eval_clicks = (1, 3, 5)

dataloader.train.dataset.names = "coco_2017_train"
dataloader.test.dataset.names = "coco_2017_val"
dataloader.train.total_batch_size = 16

train.init_checkpoint = "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"
# 5000 it x 16 images: about 0.7 epoch of COCO train2017 (118k images); change with your data.
train.max_iter = 5000
train.eval_period = 1000
train.checkpointer.period = 1000
train.amp.enabled = True
train.amp.dtype = "auto"

# Fine-tuning: a tenth of the paper's from-scratch lr 8e-4; its weight decay and betas.
optimizer.lr = 8e-5
optimizer.weight_decay = 0.1
optimizer.params.lr_decay_rate = 0.8  # used when the encoder trains
optimizer.params.num_layers = model.image_encoder.depth

# The paper's shape: linear warm-up over 250 iterations, x0.1 at 2/3 and 26/27 of the schedule
# (its 60k and 86,666 of 90k).
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01],
        milestones=[train.max_iter * 2 // 3, train.max_iter * 26 // 27],
        num_updates=train.max_iter,
    ),
    warmup_length=250 / train.max_iter,
    warmup_factor=0.001,
)
