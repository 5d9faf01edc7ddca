# MAE pretraining of the Synthetic config's ViT on the synthetic training images (labels
# unused), on 2 CPU cores in about 10 minutes. Its model_final.pth initialises
# configs/Synthetic/mask_rcnn_vitdet_tiny.py (train.init_checkpoint=<it>); tools/benchmark_mae.py
# compares that with random initialisation.
# The images: python -m vitdet.data.synthetic --root $DETECTRON2_DATASETS/synthetic
import os

from .mae_vit_b import dataloader, lr_multiplier, model, optimizer, train

# Where tools/train_net.py generates and reads the synthetic set.
_synthetic = os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "synthetic")

# Encoder == configs/Synthetic/mask_rcnn_vitdet_tiny.py's ViT (tested): 256 px = 16 x 16
# tokens, 192 wide, 6 deep, 3 heads; the decoder a third of the encoder's cost per token.
model.img_size = 256
model.embed_dim = 192
model.depth = 6
model.num_heads = 3
model.decoder_embed_dim = 128
model.decoder_depth = 2
model.decoder_num_heads = 4

dataloader.train.dataset.root = os.path.join(_synthetic, "train")
dataloader.train.dataset.transform.min_scale = 0.35  # keeps a 17 px object above 10 px
dataloader.train.total_batch_size = 32
dataloader.train.num_workers = 1
dataloader.test.root = os.path.join(_synthetic, "val")

optimizer.lr = 1.5e-4 * 32 / 256

# 1000 it x 32 images = 53 epochs of the 600 training images.
train.max_iter = 1000
lr_multiplier.warmup_length = 50 / train.max_iter
train.checkpointer.period = 250
train.eval_period = 250
train.log_period = 20
train.seed = 0
train.device = "cpu"
train.output_dir = "./output/mae_vit_tiny_synthetic"
