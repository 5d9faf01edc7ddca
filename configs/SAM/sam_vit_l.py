# SAM with a ViT-L image encoder (sam_vit_l_0b3195.pth): ViTDet's ViT-L, global blocks every 6th.
from .sam_vit_b import model

model.image_encoder.embed_dim = 1024
model.image_encoder.depth = 24
model.image_encoder.num_heads = 16
model.image_encoder.global_attn_indexes = (5, 11, 17, 23)
