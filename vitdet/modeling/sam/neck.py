"""SAM's neck: the ViT's stride-16 map -> the 256-channel image embedding."""

from __future__ import annotations

import torch.nn as nn

from ..channel_norm import ChannelLayerNorm

__all__ = ["SamNeck"]


class SamNeck(nn.Sequential):
    """conv 1x1 (no bias) -> channel LayerNorm -> conv 3x3 (no bias) -> channel LayerNorm.

    (B, in_chans, H, W) -> (B, out_chans, H, W). The channel LayerNorm computes detectron2's (eps
    1e-6, the release's ``LayerNorm2d``) in one fused call; ``neck.{0,1,2,3}`` as in the
    checkpoints.
    """

    def __init__(self, *, in_chans: int, out_chans: int) -> None:
        super().__init__(
            nn.Conv2d(in_chans, out_chans, kernel_size=1, bias=False),
            ChannelLayerNorm(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            ChannelLayerNorm(out_chans),
        )
