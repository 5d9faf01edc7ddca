"""Masked autoencoder (MAE, He et al. 2021) pretraining of the project's ViT.

A random 75% of the patches of each image is masked; the encoder sees only the visible ones
(no mask tokens in the encoder); a light decoder of its own width and depth fills the sequence
with a shared mask token, adds its own fixed position embeddings and predicts the pixels of
every patch; the loss is the MSE on the masked patches only, against per-patch normalised
pixels (``norm_pix_loss``).

The encoder is ``ViTEncoder``: the backbone's ``Block`` with global attention everywhere and
no relative positions. A random visible subset has no window grid, so window attention and the
decomposed relative positions (functions of a window's 2-D layout) cannot be applied while
pretraining; ViTDet adds them at fine-tuning (zero-initialised, ``VIT_KEYS_NOT_PRETRAINED``).
Encoder position embeddings are fixed 2-D sin-cos, as in MAE.

State-dict names are the MAE release's: encoder keys ``cls_token``, ``pos_embed``,
``patch_embed.*``, ``blocks.N.*``, ``norm.*``; decoder keys ``mask_token`` and ``decoder_*``,
which ``vitdet.checkpoint.load_checkpoint`` drops when it initialises a ViTDet model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

import torch
import torch.nn as nn

from .encoder import ViTEncoder, init_weights
from .pos_embed import resample_abs_pos
from .sincos import sincos_pos_embed
from .vit import PatchEmbed, make_blocks

__all__ = [
    "MaskedAutoencoderViT",
    "Masking",
    "random_masking",
    "patchify",
    "unpatchify",
    "normalize_patches",
    "patch_stats",
    "patch_grid",
    "pixel_mask",
]


def patch_grid(imgs: torch.Tensor, patch_size: int) -> tuple[int, int]:
    """(h, w) patches of images (..., H, W) whose sides are multiples of the patch size."""
    height, width = imgs.shape[-2:]
    if height % patch_size or width % patch_size:
        raise ValueError(f"image size {height}x{width} is not a multiple of patch {patch_size}")
    return height // patch_size, width // patch_size


def patchify(imgs: torch.Tensor, patch_size: int) -> torch.Tensor:
    """imgs: (B, C, H, W) -> (B, h * w, p * p * C), pixels of a patch in (row, column, channel)
    order (MAE's); H and W must be multiples of p."""
    b, c = imgs.shape[:2]
    p = patch_size
    h, w = patch_grid(imgs, p)
    x = imgs.reshape(b, c, h, p, w, p)
    # b c h p w q -> b (h w) (p q c)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, h * w, p * p * c)


def unpatchify(patches: torch.Tensor, patch_size: int, grid: tuple[int, int]) -> torch.Tensor:
    """patches: (B, h * w, p * p * C) -> (B, C, h * p, w * p); the inverse of ``patchify``."""
    b = patches.shape[0]
    p = patch_size
    h, w = grid
    x = patches.reshape(b, h, w, p, p, -1)
    # b h w p q c -> b c (h p) (w q)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, -1, h * p, w * p)


def patch_stats(patches: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of each patch (last dim), kept as (..., 1).

    The variance is the unbiased one, as in MAE (``Tensor.var``), plus ``eps``.
    """
    mean = patches.mean(dim=-1, keepdim=True)
    return mean, (patches.var(dim=-1, keepdim=True) + eps).sqrt()


def normalize_patches(patches: torch.Tensor) -> torch.Tensor:
    """Each patch (last dim) to zero mean and unit variance: MAE's norm-pix target."""
    mean, std = patch_stats(patches)
    return (patches - mean) / std


class Masking(NamedTuple):
    """One random masking of B token grids of N = h * w tokens, K of them kept visible."""

    grid: tuple[int, int]  # (h, w)
    ids_keep: torch.Tensor  # (B, K) indices of the visible tokens, in shuffled order
    ids_restore: torch.Tensor  # (B, N) position of each token in [visible, masked] order
    mask: torch.Tensor  # (B, N) float, 1 = masked, 0 = visible, in grid order


def random_masking(
    batch_size: int,
    grid: tuple[int, int],
    mask_ratio: float,
    *,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> Masking:
    """Mask round(N * mask_ratio) tokens of each sequence, chosen uniformly at random (argsort of
    i.i.d. uniform noise per image)."""
    num_tokens = grid[0] * grid[1]
    num_keep = num_tokens - round(num_tokens * mask_ratio)
    if not 0 < num_keep <= num_tokens:
        raise ValueError(f"mask_ratio {mask_ratio} leaves {num_keep} of {num_tokens} tokens")
    noise = torch.rand(batch_size, num_tokens, device=device, generator=generator)
    ids_shuffle = noise.argsort(dim=1)  # ascending: the first num_keep are kept
    ids_restore = ids_shuffle.argsort(dim=1)
    mask = torch.ones(batch_size, num_tokens, device=device)
    mask[:, :num_keep] = 0
    return Masking(grid, ids_shuffle[:, :num_keep], ids_restore, mask.gather(1, ids_restore))


def pixel_mask(masking: Masking, patch_size: int) -> torch.Tensor:
    """The token mask as pixels: (B, 1, h * p, w * p), 1 on masked patches."""
    h, w = masking.grid
    # b (h w) -> b 1 h w -> b 1 (h p) (w p)
    pixels = masking.mask.reshape(-1, 1, h, w)
    return pixels.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)


def _gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """x: (B, N, C), ids: (B, M) -> (B, M, C), x[b, ids[b, m]]."""
    return x.gather(1, ids[..., None].expand(-1, -1, x.shape[-1]))


class MaskedAutoencoderViT(ViTEncoder):
    """MAE with a ``ViTEncoder`` (sin-cos positions, cls token) and a light decoder.

    ``forward`` takes RGB pixels in 0-255 units, normalises them with ``pixel_mean`` /
    ``pixel_std`` (the detector's) and returns ``{"loss_mae": loss}`` for the trainer;
    ``forward_encoder``, ``forward_decoder`` and ``loss`` are its steps, on normalised images.

    The masked patches' pixels are zeroed before the patch embedding: with a
    ``patch_embed_layer`` whose receptive field crosses patch borders (``ConvStem``) visible
    tokens then carry nothing of the masked pixels; for the patchify conv this changes nothing.
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
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        mlp_ratio: float = 4.0,
        norm_layer: Callable[[int], nn.Module] = partial(nn.LayerNorm, eps=1e-6),
        patch_embed_layer: Callable[..., nn.Module] = PatchEmbed,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
        pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
    ) -> None:
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            norm_layer=norm_layer,
            patch_embed_layer=patch_embed_layer,
            pos_embed_type="sincos",
            use_cls_token=True,
        )
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        # Input normalisation as in the detector (0-255 units); not part of the checkpoint.
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        grid = (self.grid_size, self.grid_size)
        self.register_buffer(
            "decoder_pos_embed", sincos_pos_embed(decoder_embed_dim, grid, cls_token=True)
        )
        self.decoder_blocks = make_blocks(
            depth=decoder_depth,
            dim=decoder_embed_dim,
            num_heads=decoder_num_heads,
            mlp_ratio=mlp_ratio,
            norm_layer=norm_layer,
        )
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_chans)

        nn.init.normal_(self.mask_token, std=0.02)
        for part in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            part.apply(init_weights)

    def forward_encoder(
        self, imgs: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, Masking]:
        """imgs: (B, C, H, W) -> latent (B, 1 + K, C) of the cls and the K visible tokens."""
        grid = patch_grid(imgs, self.patch_size)
        masking = random_masking(
            imgs.shape[0], grid, self.mask_ratio, device=imgs.device, generator=generator
        )
        visible_pixels = 1 - pixel_mask(masking, self.patch_size).to(imgs.dtype)
        tokens = self.embed(imgs * visible_pixels)
        return self.encode(_gather_tokens(tokens, masking.ids_keep)), masking

    def forward_decoder(self, latent: torch.Tensor, masking: Masking) -> torch.Tensor:
        """latent: (B, 1 + K, C) -> predicted pixels of every patch (B, N, p * p * C_in)."""
        x = self.decoder_embed(latent)
        b, n = masking.ids_restore.shape
        mask_tokens = self.mask_token.expand(b, n - (x.shape[1] - 1), -1).to(x.dtype)
        # [visible, masked] order -> grid order
        patches = _gather_tokens(torch.cat([x[:, 1:], mask_tokens], dim=1), masking.ids_restore)
        pos = resample_abs_pos(self.decoder_pos_embed, True, masking.grid).reshape(1, n, -1)
        x = torch.cat([x[:, :1] + self.decoder_pos_embed[:, :1], patches + pos], dim=1)
        x = x[:, None]  # b n c -> b 1 n c: a 1 x N token map for the NHWC blocks
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x[:, 0]))[:, 1:]  # without the cls

    def target(self, imgs: torch.Tensor) -> torch.Tensor:
        """What the decoder predicts: (B, N, p * p * C_in) pixels, normalised per patch if
        ``norm_pix_loss``."""
        patches = patchify(imgs, self.patch_size)
        return normalize_patches(patches) if self.norm_pix_loss else patches

    def loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean over the masked patches of the per-patch mean squared error; visible patches
        do not count."""
        per_patch = (pred - self.target(imgs)).pow(2).mean(dim=-1)  # (B, N)
        return (per_patch * mask).sum() / mask.sum()

    def reconstruction(
        self, imgs: torch.Tensor, pred: torch.Tensor, masking: Masking
    ) -> torch.Tensor:
        """The image the model sees as reconstructed: (B, C, H, W), normalised like ``imgs``.

        Visible patches are the input's, masked ones the prediction's. With ``norm_pix_loss``
        the predictions are per-patch normalised, so they are shown with the mean and variance
        of the true patch (MAE's visualisation): the picture shows structure, not brightness.
        """
        if self.norm_pix_loss:
            mean, std = patch_stats(patchify(imgs, self.patch_size))
            pred = pred * std + mean
        predicted = unpatchify(pred, self.patch_size, masking.grid)
        masked = pixel_mask(masking, self.patch_size)
        return imgs * (1 - masked) + predicted * masked

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, C, H, W) pixels in 0-255 units (uint8 or float) -> (x - mean) / std."""
        return (images.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images: (B, C, H, W) RGB pixels in 0-255 units -> ``{"loss_mae": scalar}``."""
        imgs = self.normalize(images)
        latent, masking = self.forward_encoder(imgs)
        pred = self.forward_decoder(latent, masking)
        return {"loss_mae": self.loss(imgs, pred, masking.mask)}
