# MAE pretraining of the Synthetic config's ViT on 4000 unlabeled synthetic images (another seed
# of the generator, so none of them is a training or validation image of synthetic_train /
# synthetic_val), about 10 CPU minutes (one thread). tools/benchmarks/mae.py generates the
# folder and runs it; by hand:
#   python -c "from vitdet.data import synthetic; synthetic.generate('datasets/synthetic_unlabeled',
#              num_train=4000, num_val=0, seed=1)"
#   python tools/pretrain_mae.py --config-file configs/MAE/mae_vit_tiny_synthetic_unlabeled.py
import os

from .mae_vit_tiny_synthetic import dataloader, lr_multiplier, model, optimizer, train

_unlabeled = os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "synthetic_unlabeled")
dataloader.train.dataset.root = os.path.join(_unlabeled, "train")

# 2400 it x 32 crops = 76800 crops = 19 epochs of the 4000 images (the parent: 37 epochs of 600,
# 700 it); ~0.25 CPU s per iteration with one thread (AMD EPYC with AVX512-BF16, fp32).
train.max_iter = 2400
lr_multiplier.warmup_length = 120 / train.max_iter
train.checkpointer.period = 400
train.eval_period = 400
train.output_dir = "./output/mae_vit_tiny_synthetic_unlabeled"
