"""A stride-4 convolutional stem on the input image: pixel-level detail for the mask decoder.

Not part of the released SAM (its masks come from the stride-16 embedding alone, upscaled x4 by
transposed convolutions). A SAM trained from scratch on little compute learns object outlines
slowly through that path; the stem gives the decoder's upscaled map the image's own edges at
the mask resolution (the idea of HQ-SAM's early features, taken from the pixels).
"""

from __future__ import annotations

import torch.nn as nn

from ..channel_norm import ChannelLayerNorm

__all__ = ["DetailStem"]


class DetailStem(nn.Sequential):
    """Two 3x3 stride-2 convolutions, each followed by a channel LayerNorm and a GELU.

    (B, 3, H, W) normalised image -> (B, chans, H / 4, W / 4): for a patch-16 encoder, the
    decoder's mask grid (4S x 4S).
    """

    stride = 4

    def __init__(self, *, chans: int) -> None:
        super().__init__(
            nn.Conv2d(3, chans, kernel_size=3, stride=2, padding=1),
            ChannelLayerNorm(chans),
            nn.GELU(),
            nn.Conv2d(chans, chans, kernel_size=3, stride=2, padding=1),
            ChannelLayerNorm(chans),
            nn.GELU(),
        )
