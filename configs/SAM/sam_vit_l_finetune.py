# Fine-tune SAM ViT-L from sam_vit_l_0b3195.pth: the ViT-B recipe with sam_vit_l.py's encoder.
from .sam_vit_b_finetune import dataloader, lr_multiplier, model, optimizer, train
from .sam_vit_l import model as sam_vit_l

model.image_encoder = sam_vit_l.image_encoder
optimizer.params.num_layers = model.image_encoder.depth
train.init_checkpoint = "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth"
