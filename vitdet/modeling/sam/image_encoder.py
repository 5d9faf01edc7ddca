"""SAM's image encoder: the ViTDet backbone's plain ViT plus a neck.

The trunk is this project's ViT pieces (``PatchEmbed``, ``make_blocks``: the same ``Block``,
fused attention with the decomposed relative positions and oneDNN GEMMs), built with
``mlp_layer=LinMlp`` for the release's ``mlp.lin1`` / ``mlp.lin2`` names. Only the absolute
position embedding's layout differs from ``ViT``: SAM stores it as the (1, S, S, C) grid of its
input size (no pretraining grid, no cls slot), so it is a parameter of this module rather than
a ``ViT`` with another layout switch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn as nn

from ..pos_embed import resample_abs_pos
from ..vit import PatchEmbed, ViT, make_blocks
from .mlp import LinMlp
from .neck import SamNeck

__all__ = ["SamImageEncoder"]


class SamImageEncoder(nn.Module):
    """(B, 3, img_size, img_size) normalised, padded images -> (B, out_chans, S, S) embeddings,
    S = img_size / patch_size (64 for SAM: 1024 / 16)."""

    def __init__(
        self,
        *,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        norm_layer: Callable[[int], nn.Module] = partial(nn.LayerNorm, eps=1e-6),
        act_layer: Callable[[], nn.Module] = nn.GELU,
        use_rel_pos: bool = True,
        window_size: int = 14,
        global_attn_indexes: Sequence[int] = (),
        use_fused_attn: bool = True,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = make_blocks(
            depth=depth,
            dim=embed_dim,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            norm_layer=norm_layer,
            act_layer=act_layer,
            use_rel_pos=use_rel_pos,
            input_size=(grid, grid),
            window_size=window_size,
            global_attn_indexes=global_attn_indexes,
            use_fused_attn=use_fused_attn,
            mlp_layer=LinMlp,
        )
        self.neck = SamNeck(in_chans=embed_dim, out_chans=out_chans)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(ViT._init_weights)

    def abs_pos(self, hw: tuple[int, int]) -> torch.Tensor:
        """The (1, S, S, C) position grid, bicubically resized to ``hw`` if it differs."""
        if tuple(self.pos_embed.shape[1:3]) == tuple(hw):
            return self.pos_embed
        # 1 s s c -> 1 (s s) c, the layout resample_abs_pos reads
        return resample_abs_pos(self.pos_embed.flatten(1, 2), False, hw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) -> (B, out_chans, H / p, W / p)."""
        x = self.patch_embed(x)  # b h w c
        x = x + self.abs_pos((x.shape[1], x.shape[2]))
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))  # b h w c -> b c h w
