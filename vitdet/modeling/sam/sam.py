"""The Sam module: image encoder + prompt encoder + mask decoder, and the image geometry.

Input geometry (the release's): RGB, longest side resized to ``img_size`` (1024), normalised
with ``pixel_mean`` / ``pixel_std`` (0-255 units), zero-padded bottom/right to a square. Masks
come out at 4S x 4S = 256 x 256 (low-res logits) for the padded square; ``postprocess_masks``
upsamples them to the square, crops the padding and resizes to the original image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .image_encoder import SamImageEncoder
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder

__all__ = ["Sam"]


class Sam(nn.Module):
    """Segment Anything (Kirillov et al. 2023) on this project's ViT.

    The state dict is the release's key for key and shape for shape (``image_encoder.*``,
    ``prompt_encoder.*``, ``mask_decoder.*``; the pixel statistics are not in it).
    """

    mask_threshold: float = 0.0  # logits above it are in the mask
    image_format: str = "RGB"

    def __init__(
        self,
        *,
        image_encoder: SamImageEncoder,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def img_size(self) -> int:
        """Side of the padded square input (1024)."""
        return self.image_encoder.img_size

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """(..., 3, h, w) resized RGB 0-255 -> normalised, zero-padded to (..., 3, S, S)."""
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.img_size - w, 0, self.img_size - h))

    def postprocess_masks(
        self,
        masks: torch.Tensor,
        input_size: tuple[int, ...],
        original_size: tuple[int, ...],
    ) -> torch.Tensor:
        """(B, M, 4S, 4S) low-res logits -> (B, M, H, W) logits in the original image.

        ``input_size``: (h, w) of the resized image inside the padded square.
        """
        masks = F.interpolate(
            masks, (self.img_size, self.img_size), mode="bilinear", align_corners=False
        )
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)

    @torch.no_grad()
    def forward(
        self, batched_input: list[dict[str, Any]], multimask_output: bool
    ) -> list[dict[str, torch.Tensor]]:
        """End to end on a batch of images, the release's interface.

        Each input: ``image`` (3, h, w) resized RGB 0-255, ``original_size`` (H, W), and
        optionally ``point_coords`` (B, N, 2) with ``point_labels`` (B, N), ``boxes`` (B, 4),
        ``mask_inputs`` (B, 1, 4S, 4S), coordinates in the resized image. Each output:
        ``masks`` (B, M, H, W) bool, ``iou_predictions`` (B, M), ``low_res_logits``
        (B, M, 4S, 4S).
        """
        images = torch.stack([self.preprocess(x["image"]) for x in batched_input])
        embeddings = self.image_encoder(images)
        outputs = []
        for record, embedding in zip(batched_input, embeddings, strict=True):
            points = None
            if "point_coords" in record:
                points = (record["point_coords"], record["point_labels"])
            sparse, dense = self.prompt_encoder(
                points=points, boxes=record.get("boxes"), masks=record.get("mask_inputs")
            )
            low_res, iou = self.mask_decoder(
                image_embeddings=embedding[None],
                image_pe=self.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
            )
            masks = self.postprocess_masks(
                low_res, record["image"].shape[-2:], record["original_size"]
            )
            outputs.append(
                {
                    "masks": masks > self.mask_threshold,
                    "iou_predictions": iou,
                    "low_res_logits": low_res,
                }
            )
        return outputs
