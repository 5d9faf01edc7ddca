# A tiny SAM for tests and the demo on random weights: 128 px input, 2 encoder blocks of width
# 32 (window 4, the second global), 32-channel embedding, one two-way block of MLP 64.
from .sam_vit_b import model

model.image_encoder.img_size = 128
model.image_encoder.embed_dim = 32
model.image_encoder.depth = 2
model.image_encoder.num_heads = 2
model.image_encoder.window_size = 4
model.image_encoder.global_attn_indexes = (1,)
model.image_encoder.out_chans = 32
model.prompt_encoder.image_embedding_size = (8, 8)  # 128 / 16
model.prompt_encoder.input_image_size = (128, 128)
model.mask_decoder.transformer.depth = 1
model.mask_decoder.transformer.num_heads = 2
model.mask_decoder.transformer.mlp_dim = 64
model.mask_decoder.iou_head_hidden_dim = 32
