"""SAM's prompt encoder: points and boxes -> sparse tokens, a low-res mask -> a dense map.

Points and box corners are encoded by random Fourier features of their position (``pe_layer``)
plus a learned embedding per kind: label 0 (background point), 1 (foreground point), 2 / 3 (box
top-left / bottom-right corner), -1 (padding: ``not_a_point_embed`` alone). A box is the pair
of its corners with labels 2 and 3, which is how the ONNX convention passes boxes too.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn

from ..channel_norm import ChannelLayerNorm

__all__ = ["PositionEmbeddingRandom", "PromptEncoder"]

NUM_POINT_EMBEDDINGS = 4  # background, foreground, box corner 1, box corner 2
PAD_LABEL = -1


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of 2-D positions in [0, 1]^2 (Tancik et al. 2020).

    ``positional_encoding_gaussian_matrix``: a (2, num_pos_feats) N(0, scale^2) buffer, part
    of the state dict (the release's checkpoints carry it).
    """

    def __init__(self, *, num_pos_feats: int, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer(
            "positional_encoding_gaussian_matrix", scale * torch.randn(2, num_pos_feats)
        )

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """coords: (..., 2) as (x, y) in [0, 1] -> (..., 2 * num_pos_feats): [sin, cos]."""
        coords = 2 * coords - 1
        coords = 2 * math.pi * (coords @ self.positional_encoding_gaussian_matrix)
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """The encoding of every cell centre of an (H, W) grid: (2 * num_pos_feats, H, W)."""
        h, w = size
        matrix = self.positional_encoding_gaussian_matrix
        y = (torch.arange(h, device=matrix.device, dtype=torch.float32) + 0.5) / h
        x = (torch.arange(w, device=matrix.device, dtype=torch.float32) + 0.5) / w
        # h w 2 as (x, y)
        grid = torch.stack([x[None, :].expand(h, w), y[:, None].expand(h, w)], dim=-1)
        return self.encode(grid).permute(2, 0, 1)  # h w c -> c h w

    def forward_with_coords(
        self, coords: torch.Tensor, image_size: tuple[int, int]
    ) -> torch.Tensor:
        """coords: (B, N, 2) (x, y) in pixels of an image of (H, W) -> (B, N, C)."""
        h, w = image_size
        return self.encode((coords / coords.new_tensor([w, h])).float())  # in coords' precision


class PromptEncoder(nn.Module):
    """Prompts -> (sparse (B, N, embed_dim), dense (B, embed_dim, S, S)) embeddings.

    Coordinates are in pixels of the model's padded ``input_image_size`` input; ``mask_input``
    is (B, 1, 4S, 4S) logits (a previous low-res prediction).
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
        activation: Callable[[], nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = tuple(input_image_size)
        self.image_embedding_size = tuple(image_embedding_size)
        self.pe_layer = PositionEmbeddingRandom(num_pos_feats=embed_dim // 2)
        self.num_point_embeddings = NUM_POINT_EMBEDDINGS
        self.point_embeddings = nn.ModuleList(
            nn.Embedding(1, embed_dim) for _ in range(NUM_POINT_EMBEDDINGS)
        )
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        # (B, 1, 4S, 4S) -> (B, embed_dim, S, S); indexes 0, 1, 3, 4, 6 hold the weights
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            ChannelLayerNorm(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            ChannelLayerNorm(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """The image embedding's positional encoding: (1, embed_dim, S, S)."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """coords: (B, N, 2) pixels; labels: (B, N) in {-1, 0, 1, 2, 3} -> (B, N, embed_dim).

        Traceable (no data-dependent indexing): the ONNX export uses it as is.
        """
        pe = self.pe_layer.forward_with_coords(coords + 0.5, self.input_image_size)  # centres
        table = torch.cat([e.weight for e in self.point_embeddings])  # (4, C)
        labels = labels[..., None]
        per_label = table[labels.clamp(min=0).long().squeeze(-1)]  # (B, N, C)
        return torch.where(labels == PAD_LABEL, self.not_a_point_embed.weight, pe + per_label)

    def embed_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """(B, 1, 4S, 4S) mask logits -> (B, embed_dim, S, S)."""
        return self.mask_downscaling(masks)

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed the prompts given (the release's signature).

        Args:
            points: coords (B, N, 2) (x, y) pixels of the padded input and labels (B, N); a
                padding point is appended when there is no box.
            boxes: (B, 4) XYXY pixels of the padded input.
            masks: (B, 1, 4S, 4S) mask logits.
        Returns:
            sparse (B, N', embed_dim) and dense (B, embed_dim, S, S) embeddings.
        """
        device = self.no_mask_embed.weight.device
        coords, labels = [], []
        if points is not None:
            coords.append(points[0])
            labels.append(points[1])
            if boxes is None:  # a padding point
                b = points[0].shape[0]
                coords.append(torch.zeros(b, 1, 2, device=device))
                labels.append(torch.full((b, 1), PAD_LABEL, device=device))
        if boxes is not None:
            coords.append(boxes.reshape(-1, 2, 2))  # b (2 2) -> b 2 2: two corners
            corner_labels = torch.tensor([[2, 3]], device=device)
            labels.append(corner_labels.expand(boxes.shape[0], 2))
        if coords:
            labels = [lab.to(device=device, dtype=torch.int64) for lab in labels]
            sparse = self.embed_points(torch.cat(coords, dim=1), torch.cat(labels, dim=1))
            bs = sparse.shape[0]
        else:
            bs = masks.shape[0] if masks is not None else 1
            sparse = torch.empty(bs, 0, self.embed_dim, device=device)
        if masks is not None:
            dense = self.embed_masks(masks)
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)
        return sparse, dense
