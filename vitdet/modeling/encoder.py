"""The plain ViT as a token-sequence encoder: the trunk of the MAE and of the image classifier.

One trunk, two heads on it: the encoder is built from the backbone's own pieces, not a copy of
them: ``PatchEmbed`` (or a drop-in stem), ``register_abs_pos_embed`` (learned or sin-cos
``pos_embed`` in the pretraining layout) and ``make_blocks`` (drop-path schedule, blocks) with
global attention and no relative positions. It adds the cls token, the final norm and MAE's
initialisation, and is named in the MAE / timm layout (``cls_token``, ``pos_embed``,
``patch_embed.*``, ``blocks.N.*``, ``norm.*``) that ``vitdet.checkpoint`` converts into the
ViTDet backbone.

It shares those pieces rather than subclassing ``ViT``: the backbone is a detectron2
``Backbone`` (a stride-16 NCHW map, padding contract) and ``vitdet.checkpoint.vit_prefix``
finds a model's one ViT by its type; the encoder maps token sequences (any subset of a grid,
with a cls token) and must not pass for a backbone.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn as nn

from .pos_embed import PosEmbedType, register_abs_pos_embed, resample_abs_pos
from .vit import PatchEmbed, make_blocks

__all__ = ["ViTEncoder", "init_weights"]


def init_weights(module: nn.Module) -> None:
    """MAE's initialisation: xavier-uniform linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class ViTEncoder(nn.Module):
    """Patch embedding, absolute positions, an optional cls token, global-attention blocks, norm.

    ``pos_embed`` is stored in the pretraining layout (1, [1 +] S * S, C), S = img_size /
    patch_size, cls slot first; ``"learned"`` makes it a parameter, ``"sincos"`` a fixed buffer
    (kept in the state dict so checkpoints carry it, never trained). Other input sizes resample
    the grid bicubically, as the backbone does.
    """

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = partial(nn.LayerNorm, eps=1e-6),
        act_layer: Callable[[], nn.Module] = nn.GELU,
        patch_embed_layer: Callable[..., nn.Module] = PatchEmbed,
        pos_embed_type: PosEmbedType = "learned",
        use_cls_token: bool = True,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.grid_size = img_size // patch_size
        self.patch_embed = patch_embed_layer(
            patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if use_cls_token else None
        register_abs_pos_embed(
            self,
            pos_embed_type=pos_embed_type,
            embed_dim=embed_dim,
            grid_size=self.grid_size,
            cls_token=use_cls_token,
        )
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        # global attention, no relative positions
        self.blocks = make_blocks(
            depth=depth,
            dim=embed_dim,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            drop_path_rate=drop_path_rate,
            norm_layer=norm_layer,
            act_layer=act_layer,
        )
        self.norm = norm_layer(embed_dim)

        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)
        self.blocks.apply(init_weights)
        self.norm.apply(init_weights)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W) -> patch tokens with positions (B, h * w, C), row-major."""
        tokens = self.patch_embed(x)
        b, h, w, c = tokens.shape
        pos = resample_abs_pos(self.pos_embed, self.cls_token is not None, (h, w))
        return (tokens + pos).reshape(b, h * w, c)  # b h w c -> b (h w) c

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (B, N, C) with positions -> (B, [1 +] N, C): [cls], the blocks, the norm.

        Attention is global and position-free, so any subset of a grid (MAE's visible patches)
        is a valid input.
        """
        if self.cls_token is not None:
            cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
            tokens = torch.cat([cls, tokens], dim=1)
        x = tokens[:, None]  # b n c -> b 1 n c: a 1 x N token map for the NHWC blocks
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x[:, 0])  # b 1 n c -> b n c
