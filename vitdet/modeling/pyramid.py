"""Simple feature pyramid of ViTDet: p2..p6 built from the backbone's last stride-16 map only."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling import Backbone

from .channel_norm import ChannelLayerNorm

__all__ = ["SimpleFeaturePyramid", "LastLevelMaxPool", "ALLOWED_SCALES"]

ALLOWED_SCALES = (4.0, 2.0, 1.0, 0.5)


class LastLevelMaxPool(nn.Module):
    """Extra top level: p6 = max-pool (k1 s2) of p5."""

    num_levels = 1
    in_feature = "p5"

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [nn.functional.max_pool2d(x, kernel_size=1, stride=2, padding=0)]


class SimpleFeaturePyramid(Backbone):
    """Multi-scale maps from one single-scale backbone output (ViTDet, Sec. 3).

    Each scale is a few up/down-sampling ops (``simfp_{stage}.0..``) followed by a 1x1 and a
    3x3 conv to ``out_channels``, each with a norm and no bias.

    Padding contract (``padding_constraints``): inputs are padded to a ``square_pad`` square
    when it is > 0, and always to a multiple of the largest output stride.
    """

    def __init__(
        self,
        *,
        net: Backbone,
        in_feature: str,
        out_channels: int,
        scale_factors: Sequence[float],
        top_block: nn.Module | None = None,
        norm_layer: Callable[[int], nn.Module] = ChannelLayerNorm,
        square_pad: int = 0,
    ) -> None:
        super().__init__()
        bad = [s for s in scale_factors if float(s) not in ALLOWED_SCALES]
        if bad or not scale_factors:
            raise ValueError(
                f"scale_factors {list(scale_factors)} not supported; "
                f"allowed: {list(ALLOWED_SCALES)}"
            )
        self.net = net
        self.in_feature = in_feature
        self.scale_factors = tuple(scale_factors)
        input_shape = net.output_shape()[in_feature]
        in_stride, dim = input_shape.stride, input_shape.channels
        strides = [int(in_stride / s) for s in scale_factors]

        self.stages = []
        for scale in scale_factors:
            ops = self._resample_ops(float(scale), dim, norm_layer)
            mid = dim // {4.0: 4, 2.0: 2}.get(float(scale), 1)
            ops += [
                Conv2d(mid, out_channels, kernel_size=1, bias=False, norm=norm_layer(out_channels)),
                Conv2d(
                    out_channels,
                    out_channels,
                    kernel_size=3,
                    padding=1,
                    bias=False,
                    norm=norm_layer(out_channels),
                ),
            ]
            stage = int(math.log2(in_stride / scale))
            layers = nn.Sequential(*ops)
            self.add_module(f"simfp_{stage}", layers)
            self.stages.append(layers)

        self.top_block = top_block
        self._out_feature_strides = {f"p{int(math.log2(s))}": s for s in strides}
        if top_block is not None:
            last = int(math.log2(strides[-1]))
            for i in range(top_block.num_levels):
                self._out_feature_strides[f"p{last + i + 1}"] = 2 ** (last + i + 1)
        self._out_features = list(self._out_feature_strides)
        self._out_feature_channels = {k: out_channels for k in self._out_features}
        self._size_divisibility = max(self._out_feature_strides.values())
        self._square_pad = square_pad

    @staticmethod
    def _resample_ops(scale: float, dim: int, norm_layer: Callable[[int], nn.Module]) -> list:
        if scale == 4.0:
            return [
                nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2),
                norm_layer(dim // 2),
                nn.GELU(),
                nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2),
            ]
        if scale == 2.0:
            return [nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2)]
        if scale == 1.0:
            return []
        return [nn.MaxPool2d(kernel_size=2, stride=2)]  # scale 0.5

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    @property
    def square_pad(self) -> int:
        return self._square_pad

    @property
    def padding_constraints(self) -> dict[str, int]:
        # Keys as read by detectron2's ImageList.from_tensors.
        return {"size_divisibility": self._size_divisibility, "square_size": self._square_pad}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, C_in, H, W) -> {"p2": (B, out_channels, H/4, W/4), ..., "p6": (H/64, W/64)}."""
        features = self.net(x)[self.in_feature]
        results = [stage(features) for stage in self.stages]
        if self.top_block is not None:
            top_in = results[self._out_features.index(self.top_block.in_feature)]
            results.extend(self.top_block(top_in))
        return dict(zip(self._out_features, results, strict=True))

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }
