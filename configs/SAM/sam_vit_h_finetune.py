# Fine-tune SAM ViT-H from sam_vit_h_4b8939.pth: the ViT-B recipe with sam_vit_h.py's encoder.
from .sam_vit_b_finetune import dataloader, lr_multiplier, model, optimizer, train
from .sam_vit_h import model as sam_vit_h

model.image_encoder = sam_vit_h.image_encoder
optimizer.params.num_layers = model.image_encoder.depth
train.init_checkpoint = "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"
