"""vitdet: plain ViT backbones for detection."""
