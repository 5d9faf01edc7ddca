# Experiment (not kept: docs/SAM.md): sam_vit_tiny_synthetic.py with a stride-4 convolutional
# stem on the image fused into the mask decoder's upscaled map (DetailStem, detail_dim), 32
# channels. 1.33x the CPU per step, so 4400 iterations for the same CPU minutes:
#   python tools/train_net.py --config-file configs/SAM/sam_vit_tiny_synthetic_detail.py \
#       train.max_iter=4400
from detectron2.config import LazyCall as L

from vitdet.modeling.sam.detail_stem import DetailStem

from .sam_vit_tiny_synthetic import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

detail_chans = 32
model.detail_stem = L(DetailStem)(chans=detail_chans)
model.mask_decoder.detail_dim = detail_chans
