"""Convolutional stem in place of the patchify conv ("Early Convolutions Help Transformers See
Better", Xiao et al. 2021)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

__all__ = ["ConvStem"]


class ConvStem(nn.Module):
    """Stacked 3x3 stride-2 convs, each followed by a norm and ReLU, then a 1x1 conv to the width.

    A drop-in for ``PatchEmbed``: same keyword arguments, same output layout and grid. There are
    log2(patch_size) stride-2 convs; their widths default to the paper's rule of doubling up to
    the width, e.g. 24, 48, 96, 192 for a width of 192 (ViT_C-1GF) at patch size 16.
    """

    def __init__(
        self,
        *,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        channels: Sequence[int] | None = None,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        act_layer: Callable[[], nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        num_convs = round(math.log2(patch_size))
        if 2**num_convs != patch_size:
            raise ValueError(f"patch_size {patch_size} is not a power of 2")
        if channels is None:
            channels = [embed_dim // 2 ** (num_convs - 1 - i) for i in range(num_convs)]
        if len(channels) != num_convs:
            raise ValueError(
                f"{len(channels)} stem widths for patch size {patch_size}: need {num_convs}"
            )
        self.patch_size = patch_size
        layers: list[nn.Module] = []
        for c_in, c_out in zip([in_chans, *channels[:-1]], channels, strict=True):
            # The norm's shift makes a conv bias redundant.
            layers += [
                nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1, bias=False),
                norm_layer(c_out),
                act_layer(),
            ]
        self.stem = nn.Sequential(*layers)
        self.proj = nn.Conv2d(channels[-1], embed_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W) -> (B, ceil(H / p), ceil(W / p), C), as ``PatchEmbed``.

        Each stride-2 conv (padding 1) maps n pixels to ceil(n / 2).
        """
        return self.proj(self.stem(x)).permute(0, 2, 3, 1)  # b c h w -> b h w c
