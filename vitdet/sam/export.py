"""ONNX export of SAM: the prompt path (prompt encoder + mask decoder + upscaling) in the
release's input convention, and the image encoder; each checked against eager with
onnxruntime (:func:`max_abs_diffs`).

Prompt path, :class:`SamPromptForExport` (``sam_prompt.onnx``), inputs:

- ``image_embeddings`` (1, C, S, S) float32: ``SamPredictor.get_image_embedding()``;
- ``point_coords`` (1, N, 2) float32, (x, y) in the resized image
  (``predictor.transform.apply_coords``), N dynamic; a box is two points (its corners);
- ``point_labels`` (1, N) float32: 1 foreground, 0 background, 2 / 3 box top-left /
  bottom-right corner, -1 padding (add one padding point (0, 0) when there is no box);
- ``mask_input`` (1, 1, 4S, 4S) float32 low-res logits; ``has_mask_input`` (1,) float32 1 / 0;
- ``orig_im_size`` (2,) float32: (H, W) of the original image.

outputs: ``masks`` (1, M, H, W) logits in the original image (threshold at 0),
``iou_predictions`` (1, M), ``low_res_masks`` (1, M, 4S, 4S); M = 4 (the single-mask output
first, then the three multimask outputs), or 1 with ``return_single_mask`` (the release's rule:
output 0 for more than one prompt point, the best multimask output otherwise).

Image encoder, :class:`SamEncoderForExport` (``sam_encoder.onnx``): ``image`` (1, 3, I, I)
float32, the resized RGB image normalised ((x - pixel_mean) / pixel_std) and zero-padded
bottom/right (:func:`encoder_input`) -> ``image_embeddings`` (1, C, S, S).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import onnx
import onnxruntime
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modeling import onednn
from ..modeling.sam import Sam
from ..modeling.vit import Attention as ViTAttention
from .transforms import ResizeLongestSide

__all__ = [
    "ONNX_OPSET",
    "SamPromptForExport",
    "SamEncoderForExport",
    "encoder_input",
    "prompt_sample",
    "export_onnx",
    "run_onnx",
    "max_abs_diffs",
]

ONNX_OPSET = 17


class SamPromptForExport(nn.Module):
    """Prompt encoder + mask decoder + mask upscaling as a function of plain tensors."""

    input_names = (
        "image_embeddings",
        "point_coords",
        "point_labels",
        "mask_input",
        "has_mask_input",
        "orig_im_size",
    )
    output_names = ("masks", "iou_predictions", "low_res_masks")
    dynamic_axes = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}

    def __init__(self, model: Sam, *, return_single_mask: bool = False) -> None:
        super().__init__()
        self.model = model
        self.return_single_mask = return_single_mask

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pe, decoder = self.model.prompt_encoder, self.model.mask_decoder
        sparse = pe.embed_points(point_coords, point_labels)
        dense = has_mask_input * pe.embed_masks(mask_input) + (
            1 - has_mask_input
        ) * pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        low_res, iou = decoder.predict_masks(image_embeddings, pe.get_dense_pe(), sparse, dense)
        if self.return_single_mask:
            low_res, iou = self._select(low_res, iou, torch._shape_as_tensor(point_coords)[1])
        return self._upscale(low_res, orig_im_size), iou, low_res

    @staticmethod
    def _select(
        masks: torch.Tensor, iou: torch.Tensor, num_points: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Output 0 when more than 2 points (prompt + padding, or a box's two corners) are
        given, else the best-scoring multimask output: (1, M, ...) -> (1, 1, ...)."""
        single_first = torch.zeros_like(iou[:1])
        single_first[:, 0] = 1000.0
        score = iou + (num_points.to(iou.dtype) - 2.5) * single_first
        best = score.argmax(dim=1)
        return masks[:, best], iou[:, best]

    def _upscale(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        """(1, M, 4S, 4S) -> (1, M, H, W): to the padded square, crop the resized image, resize
        to the original (the geometry of ``Sam.postprocess_masks``, with (H, W) a tensor)."""
        size = self.model.img_size
        masks = F.interpolate(masks, (size, size), mode="bilinear", align_corners=False)
        # resized image: the longest side = size, the other rounded half up
        scale = size / orig_im_size.max()
        resized = torch.floor(orig_im_size * scale + 0.5).to(torch.int64)
        masks = masks[..., : resized[0], : resized[1]]
        hw = orig_im_size.to(torch.int64)
        return F.interpolate(masks, size=(hw[0], hw[1]), mode="bilinear", align_corners=False)


class SamEncoderForExport(nn.Module):
    """The image encoder on a normalised, padded image."""

    input_names = ("image",)
    output_names = ("image_embeddings",)
    dynamic_axes: dict[str, dict[int, str]] = {}

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.image_encoder = model.image_encoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(image)


def encoder_input(model: Sam, image: np.ndarray) -> torch.Tensor:
    """An (H, W, 3) uint8 RGB image -> the encoder's (1, 3, I, I) input, as ``SamPredictor``
    prepares it (resize of the longest side, normalisation, zero padding)."""
    resized = ResizeLongestSide(model.img_size).apply_image(image)
    tensor = torch.as_tensor(resized).permute(2, 0, 1).float()  # h w c -> c h w
    return model.preprocess(tensor)[None]


def prompt_sample(
    model: Sam,
    embeddings: torch.Tensor,
    coords: np.ndarray,
    labels: np.ndarray,
    original_size: tuple[int, int],
    mask_input: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """The prompt path's inputs for points (N, 2) and labels (N,) given in original-image
    pixels (box corners as labels 2 / 3, padding -1 included by the caller)."""
    coords = ResizeLongestSide(model.img_size).apply_coords(coords, original_size)
    low = 4 * model.prompt_encoder.image_embedding_size[0]
    has_mask = mask_input is not None
    return (
        embeddings,
        torch.as_tensor(coords, dtype=torch.float32)[None],
        torch.as_tensor(labels, dtype=torch.float32)[None],
        mask_input if has_mask else torch.zeros(1, 1, low, low),
        torch.tensor([float(has_mask)]),
        torch.tensor(original_size, dtype=torch.float32),
    )


@contextlib.contextmanager
def _tracing(module: nn.Module) -> Iterator[None]:
    """no_grad, oneDNN GEMMs off (a private op the tracer rejects) and the ViT's plain
    attention (the fused path's chunked bias, ``torch.add(..., out=)``, does not export;
    exported, SDPA is the same MatMul / Softmax graph anyway)."""
    fused = [m for m in module.modules() if isinstance(m, ViTAttention) and m.use_fused_attn]
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        stack.enter_context(onednn.disabled())
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "`torch.jit.", FutureWarning)
        for m in fused:
            m.use_fused_attn = False
            stack.callback(setattr, m, "use_fused_attn", True)
        yield


def export_onnx(
    module: SamPromptForExport | SamEncoderForExport,
    sample: Sequence[torch.Tensor],
    path: str | os.PathLike,
) -> None:
    """Trace ``module`` (eval mode, CPU) on ``sample`` and write a checked ONNX file."""
    with _tracing(module):
        torch.onnx.export(
            module,
            tuple(sample),
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=list(module.input_names),
            output_names=list(module.output_names),
            dynamic_axes=module.dynamic_axes,
        )
    onnx.checker.check_model(str(path))


def run_onnx(path: str | os.PathLike, inputs: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """Run an exported file with onnxruntime (CPU) on ``inputs`` in input order."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {n: t.numpy() for n, t in zip(names, inputs, strict=True)})


def max_abs_diffs(
    module: nn.Module, path: str | os.PathLike, inputs: Sequence[torch.Tensor]
) -> dict[str, float]:
    """Largest |onnxruntime - eager| per output (eager with the fast paths on)."""
    with torch.no_grad():
        eager = module(*inputs)
    eager = eager if isinstance(eager, tuple) else (eager,)
    exported = run_onnx(path, inputs)
    diffs = {}
    for name, a, b in zip(module.output_names, eager, exported, strict=True):
        if a.shape != b.shape:
            raise ValueError(f"{name}: eager {tuple(a.shape)} vs exported {b.shape}")
        diffs[name] = float(np.abs(a.numpy() - b).max()) if a.numel() else 0.0
    return diffs
