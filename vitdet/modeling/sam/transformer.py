"""SAM's two-way transformer: prompt tokens and image tokens attend to each other.

Each block: token self-attention, tokens -> image cross-attention, token MLP, image -> tokens
cross-attention (the image tokens are updated too); then a final tokens -> image attention.
The cross-attentions project to ``embedding_dim / attention_downsample_rate`` channels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..onednn import linear
from .mlp import LinMlp

__all__ = ["Attention", "TwoWayAttentionBlock", "TwoWayTransformer", "fused_attn_applies"]


def fused_attn_applies(q: torch.Tensor) -> bool:
    """Whether ``F.scaled_dot_product_attention`` is the faster path for these queries: not for
    bf16 / fp16 on the CPU (see ``Attention``)."""
    return q.device.type != "cpu" or q.dtype == torch.float32


class Attention(nn.Module):
    """Multi-head attention with separate q / k / v projections to an internal width.

    ``use_fused_attn`` attends with ``F.scaled_dot_product_attention``; the plain path (explicit
    logits and softmax) is the reference. Both give the same result (tested). On the CPU the
    fused kernel is slower than the plain path in bf16 / fp16 for the decoder's shapes (head dims
    8-32, a handful of prompt tokens against thousands of image tokens; torch 2.14.1, AMD EPYC,
    one thread: 1.6x slower forward, 3-4x slower forward + backward), so low precision on the
    CPU takes the plain path (``fused_attn_applies``).
    """

    def __init__(
        self,
        *,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
        use_fused_attn: bool = True,
    ) -> None:
        super().__init__()
        internal_dim = embedding_dim // downsample_rate
        if internal_dim % num_heads:
            raise ValueError(f"num_heads {num_heads} does not divide {internal_dim}")
        self.num_heads = num_heads
        self.use_fused_attn = use_fused_attn
        self.q_proj = nn.Linear(embedding_dim, internal_dim)
        self.k_proj = nn.Linear(embedding_dim, internal_dim)
        self.v_proj = nn.Linear(embedding_dim, internal_dim)
        self.out_proj = nn.Linear(internal_dim, embedding_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)  # b nh n d

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q: (B, Nq, C), k and v: (B, Nk, C) -> (B, Nq, C)."""
        q = self._heads(linear(q, self.q_proj))
        k = self._heads(linear(k, self.k_proj))
        v = self._heads(linear(v, self.v_proj))
        if self.use_fused_attn and fused_attn_applies(q):
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q @ k.transpose(-2, -1)) / q.shape[-1] ** 0.5
            out = attn.softmax(dim=-1) @ v
        b, _, nq, _ = out.shape
        out = out.transpose(1, 2).reshape(b, nq, -1)  # b nh nq d -> b nq (nh d)
        return linear(out, self.out_proj)


class TwoWayAttentionBlock(nn.Module):
    """One two-way block; ``skip_first_layer_pe``: the first block's self-attention sees the
    tokens without their positional encoding (and without a residual)."""

    def __init__(
        self,
        *,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: Callable[[], nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        cross = dict(
            embedding_dim=embedding_dim,
            num_heads=num_heads,
            downsample_rate=attention_downsample_rate,
        )
        self.self_attn = Attention(embedding_dim=embedding_dim, num_heads=num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(**cross)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = LinMlp(dim=embedding_dim, hidden_dim=mlp_dim, act_layer=activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(**cross)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries: (B, Nq, C) tokens, keys: (B, Nk, C) image tokens, with their encodings."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks, then tokens -> image attention and a LayerNorm."""

    def __init__(
        self,
        *,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: Callable[[], nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim=embedding_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                activation=activation,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=i == 0,
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(
            embedding_dim=embedding_dim,
            num_heads=num_heads,
            downsample_rate=attention_downsample_rate,
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embedding, image_pe: (B, C, H, W); point_embedding: (B, N, C) ->
        tokens (B, N, C) and image tokens (B, H * W, C)."""
        keys = image_embedding.flatten(2).transpose(1, 2)  # b c h w -> b (h w) c
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        q, k = queries + point_embedding, keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys
