"""``SamPredictor``: embed an image once, then predict masks for many prompts.

The release's interface (``set_image``, ``predict``, ``predict_torch``, ``transform``,
``get_image_embedding``...), so a script written for ``segment_anything`` runs by changing its
import. ``predict`` takes prompts in original-image pixels; ``predict_torch`` takes them already
mapped into the resized image (``predictor.transform.apply_coords_torch`` / ``apply_boxes_torch``).
"""

from __future__ import annotations

import numpy as np
import torch

from ..modeling.sam import Sam
from .transforms import ResizeLongestSide

__all__ = ["SamPredictor"]


class SamPredictor:
    """Repeated mask prediction on one image embedding."""

    def __init__(self, sam_model: Sam) -> None:
        self.model = sam_model
        self.transform = ResizeLongestSide(sam_model.image_encoder.img_size)
        self.reset_image()

    @property
    def device(self) -> torch.device:
        return self.model.device

    def reset_image(self) -> None:
        """Forget the current image."""
        self.is_image_set = False
        self.features: torch.Tensor | None = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Embed ``image``: (H, W, 3) uint8, channels in ``image_format`` ("RGB" or "BGR")."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
        if image_format != self.model.image_format:
            image = image[..., ::-1]
        resized = self.transform.apply_image(np.ascontiguousarray(image))
        tensor = torch.as_tensor(resized, device=self.device).permute(2, 0, 1)  # h w c -> c h w
        self.set_torch_image(tensor.contiguous()[None], image.shape[:2])

    @torch.no_grad()
    def set_torch_image(
        self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]
    ) -> None:
        """Embed an image already resized by ``transform``: (1, 3, h, w), max(h, w) = img_size,
        RGB 0-255; ``original_image_size``: (H, W) before the resize."""
        img_size = self.model.image_encoder.img_size
        shape = tuple(transformed_image.shape)
        if len(shape) != 4 or shape[1] != 3 or max(shape[2:]) != img_size:
            raise ValueError(f"expected (B, 3, h, w) with a long side of {img_size}, got {shape}")
        self.reset_image()
        self.original_size = tuple(int(s) for s in original_image_size)
        self.input_size = tuple(shape[-2:])
        self.features = self.model.image_encoder(self.model.preprocess(transformed_image.float()))
        self.is_image_set = True

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for one prompt set, in original-image pixels.

        Args:
            point_coords: (N, 2) (x, y); point_labels: (N,) 1 foreground, 0 background.
            box: (4,) XYXY.
            mask_input: (1, 256, 256) low-res logits of a previous prediction.
            multimask_output: three masks (for an ambiguous prompt) instead of one.
            return_logits: logits instead of boolean masks.
        Returns:
            masks (M, H, W) bool (float32 logits with ``return_logits``), IoU predictions
            (M,), low-res logits (M, 256, 256); M = 3 with ``multimask_output``, else 1.
        """
        self._check_image_set()
        coords = labels = boxes = masks = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must be given with point_coords")
            coords = self._tensor(self.transform.apply_coords(point_coords, self.original_size))
            coords = coords[None]
            labels = torch.as_tensor(point_labels, dtype=torch.int, device=self.device)[None]
        if box is not None:
            if np.size(box) != 4:
                raise ValueError(
                    f"predict takes one (4,) box, got {np.shape(box)}: use predict_torch"
                )
            boxes = self._tensor(self.transform.apply_boxes(box, self.original_size))
        if mask_input is not None:
            masks = self._tensor(mask_input)[None]
        masks, iou, low_res = self.predict_torch(
            coords, labels, boxes, masks, multimask_output, return_logits=return_logits
        )
        return masks[0].cpu().numpy(), iou[0].cpu().numpy(), low_res[0].cpu().numpy()

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masks for B prompt sets at once, prompts in resized-image pixels.

        Args:
            point_coords: (B, N, 2); point_labels: (B, N).
            boxes: (B, 4) XYXY.
            mask_input: (B, 1, 256, 256) low-res logits.
        Returns:
            masks (B, M, H, W), IoU predictions (B, M), low-res logits (B, M, 256, 256).
        """
        self._check_image_set()
        points = None if point_coords is None else (point_coords, point_labels)
        sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        low_res, iou = self.model.mask_decoder(
            image_embeddings=self.features,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )
        masks = self.model.postprocess_masks(low_res, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou, low_res

    def get_image_embedding(self) -> torch.Tensor:
        """The current image's embedding: (1, C, S, S) (C = 256, S = 64 for SAM)."""
        self._check_image_set()
        return self.features

    def _check_image_set(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("set an image with .set_image(...) before predicting")

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, dtype=torch.float, device=self.device)
