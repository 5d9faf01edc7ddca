"""Export a ViTDet detector, or its backbone alone, to TorchScript (tracing) and ONNX.

Both are traced on the CPU at one fixed input size; the number of detections N is not fixed
(it is computed in the graph), so one export serves every image. detectron2's ops lower to
standard ones: torchvision's ``roi_align`` (detectron2 without its compiled ops) to ONNX
``RoiAlign`` (``half_pixel``, opset >= 16), ``batched_nms`` to ``NonMaxSuppression``.

Full detector, :class:`DetectorForExport` (a ``GeneralizedRCNN`` at inference, no
``detector_postprocess``), inputs:

- ``image`` (3, H, W) float32, 0..255, channels in the model's ``input_format`` (RGB for
  ViTDet): the image after the test-time resize, at the top-left of an H x W canvas; the rest of
  the canvas is ignored (set to the pad value inside, then padded to ``square_pad``).
- ``image_size`` (2,) int64: (h, w) of the resized image, h <= H and w <= W.

outputs, in resized-image pixels (the caller scales them back to the original image):

- ``boxes`` (N, 4) float32 XYXY; ``classes`` (N,) int64; ``scores`` (N,) float32;
- ``masks`` (N, 1, M, M) float32: the box's mask probabilities (M = 28) for its class, to be
  pasted into the box (:func:`detectron2.layers.paste_masks_in_image`, or ``docs/EXPORT.md``).

Backbone, :class:`BackboneForExport`: ``image`` (1, 3, H, W) float32 normalised as the model
does, ``(x - pixel_mean) / pixel_std``, zero padding -> ``p2`` .. ``p6`` (1, C, H / s, W / s).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime
import torch
import torch.nn as nn
from detectron2.data.transforms import ResizeShortestEdge
from detectron2.export.torchscript_patch import patch_builtin_len
from detectron2.modeling import Backbone, GeneralizedRCNN
from detectron2.structures import ImageList

from .modeling import onednn
from .modeling.vit import Attention
from .predictor import Predictor

__all__ = [
    "ONNX_OPSET",
    "METADATA_KEY",
    "TOLERANCES",
    "FEATURE_TOLERANCE",
    "DetectorForExport",
    "BackboneForExport",
    "normalize_canvas",
    "canvas_input",
    "eager_detections",
    "io_spec",
    "export_metadata",
    "export_torchscript",
    "export_onnx",
    "read_metadata",
    "run_torchscript",
    "run_onnx",
    "max_abs_diffs",
    "out_of_tolerance",
]

# RoiAlign's coordinate_transformation_mode ("half_pixel" = detectron2's aligned=True) needs 16;
# 17 adds LayerNormalization.
ONNX_OPSET = 17
# Where the I/O spec, class names and test resize are stored: the name of an ONNX
# metadata_props entry, and of a TorchScript extra file (``METADATA_KEY + ".json"``).
METADATA_KEY = "vitdet"
# Largest |exported - eager| accepted per output, float32 on the CPU: boxes in pixels, the
# rest in their own units (classes must match exactly). Measured: see docs/EXPORT.md.
TOLERANCES = {"boxes": 1e-2, "classes": 0.0, "scores": 1e-4, "masks": 1e-3}
FEATURE_TOLERANCE = 1e-3  # every backbone output (p2 .. p6)


class DetectorForExport(nn.Module):
    """A detectron2 ``GeneralizedRCNN`` at inference, as a function of plain tensors.

    ``forward(image, image_size) -> (boxes, classes, scores, masks)``; shapes in the module
    docstring. Equals ``model.inference([{"image": image[:, :h, :w]}], do_postprocess=False)``.
    """

    input_names = ("image", "image_size")
    output_names = ("boxes", "classes", "scores", "masks")
    dynamic_axes = {name: {0: "N"} for name in output_names}

    def __init__(self, model: GeneralizedRCNN) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, image: torch.Tensor, image_size: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        model = self.model
        x = normalize_canvas(model, image, image_size)
        padded = ImageList.from_tensors(
            [x],
            model.backbone.size_divisibility,
            padding_constraints=model.backbone.padding_constraints,
        ).tensor
        # Proposals and boxes are clipped to the resized image, not to the canvas.
        images = ImageList(padded, [(image_size[0], image_size[1])])
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features, None)
        (instances,), _ = model.roi_heads(images, features, proposals, None)
        return (
            instances.pred_boxes.tensor,
            instances.pred_classes,
            instances.scores,
            instances.pred_masks,
        )


class BackboneForExport(nn.Module):
    """A detectron2 ``Backbone`` returning its feature maps as a tuple, in output order."""

    input_names = ("image",)
    dynamic_axes: dict[str, dict[int, str]] = {}

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone
        self.output_names = tuple(backbone.output_shape())

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """image: (1, 3, H, W) normalised -> ((1, C, H / 4, W / 4), ..., (1, C, H / 64, W / 64))."""
        features = self.backbone(image)
        return tuple(features[name] for name in self.output_names)


def normalize_canvas(
    model: GeneralizedRCNN, image: torch.Tensor, image_size: torch.Tensor
) -> torch.Tensor:
    """(3, H, W) canvas -> (x - pixel_mean) / pixel_std inside its top-left (h, w) =
    ``image_size``, zero (the model's pad value after normalisation) outside."""
    x = (image - model.pixel_mean) / model.pixel_std
    rows = torch.arange(x.shape[1], device=x.device) < image_size[0]
    cols = torch.arange(x.shape[2], device=x.device) < image_size[1]
    return x * (rows[:, None] & cols[None, :])


def canvas_input(image: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The detector's export inputs for a resized (3, h, w) image: a (3, height, width) float32
    canvas holding it at the top-left (zeros elsewhere) and its (2,) int64 size (h, w)."""
    _, h, w = image.shape
    if h > height or w > width:
        raise ValueError(f"a {h} x {w} image does not fit the {height} x {width} input")
    canvas = image.new_zeros((3, height, width), dtype=torch.float32)
    canvas[:, :h, :w] = image
    return canvas, torch.tensor([h, w], dtype=torch.int64)


def eager_detections(model: GeneralizedRCNN, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The reference for :class:`DetectorForExport`: (boxes, classes, scores, masks) of the
    eager model on one resized (3, h, w) image, in resized-image pixels."""
    with torch.inference_mode():
        (instances,) = model.inference([{"image": image}], do_postprocess=False)
    return (
        instances.pred_boxes.tensor,
        instances.pred_classes,
        instances.scores,
        instances.pred_masks,
    )


def io_spec(module: nn.Module, sample: Sequence[torch.Tensor]) -> dict[str, dict]:
    """Names, shapes and dtypes of the inputs and outputs of a ``*ForExport`` wrapper, dynamic
    sizes by name ("N"): ``{"inputs": {name: {"shape": [...], "dtype": "float32"}}, "outputs":
    ...}``."""
    with torch.no_grad():
        results = module(*sample)

    def entry(tensor: torch.Tensor, dynamic: Mapping[int, str]) -> dict:
        shape = [dynamic.get(i, size) for i, size in enumerate(tensor.shape)]
        return {"shape": shape, "dtype": str(tensor.dtype).removeprefix("torch.")}

    names_tensors = [(module.input_names, sample), (module.output_names, results)]
    inputs, outputs = (
        {name: entry(t, module.dynamic_axes.get(name, {})) for name, t in zip(n, ts, strict=True)}
        for n, ts in names_tensors
    )
    return {"inputs": inputs, "outputs": outputs}


def export_metadata(predictor: Predictor) -> dict[str, object]:
    """What a user of an export needs besides the I/O spec, as JSON-able values.

    ``input_format``, ``pixel_mean`` / ``pixel_std`` (0..255 units), ``class_names`` (index =
    class id), ``test_resize`` (the test-time augmentations, as text) and, when that is one
    ``ResizeShortestEdge`` with a single short side (the ViTDet recipes), its
    ``short_edge_length`` and ``max_size``.
    """
    model = predictor.model
    metadata = {
        "input_format": model.input_format,
        "pixel_mean": model.pixel_mean.flatten().tolist(),
        "pixel_std": model.pixel_std.flatten().tolist(),
        "class_names": list(predictor.metadata.thing_classes),
        "test_resize": [repr(a) for a in predictor.augmentations.augs],
    }
    augs = predictor.augmentations.augs
    if len(augs) == 1 and isinstance(augs[0], ResizeShortestEdge):
        shorts = set(augs[0].short_edge_length)  # (a, b): choices or a range
        if len(shorts) == 1:
            metadata.update(short_edge_length=shorts.pop(), max_size=augs[0].max_size)
    return metadata


@contextlib.contextmanager
def _expected_warnings() -> Iterator[None]:
    """Silence the warnings every export gives, and only those."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # detectron2's asserts
        # torch 2.14 marks torch.jit (trace, save, load) deprecated; it still works.
        warnings.filterwarnings("ignore", "`torch.jit.", FutureWarning)
        # Said of the mask head's masks[arange(N), classes]: neither index is ever negative.
        warnings.filterwarnings("ignore", "Exporting aten::index operator", UserWarning)
        yield


@contextlib.contextmanager
def _tracing(module: nn.Module, *, plain_attention: bool) -> Iterator[None]:
    """Trace ``module`` under no_grad with the number of detections as a value, not a constant.

    detectron2's heads call len() on Instances: patched, the count stays a traced value.
    The oneDNN linear layers (``vitdet.modeling.onednn``, a CPU fast path) are a custom op the
    tracer rejects ("unsupported input list type: Scalar?"): ``onednn.disabled()`` while
    tracing. With ``plain_attention``, the ViT attends with its reference path
    (``use_fused_attn=False``): the fused path's chunked bias (``torch.add(..., out=)``) does not
    export to ONNX ("add() takes from 3 to 4 positional arguments but 5 were given"), and
    exported, SDPA is the same MatMul / Softmax graph anyway.
    """
    fused = [m for m in module.modules() if isinstance(m, Attention) and m.use_fused_attn]
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        stack.enter_context(patch_builtin_len())
        stack.enter_context(_expected_warnings())
        stack.enter_context(onednn.disabled())
        if plain_attention:
            for m in fused:
                m.use_fused_attn = False
                stack.callback(setattr, m, "use_fused_attn", True)
        yield


def export_torchscript(
    module: nn.Module,
    sample: Sequence[torch.Tensor],
    path: str | os.PathLike,
    *,
    metadata: Mapping[str, object],
) -> None:
    """Trace ``module`` (a ``*ForExport`` wrapper, eval mode, CPU) on ``sample`` and save it,
    with ``metadata`` (JSON) as the extra file ``vitdet.json``.

    Loading needs torch and torchvision (for its ``roi_align`` / ``nms`` ops) only.
    """
    with _tracing(module, plain_attention=False):
        traced = torch.jit.trace(module, tuple(sample), check_trace=False)
    torch.jit.save(traced, str(path), _extra_files={f"{METADATA_KEY}.json": json.dumps(metadata)})


def export_onnx(
    module: nn.Module,
    sample: Sequence[torch.Tensor],
    path: str | os.PathLike,
    *,
    metadata: Mapping[str, object],
) -> None:
    """Export ``module`` (a ``*ForExport`` wrapper, eval mode, CPU) to ONNX with the
    TorchScript-based exporter at opset ``ONNX_OPSET``, with ``metadata`` (JSON) in
    ``metadata_props["vitdet"]``."""
    with _tracing(module, plain_attention=True):
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
    proto = onnx.load(str(path), load_external_data=False)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))


def read_metadata(path: str | os.PathLike) -> dict:
    """The ``metadata`` and I/O spec stored by :func:`export_torchscript` / :func:`export_onnx`."""
    path = str(path)
    if not zipfile.is_zipfile(path):  # ONNX (protobuf); TorchScript archives are zip files
        props = onnx.load(path, load_external_data=False).metadata_props
        return json.loads({p.key: p.value for p in props}[METADATA_KEY])
    with zipfile.ZipFile(path) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(f"/extra/{METADATA_KEY}.json")]
        return json.loads(archive.read(name))


def run_torchscript(path: str | os.PathLike, inputs: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """Outputs of a saved TorchScript export on ``inputs``, as numpy arrays."""
    with _expected_warnings():
        module = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return [t.numpy() for t in module(*inputs)]


def run_onnx(path: str | os.PathLike, inputs: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """Outputs of an ONNX export on ``inputs`` with onnxruntime on the CPU."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {n: t.numpy() for n, t in zip(names, inputs, strict=True)})


def max_abs_diffs(
    names: Sequence[str], expected: Sequence[torch.Tensor], actual: Sequence[np.ndarray]
) -> dict[str, float]:
    """Largest |actual - expected| per output; ``inf`` where the shapes differ (e.g. another
    number of detections)."""
    diffs = {}
    for name, want, got in zip(names, expected, actual, strict=True):
        want = want.detach().cpu().numpy().astype(np.float64)
        got = np.asarray(got, dtype=np.float64)
        if want.shape != got.shape:
            diffs[name] = float("inf")
        else:
            diffs[name] = float(np.abs(want - got).max()) if want.size else 0.0
    return diffs


def out_of_tolerance(diffs: Mapping[str, float]) -> list[str]:
    """Names of the outputs whose difference exceeds ``TOLERANCES`` (``FEATURE_TOLERANCE``
    for the backbone's maps)."""
    return [name for name, d in diffs.items() if d > TOLERANCES.get(name, FEATURE_TOLERANCE)]
