"""SAM's mask decoder: prompt tokens + image embedding -> mask logits and IoU predictions."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from ..channel_norm import ChannelLayerNorm
from .mlp import HeadMlp

__all__ = ["MaskDecoder"]


class MaskDecoder(nn.Module):
    """One IoU token and ``num_multimask_outputs + 1`` mask tokens go through the two-way
    transformer with the prompt tokens; each mask token's hypernetwork MLP gives the weights of
    a dot product with the x4-upscaled image tokens (mask logits at 4S x 4S); the IoU head
    predicts each mask's quality. Output 0 is the single-mask output, 1.. the multimask ones.
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: Callable[[], nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        # (B, C, S, S) -> (B, C / 8, 4S, 4S); weights at indexes 0, 1, 3
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            ChannelLayerNorm(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            HeadMlp(
                in_dim=transformer_dim,
                hidden_dim=transformer_dim,
                out_dim=transformer_dim // 8,
                num_layers=3,
            )
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = HeadMlp(
            in_dim=transformer_dim,
            hidden_dim=iou_head_hidden_dim,
            out_dim=self.num_mask_tokens,
            num_layers=iou_head_depth,
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks (B, M, 4S, 4S) logits and IoU predictions (B, M): M = 3 outputs 1..3 with
        ``multimask_output``, else output 0 alone (the release's signature)."""
        masks, iou_pred = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        keep = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, keep], iou_pred[:, keep]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every output: masks (B, num_mask_tokens, 4S, 4S), IoU (B, num_mask_tokens).

        Args:
            image_embeddings: (1 or B, C, S, S), one image's embedding shared by B prompts or
                one per prompt.
            image_pe: (1, C, S, S).
            sparse_prompt_embeddings: (B, N, C); dense_prompt_embeddings: (1 or B, C, S, S).
        """
        b = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.expand(b, -1, -1), sparse_prompt_embeddings], dim=1)
        src = image_embeddings + dense_prompt_embeddings
        src = src.expand(b, -1, -1, -1) if src.shape[0] == 1 else src
        _, c, h, w = src.shape
        hs, src = self.transformer(src, image_pe.expand(b, -1, -1, -1), tokens)
        iou_token_out = hs[:, 0]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens]

        # b (h w) c -> b c h w, then x4 upscaling: b c/8 4h 4w
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )  # b m c/8
        _, c8, uh, uw = upscaled.shape
        masks = (hyper_in @ upscaled.view(b, c8, uh * uw)).view(b, -1, uh, uw)
        return masks, self.iou_prediction_head(iou_token_out)
