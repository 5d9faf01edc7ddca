# MAE pretraining of the Synthetic config's ViT on the synthetic training images (labels
# unused), on 2 CPU cores in about 10 minutes. Its model_final.pth initialises
# configs/Synthetic/mask_rcnn_vitdet_tiny.py (train.init_checkpoint=<it>); tools/benchmarks/mae.py
# compares that with random initialisation.
# The images: python tools/make_synthetic.py --root $DETECTRON2_DATASETS/synthetic
import math
import os

from .mae_vit_b import dataloader, lr_multiplier, model, optimizer, train

# Where tools/make_synthetic.py (and a detection run of the Synthetic config) writes the set.
_synthetic = os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "synthetic")

# Encoder == configs/Synthetic/mask_rcnn_vitdet_tiny.py's ViT (tested): 192 wide, 6 deep,
# 3 heads; the decoder 128 wide, 2 deep.
model.embed_dim = 192
model.depth = 6
model.num_heads = 3
model.decoder_embed_dim = 128
model.decoder_depth = 2
model.decoder_num_heads = 4
# 128 px crops of the 256 px images at about their size: a crop of 1/4 of the area is shown
# 1:1, and 0.1-0.5 of the area means x0.7-x1.6. A quarter of the tokens of 256 px: 4x the
# images per minute. The 8 x 8 position grid is resized to the detector's 16 x 16 on loading.
model.img_size = 128
dataloader.train.dataset.transform.scale = (0.1, 0.5)

dataloader.train.dataset.root = os.path.join(_synthetic, "train")
dataloader.train.total_batch_size = 32
dataloader.train.num_workers = 1
dataloader.test.root = os.path.join(_synthetic, "val")
dataloader.test.crop_fraction = 0.5  # the centre 128 px of 256, 1:1 like a typical crop

# The paper's lr 1.5e-4 * 4096 / 256 = 2.4e-3, scaled to batch 32 by the square root of the
# batch ratio (linear scaling, 1.9e-5, hardly moves a run this short).
optimizer.lr = 1.5e-4 * 4096 / 256 * math.sqrt(32 / 4096)

# 700 it x 32 images = 37 epochs of the 600 training images; ~10 min on a busy 2-core CPU.
train.max_iter = 700
lr_multiplier.warmup_length = 35 / train.max_iter
train.checkpointer.period = 175
train.eval_period = 175
train.log_period = 20
train.seed = 0
train.device = "cpu"
train.output_dir = "./output/mae_vit_tiny_synthetic"
