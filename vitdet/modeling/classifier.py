"""An image classifier from the backbone's blocks: the ViT of the classification papers."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Literal

import torch
import torch.nn as nn

from .encoder import ViTEncoder, init_weights
from .pos_embed import PosEmbedType
from .vit import PatchEmbed

__all__ = ["ViTClassifier"]


class ViTClassifier(ViTEncoder):
    """``ViTEncoder`` and a linear head on a pooled feature.

    ``global_pool="token"``: the cls token's output (original ViT); ``"avg"``: the mean of the
    patch tokens, without a cls token (SimpleViT, "Better plain ViT baselines"). The names are
    timm's (``head.*`` after the encoder's), so the trained encoder initialises a ViTDet
    backbone through ``vitdet.checkpoint`` (format ``timm``).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        global_pool: Literal["token", "avg"] = "token",
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = partial(nn.LayerNorm, eps=1e-6),
        patch_embed_layer: Callable[..., nn.Module] = PatchEmbed,
        pos_embed_type: PosEmbedType = "learned",
    ) -> None:
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            drop_path_rate=drop_path_rate,
            norm_layer=norm_layer,
            patch_embed_layer=patch_embed_layer,
            pos_embed_type=pos_embed_type,
            use_cls_token=global_pool == "token",
        )
        self.global_pool = global_pool
        self.head = nn.Linear(embed_dim, num_classes)
        init_weights(self.head)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W) -> pooled feature (B, C)."""
        tokens = self.embed(x)
        out = self.encode(tokens)  # (B, [1 +] N, C)
        return out[:, 0] if self.global_pool == "token" else out.mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W) -> logits (B, num_classes)."""
        return self.head(self.forward_features(x))
