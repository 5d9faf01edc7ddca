"""The segment_anything release (test-only reference) at the tiny size of
configs/SAM/sam_vit_tiny.py, with random weights, and ours with the same weights."""

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from vitdet.sam import build_sam

from helpers import REPO

TINY = dict(img_size=128, embed_dim=32, depth=2, num_heads=2, window=4, global_idx=(1,), dim=32)


def release_tiny_sam(seed: int = 0) -> Sam:
    """The release's own classes at the tiny size, every weight random (not its zero inits)."""
    torch.manual_seed(seed)
    grid = TINY["img_size"] // 16
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=TINY["img_size"],
            embed_dim=TINY["embed_dim"],
            depth=TINY["depth"],
            num_heads=TINY["num_heads"],
            mlp_ratio=4,
            norm_layer=lambda d: torch.nn.LayerNorm(d, eps=1e-6),
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=TINY["global_idx"],
            window_size=TINY["window"],
            out_chans=TINY["dim"],
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=TINY["dim"],
            image_embedding_size=(grid, grid),
            input_image_size=(TINY["img_size"], TINY["img_size"]),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=1, embedding_dim=TINY["dim"], mlp_dim=64, num_heads=2
            ),
            transformer_dim=TINY["dim"],
            iou_head_depth=3,
            iou_head_hidden_dim=32,
        ),
    )
    with torch.no_grad():
        for name, p in sam.named_parameters():
            if name.endswith("weight") and p.ndim == 1:  # norms around 1
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p) if p.ndim > 1 else 0.1 * torch.randn_like(p))
    return sam.eval()


def tiny_pair(seed: int = 0, overrides=()):
    """(release model, ours) with the same random weights, loaded strictly."""
    ref = release_tiny_sam(seed)
    ours = build_sam("vit_tiny", overrides=overrides)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


CONFIG_DIR = REPO / "configs" / "SAM"
