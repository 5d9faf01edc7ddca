# SAM with a ViT-H image encoder (sam_vit_h_4b8939.pth): ViTDet's ViT-H, global blocks every 8th.
from .sam_vit_b import model

model.image_encoder.embed_dim = 1280
model.image_encoder.depth = 32
model.image_encoder.num_heads = 16
model.image_encoder.global_attn_indexes = (7, 15, 23, 31)
