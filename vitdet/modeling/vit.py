"""Plain, non-hierarchical Vision Transformer backbone of ViTDet.

NHWC inside the network; the single stride-16 output map is NCHW (detectron2 ``Backbone``).
Parameter names and shapes follow the released ViTDet checkpoints (``backbone.net.*``).

The one ViT trunk: ``PatchEmbed``, ``Block`` and ``make_blocks`` (with the drop-path schedule)
here and ``register_abs_pos_embed`` (pos_embed.py) also build the MAE / classifier encoder
(encoder.py) and the MAE decoder; only the heads differ. The linear layers run through
``onednn.linear`` (the CPU GEMM fast path, ``F.linear`` elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
from detectron2.layers.batch_norm import LayerNorm as ChannelLayerNorm
from detectron2.modeling import Backbone

from .onednn import gelu_mlp, linear
from .pos_embed import (
    PosEmbedType,
    decomposed_rel_pos_bias,
    decomposed_rel_pos_terms,
    register_abs_pos_embed,
    resample_abs_pos,
)
from .rel_pos_attention import rel_pos_attention
from .windows import window_partition, window_unpartition

__all__ = ["ViT", "Block", "Attention", "PatchEmbed", "make_blocks"]


class DropPath(nn.Module):
    """Stochastic depth: drop whole residual branches per sample while training."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class PatchEmbed(nn.Module):
    """Image to patch tokens with one conv, kernel = stride = patch size."""

    def __init__(self, *, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W) -> (B, ceil(H / p), ceil(W / p), C); partial patches zero-padded."""
        p = self.patch_size
        pad_h, pad_w = -x.shape[-2] % p, -x.shape[-1] % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.proj(x).permute(0, 2, 3, 1).contiguous()  # b c h w -> b h w c


class Mlp(nn.Module):
    """Two-layer feed-forward network (names ``fc1`` / ``fc2`` as in the checkpoints)."""

    def __init__(self, *, dim: int, hidden_dim: int, act_layer: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.act, nn.GELU):  # fused into fc1 (inference), recomputed (training)
            return gelu_mlp(x, self.fc1, self.fc2, approximate=self.act.approximate)
        return linear(self.act(linear(x, self.fc1)), self.fc2)


class Attention(nn.Module):
    """Multi-head self-attention over a 2-D token map, with decomposed relative positions.

    Global, or within non-overlapping ``window_size`` windows (``window_size > 0``): the map is
    padded bottom/right to a multiple of the window and cropped back afterwards. The padding is
    zeros after ``norm1`` (released models), so padded tokens take part as keys and values with
    the qkv rows of a zero input, i.e. the qkv bias.

    ``use_fused_attn`` computes qkv and the projection for real tokens only (pads the qkv map
    with the bias row) and attends with :func:`rel_pos_attention` (fused SDPA per chunk,
    or in bf16 / fp16 on the CPU explicit matmuls per cache-sized chunk; no (N, N) bias or
    attention matrix stored); the plain path is the reference: zero-pad,
    explicit logits and softmax. Both give the same result (tested).
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        input_size: tuple[int, int] | None = None,
        window_size: int = 0,
        use_fused_attn: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.window_size = window_size
        self.use_fused_attn = use_fused_attn
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if window_size > 0:
                input_size = (window_size, window_size)
            if input_size is None:
                raise ValueError("input_size is required with use_rel_pos=True")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))
            if not rel_pos_zero_init:
                nn.init.trunc_normal_(self.rel_pos_h, std=0.02)
                nn.init.trunc_normal_(self.rel_pos_w, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        if not self.use_fused_attn:
            return self._forward_plain(x)
        b, h, w, _ = x.shape
        qkv = linear(x, self.qkv)
        if self.window_size > 0:
            # qkv(0) = qkv.bias (zeros without a bias) fills the padded tokens
            qkv, pad_hw = window_partition(qkv, self.window_size, pad_value=self.qkv.bias)
        out = self._attend(qkv)
        if self.window_size > 0:
            out = window_unpartition(out, self.window_size, pad_hw, (h, w))
        return linear(out, self.proj)

    def _attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """qkv: (B, H, W, 3 * C) -> (B, H, W, C), fused attention."""
        b, h, w, _ = qkv.shape
        # b h w (3 nh d) -> 3 b nh (h w) d, views (qkv is contiguous: the output of the linear
        # layer, or of window_partition)
        q, k, v = qkv.view(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        if self.use_rel_pos:
            rel_h, rel_w = decomposed_rel_pos_terms(
                q, self.rel_pos_h, self.rel_pos_w, (h, w), (h, w)
            )
            out = rel_pos_attention(q, k, v, rel_h, rel_w, scale=self.scale)
        else:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        # b nh (h w) d -> b h w (nh d)
        return out.transpose(1, 2).reshape(b, h, w, -1)

    def _forward_plain(self, x: torch.Tensor) -> torch.Tensor:
        """The reference computation, step for step (explicit attention matrix)."""
        h, w = x.shape[1:3]
        if self.window_size > 0:
            x, pad_hw = window_partition(x, self.window_size)
        b, wh, ww, _ = x.shape
        n = wh * ww
        # b h w (3 nh d) -> 3 (b nh) (h w) d
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * self.num_heads, n, -1).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.use_rel_pos:
            attn = attn + decomposed_rel_pos_bias(
                q, self.rel_pos_h, self.rel_pos_w, (wh, ww), (wh, ww)
            )
        out = attn.softmax(dim=-1) @ v
        # (b nh) (h w) d -> b h w (nh d)
        out = out.view(b, self.num_heads, wh, ww, -1).permute(0, 2, 3, 1, 4).reshape(b, wh, ww, -1)
        out = self.proj(out)
        if self.window_size > 0:
            out = window_unpartition(out, self.window_size, pad_hw, (h, w))
        return out


class ResBottleneckBlock(nn.Module):
    """Residual 1x1 -> 3x3 -> 1x1 conv bottleneck (NCHW), last norm zero-initialised."""

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        bottleneck_channels: int,
        act_layer: Callable[[], nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, bottleneck_channels, 1, bias=False)
        self.norm1 = ChannelLayerNorm(bottleneck_channels)
        self.act1 = act_layer()
        self.conv2 = nn.Conv2d(bottleneck_channels, bottleneck_channels, 3, padding=1, bias=False)
        self.norm2 = ChannelLayerNorm(bottleneck_channels)
        self.act2 = act_layer()
        self.conv3 = nn.Conv2d(bottleneck_channels, out_channels, 1, bias=False)
        self.norm3 = ChannelLayerNorm(out_channels)
        for conv in (self.conv1, self.conv2, self.conv3):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        for norm in (self.norm1, self.norm2):
            nn.init.ones_(norm.weight)
            nn.init.zeros_(norm.bias)
        # Zero-init the last norm so the block starts as identity.
        nn.init.zeros_(self.norm3.weight)
        nn.init.zeros_(self.norm3.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, H, W)."""
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.act2(self.norm2(self.conv2(out)))
        return x + self.norm3(self.conv3(out))


class Block(nn.Module):
    """Transformer block with window (``window_size > 0``) or global attention."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        window_size: int = 0,
        use_residual_block: bool = False,
        input_size: tuple[int, int] | None = None,
        use_fused_attn: bool = True,
        mlp_layer: Callable[..., nn.Module] = Mlp,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(
            dim=dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            rel_pos_zero_init=rel_pos_zero_init,
            input_size=input_size,
            window_size=window_size,
            use_fused_attn=use_fused_attn,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        # Mlp, or a drop-in taking the same keywords (SAM's ``lin1`` / ``lin2`` names)
        self.mlp = mlp_layer(dim=dim, hidden_dim=int(dim * mlp_ratio), act_layer=act_layer)
        self.residual = (
            ResBottleneckBlock(
                in_channels=dim, out_channels=dim, bottleneck_channels=dim // 2, act_layer=act_layer
            )
            if use_residual_block
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        if not isinstance(self.residual, nn.Identity):
            x = self.residual(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # via NCHW
        return x


def make_blocks(
    *,
    depth: int,
    dim: int,
    num_heads: int,
    mlp_ratio: float = 4.0,
    qkv_bias: bool = True,
    drop_path_rate: float = 0.0,
    norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
    act_layer: Callable[[], nn.Module] = nn.GELU,
    use_rel_pos: bool = False,
    rel_pos_zero_init: bool = True,
    input_size: tuple[int, int] | None = None,
    window_size: int = 0,
    global_attn_indexes: Sequence[int] = (),
    residual_block_indexes: Sequence[int] = (),
    use_fused_attn: bool = True,
    mlp_layer: Callable[..., nn.Module] = Mlp,
) -> nn.ModuleList:
    """The ``depth`` blocks of a plain ViT (``blocks.N.*``), shared by the backbone and the
    MAE / classifier encoder and decoder.

    Stochastic depth rises linearly from 0 to ``drop_path_rate`` over the blocks. Attention is
    windowed (``window_size > 0``) except in the blocks of ``global_attn_indexes``; the blocks
    of ``residual_block_indexes`` end with a conv bottleneck. ``mlp_layer`` builds each block's
    feed-forward network (``Mlp``; SAM's encoder passes its ``lin1`` / ``lin2``-named twin).
    """
    for i in (*global_attn_indexes, *residual_block_indexes):
        if not 0 <= i < depth:
            raise ValueError(f"block index {i} is out of range for depth {depth}")
    return nn.ModuleList(
        Block(
            dim=dim,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            drop_path=drop_path_rate * i / max(depth - 1, 1),
            norm_layer=norm_layer,
            act_layer=act_layer,
            use_rel_pos=use_rel_pos,
            rel_pos_zero_init=rel_pos_zero_init,
            window_size=0 if i in global_attn_indexes else window_size,
            use_residual_block=i in residual_block_indexes,
            input_size=input_size,
            use_fused_attn=use_fused_attn,
            mlp_layer=mlp_layer,
        )
        for i in range(depth)
    )


class ViT(Backbone):
    """Plain ViT of ViTDet: one stride-``patch_size`` output map named ``out_feature``.

    Window attention everywhere except the blocks in ``global_attn_indexes``.
    """

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
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = partial(nn.LayerNorm, eps=1e-6),
        act_layer: Callable[[], nn.Module] = nn.GELU,
        use_abs_pos: bool = True,
        use_rel_pos: bool = True,
        rel_pos_zero_init: bool = True,
        window_size: int = 14,
        global_attn_indexes: Sequence[int] = (),
        residual_block_indexes: Sequence[int] = (),
        use_act_checkpoint: bool = False,
        pretrain_img_size: int = 224,
        pretrain_use_cls_token: bool = True,
        use_fused_attn: bool = True,
        patch_embed_layer: Callable[..., nn.Module] = PatchEmbed,
        pos_embed_type: PosEmbedType = "learned",
        out_feature: str = "last_feat",
    ) -> None:
        super().__init__()
        self.pretrain_use_cls_token = pretrain_use_cls_token
        self.use_act_checkpoint = use_act_checkpoint
        # PatchEmbed, or a drop-in with the same arguments and output (ConvStem)
        self.patch_embed = patch_embed_layer(
            patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim
        )

        if use_abs_pos:
            # Pretraining layout, S = pretrain_img_size / patch_size: (1, [1 +] S * S, C)
            register_abs_pos_embed(
                self,
                pos_embed_type=pos_embed_type,
                embed_dim=embed_dim,
                grid_size=pretrain_img_size // patch_size,
                cls_token=pretrain_use_cls_token,
            )
        else:
            self.pos_embed = None
        self._pos_cache: dict[tuple, torch.Tensor] = {}

        grid = img_size // patch_size
        self.blocks = make_blocks(
            depth=depth,
            dim=embed_dim,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            drop_path_rate=drop_path_rate,
            norm_layer=norm_layer,
            act_layer=act_layer,
            use_rel_pos=use_rel_pos,
            rel_pos_zero_init=rel_pos_zero_init,
            input_size=(grid, grid),
            window_size=window_size,
            global_attn_indexes=global_attn_indexes,
            residual_block_indexes=residual_block_indexes,
            use_fused_attn=use_fused_attn,
        )

        self._out_feature_channels = {out_feature: embed_dim}
        self._out_feature_strides = {out_feature: patch_size}
        self._out_features = [out_feature]

        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def abs_pos(self, hw: tuple[int, int]) -> torch.Tensor:
        """Absolute position embedding resampled to grid ``hw``: (1, H, W, C).

        Outside autograd (inference) the resample is cached per grid size, dtype and device,
        and invalidated when the parameter changes (load_state_dict, optimizer step); not under
        ``torch.compile`` (frozen weights fold it into a constant).
        """
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return resample_abs_pos(self.pos_embed, self.pretrain_use_cls_token, hw)
        p = self.pos_embed
        key = (hw, p.dtype, p.device, p.data_ptr(), p._version)
        cached = self._pos_cache.get(key)
        if cached is None:
            if len(self._pos_cache) > 16:
                self._pos_cache.clear()
            cached = resample_abs_pos(p, self.pretrain_use_cls_token, hw)
            self._pos_cache[key] = cached
        return cached

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, C_in, H, W) -> {out_feature: (B, embed_dim, ceil(H / p), ceil(W / p))}."""
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.abs_pos((x.shape[1], x.shape[2]))
        for blk in self.blocks:
            if self.use_act_checkpoint and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return {self._out_features[0]: x.permute(0, 3, 1, 2)}  # b h w c -> b c h w
