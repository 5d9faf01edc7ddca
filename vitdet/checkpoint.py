"""Checkpoints from elsewhere: safe reading, pure converters, strict loading with one short report.

Formats (``source_format``):

- ``vitdet``: this project's own detectron2 ``Checkpointer`` files (``.pth``, ``{"model": state
  dict, "optimizer": ..., "scheduler": ..., "iteration": ...}``), and the output of
  ``tools/convert_pretrained.py``. Names are the released ViTDet layout (``backbone.net.*``,
  ``backbone.simfp_*``, ``proposal_generator.*``, ``roi_heads.*``).
- ``vitdet-pkl``: the released ViTDet model-zoo pickles (``{"model": {name: numpy array},
  "__author__": ..., "matching_heuristics": ...}``); same names. Names must match exactly:
  ``matching_heuristics`` is ignored.
- ``mae``: MAE pretraining checkpoints (``{"model": ...}``: ``cls_token``, ``pos_embed``,
  ``patch_embed.proj.*``, ``blocks.N.*``, ``norm.*``, optionally ``mask_token`` and
  ``decoder_*``). MAE is built on timm's ViT, so it shares the timm converter.
- ``timm``: timm ViT state dicts (``vit_base_patch16_224``), bare or under ``"model"``; the
  BEiT-style ``attn.q_bias`` / ``attn.v_bias`` pair becomes ``attn.qkv.bias`` with a zero k bias.
- ``sam``: Segment Anything release state dicts (``sam_vit_{b,l,h}_*.pth``: ``image_encoder.*``,
  ``prompt_encoder.*``, ``mask_decoder.*``). Its image encoder is a ViTDet ViT: loaded into a
  detector or a bare ViT, the encoder's trunk initialises the ViT (``convert_sam``) and the rest
  is dropped. A SAM model loads SAM files under its own names (``own``, ``vitdet.sam.build_sam``).
- ``own``: the model's own names exactly, nothing dropped, nothing new: how a run resumes from
  its own checkpoints (``vitdet.engine``) and how an MAE run starts from an MAE checkpoint with
  its decoder. Never detected: the caller names it.

Safety: a checkpoint is data, not code. ``.pth`` files load with ``torch.load(weights_only=True)``;
``.pkl`` files through an unpickler that admits numpy arrays and plain containers only. Anything
else is refused with ``CheckpointError`` before any of it runs. Sizes: an array or tensor must be
backed by distinct bytes of the file (no zero or overlapping strides, no buffer smaller than its
shape, no uninitialised memory, no two entries over the same bytes), checked by entry name before
anything is copied; with a target model, no entry may be larger than the model's largest tensor
(checked before conversion or resampling).

Shapes: ``fit_to_target`` resamples the tensors whose size follows the input geometry, and
nothing else: absolute position embeddings (bicubic, to the target's pretraining grid),
the patch-embedding kernel (FlexiViT pseudo-inverse resize, e.g. MAE ViT-H's 14x14 -> 16x16)
and the decomposed relative position tables (linear, as at run time).
"""

from __future__ import annotations

import fnmatch
import logging
import math
import operator
import pickle
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from detectron2.utils.file_io import PathManager

from .modeling.pos_embed import resample_abs_pos, resize_rel_pos
from .modeling.vit import ViT

__all__ = [
    "CheckpointError",
    "LoadReport",
    "Checkpoint",
    "FORMATS",
    "VITDET_VIT_PREFIX",
    "DETECTOR_HEAD_KEYS",
    "VIT_KEYS_NOT_PRETRAINED",
    "MAE_DROPPED_KEYS",
    "TIMM_DROPPED_KEYS",
    "SAM_ENCODER_PREFIX",
    "SAM_DROPPED_KEYS",
    "convert_vitdet",
    "convert_timm_vit",
    "convert_sam",
    "resize_patch_kernel",
    "resample_pos_embed",
    "resample_rel_pos",
    "fit_to_target",
    "prepare_state_dict",
    "read_checkpoint",
    "detect_format",
    "vit_prefix",
    "load_state_dict_strict",
    "load_checkpoint",
    "convert_checkpoint",
    "read_run_state",
    "unwrap",
]

logger = logging.getLogger(__name__)

# Where the ViT lives in the released detectors.
VITDET_VIT_PREFIX = "backbone.net."

# Detector parameters outside the ViT (pyramid, RPN, ROI heads): absent from backbone-only
# checkpoints (newly initialised), and dropped from detector checkpoints loaded into a bare ViT.
DETECTOR_HEAD_KEYS = ("backbone.simfp_*", "proposal_generator.*", "roi_heads.*")

# ViT parameters that MAE / timm pretraining does not have; relative to the ViT prefix.
VIT_KEYS_NOT_PRETRAINED = ("blocks.*.attn.rel_pos_h", "blocks.*.attn.rel_pos_w")

# Source keys the converters drop by name (the cls slot of ``pos_embed`` is kept: the ViT stores
# the pretraining layout).
TIMM_DROPPED_KEYS = ("cls_token", "norm.*", "fc_norm.*", "head.*")
MAE_DROPPED_KEYS = (*TIMM_DROPPED_KEYS, "mask_token", "decoder_*")
# Segment Anything: where its ViT lives, and what is not the ViT (neck and promptable heads).
SAM_ENCODER_PREFIX = "image_encoder."
SAM_DROPPED_KEYS = ("image_encoder.neck.*", "prompt_encoder.*", "mask_decoder.*")

# Top-level entries of a pickle / .pth besides the state dict under "model" are not read.
_STATE_KEY = "model"
# Marks the output of tools/convert_pretrained.py: names converted, expected-missing keys those
# of the format named here.
CONVERTED_FROM_KEY = "converted_from"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read safely, or that does not fit the model by the rules."""

    def __init__(self, message: str, report: LoadReport | None = None) -> None:
        super().__init__(message)
        self.report = report


# ---------------------------------------------------------------------------------------------
# Converters: pure state dict -> state dict into this project's names. Keys they do not know are
# passed through (with the prefix) for the strict check to refuse by name.


def convert_vitdet(
    state_dict: Mapping[str, torch.Tensor], *, prefix: str = VITDET_VIT_PREFIX
) -> dict[str, torch.Tensor]:
    """Released ViTDet / own detector names -> a model whose ViT lives at ``prefix``.

    With the detector prefix this is the identity. For another prefix (e.g. ``""``, a bare ViT)
    ``backbone.net.*`` moves under it and ``DETECTOR_HEAD_KEYS`` are dropped.
    """
    if prefix == VITDET_VIT_PREFIX:
        return dict(state_dict)
    out = {}
    for name, value in state_dict.items():
        if name.startswith(VITDET_VIT_PREFIX):
            out[prefix + name[len(VITDET_VIT_PREFIX) :]] = value
        elif not _matches(name, DETECTOR_HEAD_KEYS):
            out[name] = value
    return out


def convert_timm_vit(
    state_dict: Mapping[str, torch.Tensor],
    *,
    prefix: str = VITDET_VIT_PREFIX,
    dropped: Sequence[str] = MAE_DROPPED_KEYS,
) -> dict[str, torch.Tensor]:
    """timm / MAE ViT names -> a model whose ViT lives at ``prefix``.

    ``pos_embed``, ``patch_embed.proj.*`` and ``blocks.N.{norm1, attn.qkv, attn.proj, norm2,
    mlp.fc1, mlp.fc2}.*`` keep their names under ``prefix``; ``blocks.N.attn.{q_bias, v_bias}``
    (C,) each become ``blocks.N.attn.qkv.bias`` (3C,) = [q, 0, v]; keys matching ``dropped``
    are removed.
    """
    names = set(state_dict)
    out = {}
    for name, value in state_dict.items():
        if _matches(name, dropped):
            continue
        module, _, param = name.rpartition(".")  # "blocks.N.attn", "q_bias"
        if param in ("q_bias", "v_bias") and {f"{module}.q_bias", f"{module}.v_bias"} <= names:
            if param == "q_bias":  # (C,) q, zeros, v -> (3C,)
                v_bias = state_dict[f"{module}.v_bias"]
                qkv_bias = torch.cat([value, torch.zeros_like(value), v_bias])
                out[f"{prefix}{module}.qkv.bias"] = qkv_bias
            continue
        out[prefix + name] = value
    return out


def convert_sam(
    state_dict: Mapping[str, torch.Tensor], *, prefix: str = VITDET_VIT_PREFIX
) -> dict[str, torch.Tensor]:
    """Segment Anything release names -> a model whose ViT lives at ``prefix``.

    ``image_encoder.{patch_embed, blocks}.*`` move under ``prefix``, with the MLP's
    ``mlp.lin1`` / ``mlp.lin2`` renamed ``mlp.fc1`` / ``mlp.fc2``; ``image_encoder.pos_embed``
    (1, S, S, C), the grid of SAM's 1024 input, becomes the pretraining layout (1, S * S, C)
    without a cls slot (``fit_to_target`` then resamples it to the target's pretraining grid,
    with a zero cls slot if the target keeps one; a ViT with ``pretrain_img_size=1024,
    pretrain_use_cls_token=False`` takes it as it is). ``SAM_DROPPED_KEYS`` are removed.
    """
    out = {}
    for name, value in state_dict.items():
        if _matches(name, SAM_DROPPED_KEYS):
            continue
        if not name.startswith(SAM_ENCODER_PREFIX):
            out[name] = value  # unknown: refused by name
            continue
        name = name[len(SAM_ENCODER_PREFIX) :]
        if name == "pos_embed" and value.ndim == 4:  # 1 s s c -> 1 (s s) c
            value = value.flatten(1, 2)
        name = re.sub(r"^(blocks\.\d+\.mlp)\.lin([12])\.", r"\1.fc\2.", name)
        out[prefix + name] = value
    return out


@dataclass(frozen=True)
class SourceFormat:
    """How one source format converts, and which names it is known not to carry."""

    convert: Callable[..., dict[str, torch.Tensor]]
    # Source-key globs the converter drops (reported as dropped).
    dropped: tuple[str, ...]
    # Target-key globs the source does not provide (kept as initialised); "{vit}" stands for
    # the ViT prefix.
    new: tuple[str, ...]


_BACKBONE_ONLY_NEW = (*(f"{{vit}}{k}" for k in VIT_KEYS_NOT_PRETRAINED), *DETECTOR_HEAD_KEYS)


def _same_names(state_dict: Mapping[str, torch.Tensor], *, prefix: str) -> dict[str, torch.Tensor]:
    """The ``own`` format's converter: names are the model's already (``prefix`` unused)."""
    return dict(state_dict)


FORMATS: dict[str, SourceFormat] = {
    "own": SourceFormat(_same_names, dropped=(), new=()),
    "vitdet": SourceFormat(convert_vitdet, dropped=DETECTOR_HEAD_KEYS, new=()),
    "vitdet-pkl": SourceFormat(convert_vitdet, dropped=DETECTOR_HEAD_KEYS, new=()),
    "mae": SourceFormat(
        partial(convert_timm_vit, dropped=MAE_DROPPED_KEYS),
        dropped=MAE_DROPPED_KEYS,
        new=_BACKBONE_ONLY_NEW,
    ),
    "timm": SourceFormat(
        partial(convert_timm_vit, dropped=TIMM_DROPPED_KEYS),
        dropped=TIMM_DROPPED_KEYS,
        new=_BACKBONE_ONLY_NEW,
    ),
    # SAM's encoder has the relative position tables: only the detector's heads are new.
    "sam": SourceFormat(convert_sam, dropped=SAM_DROPPED_KEYS, new=DETECTOR_HEAD_KEYS),
}


# ---------------------------------------------------------------------------------------------
# Resampling to the target's shapes (pure).


def resize_patch_kernel(weight: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a patch-embedding kernel with FlexiViT's pseudo-inverse resize (PI-resize).

    Args:
        weight: (C_out, C_in, p_h, p_w).
        size: (q_h, q_w).
    Returns:
        (C_out, C_in, q_h, q_w) kernel ``w'`` solving ``<resize(x), w'> = <x, w>`` in the
        least-norm sense, where ``resize`` is bicubic interpolation (align_corners=False) of a
        patch to ``size``. When upsampling (q >= p, e.g. MAE ViT-H's 14 -> 16) the equation is
        exact: a bicubically upsampled patch gets the token the old patch had, and so does a
        constant image. A plain interpolation of the kernel would scale tokens by ~(q / p)^2.
    """
    p_h, p_w = weight.shape[-2:]
    num_old, num_new = p_h * p_w, size[0] * size[1]
    # Resize as a matrix: column j is the resized j-th basis patch; (q_h q_w, p_h p_w).
    basis = torch.eye(num_old, dtype=torch.float64).reshape(num_old, 1, p_h, p_w)
    resize = F.interpolate(basis, size=size, mode="bicubic", align_corners=False)
    resize = resize.reshape(num_old, num_new).T
    inverse = torch.linalg.pinv(resize.T)  # (q_h q_w, p_h p_w)
    # c_out c_in p_h p_w -> (c_out c_in) (p_h p_w), and back with q
    flat = weight.reshape(-1, num_old).to(torch.float64) @ inverse.T
    return flat.reshape(*weight.shape[:2], *size).to(weight.dtype)


def _grid_layout(num_positions: int) -> tuple[int, bool] | None:
    """(grid side, has cls slot) of a (1, [1 +] S * S, C) embedding, or None if not square."""
    for has_cls in (False, True):
        side = math.isqrt(num_positions - has_cls)
        if side > 0 and side * side == num_positions - has_cls:
            return side, has_cls
    return None


def resample_pos_embed(pos_embed: torch.Tensor, num_positions: int) -> torch.Tensor:
    """(1, [1 +] S * S, C) -> (1, [1 +] T * T, C), the grid resized bicubically.

    The cls slot is copied when both layouts have one, dropped when only the source has one and
    zero when only the target has one (the ViT never reads it).
    """
    src, dst = _grid_layout(pos_embed.shape[1]), _grid_layout(num_positions)
    if src is None or dst is None:
        raise CheckpointError(
            f"position embedding {tuple(pos_embed.shape)} or target length {num_positions} "
            "is not a square grid"
        )
    (_, src_cls), (side, dst_cls) = src, dst
    # 1 t t c -> 1 (t t) c
    grid = resample_abs_pos(pos_embed, src_cls, (side, side)).reshape(1, side * side, -1)
    if not dst_cls:
        return grid
    cls = pos_embed[:, :1] if src_cls else grid.new_zeros(1, 1, grid.shape[-1])
    return torch.cat([cls, grid], dim=1)


def resample_rel_pos(rel_pos: torch.Tensor, length: int) -> torch.Tensor:
    """(L, C) relative position table -> (length, C), linearly, as attention does at run time."""
    return resize_rel_pos(rel_pos, length)


def _resample(name: str, value: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor | None:
    """``value`` resampled to ``shape`` if ``name`` is a geometry-dependent tensor, else None."""
    if value.ndim != len(shape):
        return None
    if name.endswith("pos_embed") and value.ndim == 3 and value.shape[::2] == shape[::2]:
        if _grid_layout(value.shape[1]) and _grid_layout(shape[1]):
            return resample_pos_embed(value, shape[1])
    elif name.endswith("patch_embed.proj.weight") and value.shape[:2] == shape[:2]:
        return resize_patch_kernel(value, shape[2:])
    elif name.endswith((".attn.rel_pos_h", ".attn.rel_pos_w")) and value.shape[1] == shape[1]:
        return resample_rel_pos(value, shape[0])
    return None


def fit_to_target(
    state_dict: Mapping[str, torch.Tensor], target_shapes: Mapping[str, Sequence[int]]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Resample geometry-dependent tensors whose shape differs from the target's.

    Returns the new state dict and the names resampled. Other shape mismatches are left for the
    strict check to refuse.
    """
    out = dict(state_dict)
    resampled = []
    for name, value in state_dict.items():
        shape = target_shapes.get(name)
        if shape is None or tuple(value.shape) == tuple(shape):
            continue
        new = _resample(name, value, tuple(shape))
        if new is not None:
            out[name] = new
            resampled.append(name)
    return out, resampled


# ---------------------------------------------------------------------------------------------
# Matching against the target, and the report.


@dataclass(frozen=True)
class LoadReport:
    """What a load did: one line per category (``summary``), names in full here."""

    source_format: str
    loaded: tuple[str, ...]  # target keys set from the checkpoint
    resampled: tuple[str, ...]  # of ``loaded``: resampled to the target's shape
    new: tuple[str, ...]  # target keys the checkpoint is known not to have: kept as initialised
    dropped: tuple[str, ...]  # source keys the converter dropped by name
    refused: tuple[str, ...]  # "name: reason" for anything else; a load with any fails
    new_globs: tuple[str, ...] = ()  # the expected-missing list that admitted ``new``
    dropped_globs: tuple[str, ...] = ()  # the dropped list that admitted ``dropped``

    def summary(self) -> str:
        resampled = f" (resampled: {_names(self.resampled)})" if self.resampled else ""
        lines = [
            f"checkpoint format {self.source_format}",
            f"loaded {len(self.loaded)}{resampled}",
            f"newly initialised {len(self.new)}: {_grouped(self.new, self.new_globs)}",
            f"dropped from the checkpoint {len(self.dropped)}: "
            f"{_grouped(self.dropped, self.dropped_globs)}",
        ]
        if self.refused:
            lines.append(f"refused {len(self.refused)}: {_names(self.refused, limit=10)}")
        return "\n".join(lines)


def prepare_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    source_format: str,
    target_shapes: Mapping[str, Sequence[int]] | None,
    *,
    prefix: str,
    converted_from: str | None = None,
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Convert, resample and match a source state dict against a target's shapes (pure).

    Args:
        state_dict: source tensors, in ``source_format``'s names.
        target_shapes: every target key -> shape (``model.state_dict()``); None: convert the
            names only (no resampling, nothing checked).
        prefix: where the target's ViT lives (``"backbone.net."`` in a detector, ``""`` bare).
        converted_from: for a file already converted from another format: that format, whose
            expected-missing list then applies.
    Returns:
        The converted state dict and the report; ``report.refused`` lists every unknown key,
        every target key missing outside the expected list, and every shape mismatch that
        cannot be resampled.
    """
    fmt = _format(source_format)
    new_globs = tuple(g.format(vit=prefix) for g in _format(converted_from or source_format).new)
    if target_shapes is not None:  # entries the converter drops by name are never read
        kept = {k: v for k, v in state_dict.items() if not _matches(k, fmt.dropped)}
        _refuse_larger_than_target(kept, target_shapes)
    converted = fmt.convert(state_dict, prefix=prefix)
    if target_shapes is None:
        target_shapes = {k: v.shape for k, v in converted.items()}
    resampled = []
    if source_format != "own":  # the model's own tensors must fit as they are
        converted, resampled = fit_to_target(converted, target_shapes)

    refused = []
    for name, value in converted.items():
        shape = target_shapes.get(name)
        if shape is None:
            refused.append(f"{name}: not in the model")
        elif tuple(value.shape) != tuple(shape):
            refused.append(f"{name}: checkpoint {tuple(value.shape)} vs model {tuple(shape)}")
    new = []
    for name in target_shapes:
        if name in converted:
            continue
        if _matches(name, new_globs):
            new.append(name)
        else:
            refused.append(f"{name}: missing from the checkpoint")

    label = (
        f"{source_format} (converted from {converted_from})" if converted_from else source_format
    )
    report = LoadReport(
        source_format=label,
        loaded=tuple(k for k in converted if k in target_shapes),
        resampled=tuple(resampled),
        new=tuple(new),
        dropped=tuple(k for k in state_dict if _matches(k, fmt.dropped) and k not in converted),
        refused=tuple(refused),
        new_globs=new_globs,
        dropped_globs=fmt.dropped,
    )
    return converted, report


def _refuse_larger_than_target(
    state_dict: Mapping[str, torch.Tensor], target_shapes: Mapping[str, Sequence[int]]
) -> None:
    """Refuse source tensors with more elements than the model's largest tensor, before a
    conversion or resampling allocates from their declared size (e.g. ``resize_patch_kernel``
    builds a (p_h p_w)^2 matrix from the source kernel's size)."""
    largest = max((math.prod(shape) for shape in target_shapes.values()), default=0)
    too_big = [
        f"{name} {tuple(value.shape)}"
        for name, value in state_dict.items()
        if math.prod(value.shape) > largest
    ]
    if too_big:
        raise CheckpointError(
            f"checkpoint entries larger than any tensor of the model ({largest} elements): "
            f"{_names(too_big)}"
        )


# ---------------------------------------------------------------------------------------------
# Reading files safely.


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """Stands in for ``_codecs.encode``, which protocol-2 pickles name to rebuild bytes."""
    if encoding not in ("latin1", "latin-1"):
        raise CheckpointError(f"refusing to unpickle bytes in encoding {encoding!r}")
    return text.encode("latin1")


def _layout_problem(
    shape: Sequence[int], strides: Sequence[int], itemsize: int, offset: int, nbytes: float
) -> str | None:
    """Why the elements of ``shape`` at byte ``strides`` from byte ``offset`` are not distinct
    bytes of an ``nbytes`` storage (zero, negative or overlapping strides, storage too small),
    or None. Python integers: nothing overflows, nothing is allocated."""
    if any(n == 0 for n in shape):
        return None  # no elements
    reach = itemsize  # bytes spanned by the dims of smaller stride
    for stride, n in sorted((s, n) for n, s in zip(shape, strides, strict=True) if n > 1):
        if stride < reach:
            return f"shape {tuple(shape)} with strides {tuple(strides)} reuses its elements' memory"
        reach += stride * (n - 1)
    if offset < 0 or offset + reach > nbytes:
        return f"shape {tuple(shape)} needs {offset + reach} bytes, its storage holds {nbytes}"
    return None


def _dtype_problem(dtype: object) -> str | None:
    """Why arrays of ``dtype`` are not numeric tensors (objects, records, sub-arrays), or None."""
    try:
        dtype = np.dtype(dtype)
    except Exception:
        return f"dtype {dtype!r} is not numeric"
    if dtype.kind not in "fiub" or dtype.fields is not None or dtype.subdtype is not None:
        return f"dtype {dtype} is not numeric"
    return None


def _shape_of(shape: object) -> tuple[int, ...] | str:
    """``shape`` as non-negative ints, or why it is not one."""
    try:
        dims = (operator.index(shape),) if not isinstance(shape, tuple) else shape
        dims = tuple(operator.index(n) for n in dims)
    except TypeError:
        return f"shape {shape!r} is not a tuple of integers"
    return dims if all(n >= 0 for n in dims) else f"negative shape {dims}"


class _PickledArray(np.ndarray):
    """``numpy.ndarray`` as a .pkl gets it: an array whose declared shape is backed by bytes the
    file holds, or an empty placeholder carrying in ``refused`` why not, which
    ``_state_dict_of`` reports under the entry's name. numpy writes arrays as
    ``_reconstruct(ndarray, (0,), b"b")`` + ``__setstate__(shape, dtype, raw bytes)`` (protocols
    < 5) or ``_frombuffer`` (protocol 5); a file can also call ``ndarray(shape, dtype, buffer,
    offset, strides)`` itself, declaring any shape over a few bytes (zero strides) or none at
    all (uninitialised memory): checked here before numpy allocates or views anything."""

    refused: str | None = None

    def __new__(cls, *args: object, **kwargs: object) -> _PickledArray:
        problem = _ndarray_call_problem(*args, **kwargs)
        if problem:
            return _refused_array(problem)
        return np.ndarray.__new__(cls, *args, **kwargs)

    def __setstate__(self, state: object) -> None:
        problem = _array_state_problem(state)
        if problem:
            self.refused = problem
            return
        super().__setstate__(state)


def _refused_array(problem: str) -> _PickledArray:
    array = np.ndarray.__new__(_PickledArray, (0,), np.uint8)
    array.refused = problem
    return array


def _ndarray_call_problem(
    shape: object,
    dtype: object = float,
    buffer: object = None,
    offset: object = 0,
    strides: object = None,
    order: object = None,
) -> str | None:
    """Why ``numpy.ndarray(shape, dtype, buffer, offset, strides, order)`` from a file would
    not view ``shape`` over distinct bytes of ``buffer``, or None."""
    if buffer is None:
        return "numpy.ndarray without a buffer: uninitialised memory"
    problem = _dtype_problem(dtype)
    if problem:
        return problem
    dims = _shape_of(shape)
    if isinstance(dims, str):
        return dims
    itemsize = np.dtype(dtype).itemsize
    try:
        nbytes = memoryview(buffer).nbytes
        offset = operator.index(offset)
        if strides is None:  # contiguous, C or Fortran order
            order_dims = dims[::-1] if order not in ("F", "f") else dims
            contiguous, step = [], itemsize
            for n in order_dims:
                contiguous.append(step)
                step *= n
            strides = contiguous[::-1] if order not in ("F", "f") else contiguous
        strides = tuple(operator.index(s) for s in strides)
    except TypeError:
        return "numpy.ndarray with a buffer, offset or strides that are not bytes and integers"
    if len(strides) != len(dims):
        return f"numpy.ndarray with {len(strides)} strides for shape {dims}"
    return _layout_problem(dims, strides, itemsize, offset, nbytes)


def _array_state_problem(state: object) -> str | None:
    """Why numpy's ``(version, shape, dtype, is_fortran, raw bytes)`` array state does not
    hold exactly the bytes of ``shape``, or None."""
    if not isinstance(state, tuple) or len(state) not in (4, 5):
        return "array state is not numpy's (shape, dtype, is_fortran, data)"
    shape, dtype, _, data = state[-4:]
    problem = _dtype_problem(dtype)
    if problem:
        return problem
    dims = _shape_of(shape)
    if isinstance(dims, str):
        return dims
    if not isinstance(data, (bytes, bytearray)):
        return f"array data is a {type(data).__name__}, not bytes"
    needed = math.prod(dims) * np.dtype(dtype).itemsize
    if len(data) != needed:
        return f"shape {dims} needs {needed} bytes, the file holds {len(data)}"
    return None


def _reconstruct_empty(subtype: object, shape: object, dtype: object) -> _PickledArray:
    """Stands in for numpy's ``_reconstruct``, which allocates ``shape`` uninitialised; numpy
    itself writes ``(0,)`` and fills the array from ``__setstate__``."""
    if subtype is not _PickledArray:
        raise CheckpointError("refusing to unpickle: _reconstruct of something not an array")
    if _shape_of(shape) != (0,):
        return _refused_array(f"_reconstruct of shape {shape!r}: uninitialised memory")
    return np.ndarray.__new__(_PickledArray, (0,), np.uint8)


def _array_reconstructors() -> dict[tuple[str, str], object]:
    """The globals an array pickle names, under numpy 1.x and 2.x module paths."""
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # protocol 5: views the file's bytes
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): _PickledArray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): OrderedDict,
        ("_codecs", "encode"): _latin1_bytes,  # an array's raw bytes at protocol 2
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = _reconstruct_empty
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


_PICKLE_GLOBALS = _array_reconstructors()


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that admits numpy arrays and plain containers, and no other global."""

    def find_class(self, module: str, name: str) -> object:
        allowed = _PICKLE_GLOBALS.get((module, name))
        if allowed is None:
            raise CheckpointError(
                f"refusing to unpickle global {module}.{name}: a .pkl checkpoint may hold only "
                "numpy arrays and plain containers"
            )
        return allowed


def _read_pickle(path: str) -> object:
    try:
        with open(path, "rb") as f:
            # latin1: model-zoo pickles written by Python 2 keep numpy's byte strings intact.
            return _ArrayUnpickler(f, encoding="latin1").load()
    except CheckpointError:
        raise
    except Exception as e:  # truncated, not a pickle, missing, unreadable
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable pickle ({first_line})") from e


def _read_torch(path: str, *, mmap: bool = False) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        # torch's message is a page; its "WeightsUnpickler error: Unsupported global: ..."
        # sentence names what was refused.
        match = re.search(r"WeightsUnpickler error:\s*(.*?)(?: was not an allowed|\n|$)", str(e))
        reason = match.group(1) if match else str(e).strip().splitlines()[0]
        raise CheckpointError(
            f"{path}: refused by torch.load(weights_only=True) ({reason}); a .pth checkpoint "
            "may hold only tensors and plain containers: re-save just its state dict"
        ) from e
    except (RuntimeError, EOFError, OSError) as e:  # truncated, not a torch file, unreadable
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first_line})") from e


def _tensor_problem(value: torch.Tensor) -> str | None:
    """Why a tensor from a file is not a plain CPU tensor whose storage backs its shape: a
    zero-stride ``expand`` declares any size over one element, which a copy would allocate."""
    if type(value) not in (torch.Tensor, nn.Parameter):
        return f"a {type(value).__name__}, not a plain tensor"
    if value.is_nested or value.layout != torch.strided:
        return f"a {'nested' if value.is_nested else value.layout} tensor, not a dense one"
    if value.is_quantized:
        return "a quantized tensor"
    if value.device.type != "cpu":
        return f"a tensor on {value.device} (no data in the file)"
    if value.is_complex() or value.dtype in (torch.uint16, torch.uint32, torch.uint64):
        return f"dtype {value.dtype} is not a parameter type"
    itemsize = value.element_size()
    return _layout_problem(
        value.shape,
        [s * itemsize for s in value.stride()],
        itemsize,
        value.storage_offset() * itemsize,
        value.untyped_storage().nbytes(),
    )


def _entry_problem(value: object) -> str | None:
    """Why a state-dict entry cannot become a tensor without allocating memory the file does
    not back, or None."""
    if isinstance(value, _PickledArray) and value.refused:
        return value.refused
    if isinstance(value, np.ndarray):
        problem = _dtype_problem(value.dtype)
        if problem:
            return problem
        itemsize = value.itemsize
        # distinct elements: checked against an unbounded storage (its bytes were checked as
        # the array was built)
        return _layout_problem(value.shape, value.strides, itemsize, 0, math.inf)
    if isinstance(value, torch.Tensor):
        return _tensor_problem(value)
    return f"a {type(value).__name__}, not an array"


def _memory_span(value: np.ndarray | torch.Tensor) -> tuple[int, int, tuple]:
    """(first byte address, end address, identity of the view) of a checked array."""
    if isinstance(value, np.ndarray):
        start, itemsize = value.__array_interface__["data"][0], value.itemsize
        strides, dtype = value.strides, value.dtype
    else:
        start, itemsize = value.data_ptr(), value.element_size()
        strides, dtype = tuple(s * itemsize for s in value.stride()), value.dtype
    span = itemsize + sum(s * (n - 1) for n, s in zip(value.shape, strides, strict=True))
    return start, start + span, (start, tuple(value.shape), strides, str(dtype))


def _shared_memory(values: Mapping[str, np.ndarray | torch.Tensor]) -> list[str]:
    """Entries whose memory overlaps another entry's, other than the same view twice (tied
    weights): many entries over one buffer would each be copied."""
    spans = {}
    for name, value in values.items():
        if math.prod(value.shape):
            start, end, view = _memory_span(value)
            spans.setdefault(view, (start, end, name))
    shared, end_so_far, last = [], -1, None
    for start, end, name in sorted(spans.values()):
        if start < end_so_far:
            shared.append(f"{name} (overlaps {last})")
        if end > end_so_far:
            end_so_far, last = end, name
    return shared


def _state_dict_of(payload: object, path: str) -> dict[str, torch.Tensor]:
    """The state dict in a payload (under "model", or the payload itself), as float32 tensors.

    Every entry is checked before anything is copied: numeric, dense, its declared shape backed
    by distinct bytes of the file, no two entries over the same bytes (``CheckpointError``
    naming the entries otherwise): converting can then allocate at most twice the file's size.
    """
    if not isinstance(payload, Mapping):
        raise CheckpointError(f"{path}: expected a dict, got {type(payload).__name__}")
    state = payload.get(_STATE_KEY, payload)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: '{_STATE_KEY}' is a {type(state).__name__}, not a dict")
    bad = [f"{name!r} (not a name)" for name in state if not isinstance(name, str)]
    bad += [f"{name} ({p})" for name, value in state.items() if (p := _entry_problem(value))]
    if bad:
        raise CheckpointError(f"{path}: entries refused before reading: {_names(bad)}")
    shared = _shared_memory(state)
    if shared:
        raise CheckpointError(f"{path}: entries refused before reading: {_names(shared)}")
    out = {}
    for name, value in state.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        out[name] = value.float() if value.is_floating_point() else value
    return out


def detect_format(state_dict: Mapping[str, torch.Tensor], *, from_pickle: bool = False) -> str:
    """Tell the format from the names (MAE and timm share a layout; MAE drops more).

    - detector names (``backbone.``, ``proposal_generator.``, ``roi_heads.``): ``vitdet``
      (``vitdet-pkl`` when read from a pickle);
    - ``decoder_*`` or ``mask_token``: ``mae``;
    - ``head.*``, ``fc_norm.*`` or ``attn.q_bias``: ``timm``;
    - ``cls_token`` with ``blocks.*`` (the MAE encoder release): ``mae``;
    - ``image_encoder.*``, ``prompt_encoder.*`` or ``mask_decoder.*``: ``sam``.
    """
    names = list(state_dict)
    if any(k.startswith(("backbone.", "proposal_generator.", "roi_heads.")) for k in names):
        return "vitdet-pkl" if from_pickle else "vitdet"
    if any(k.startswith("decoder_") or k == "mask_token" for k in names):
        return "mae"
    if any(k.startswith(("head.", "fc_norm.")) or k.endswith(".attn.q_bias") for k in names):
        return "timm"
    if "cls_token" in names and any(k.startswith("blocks.") for k in names):
        return "mae"
    if any(k.startswith(("image_encoder.", "prompt_encoder.", "mask_decoder.")) for k in names):
        return "sam"
    raise CheckpointError(
        f"cannot tell the checkpoint format from its names ({_names(names)}); "
        f"name it: one of {sorted(FORMATS)}"
    )


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint file's tensors and what layout they are in."""

    state_dict: dict[str, torch.Tensor]
    source_format: str
    converted_from: str | None = None


def read_checkpoint(path: str, source_format: str = "auto") -> Checkpoint:
    """Read a checkpoint file safely and tell its format.

    ``.pkl`` files (or ``source_format="vitdet-pkl"``) go through the restricted unpickler,
    everything else through ``torch.load(weights_only=True)``. ``path`` may be any detectron2
    ``PathManager`` path (``detectron2://...``, URLs).
    """
    if source_format != "auto":
        _format(source_format)
    local = PathManager.get_local_path(path)
    from_pickle = source_format == "vitdet-pkl" or (
        source_format == "auto" and Path(local).suffix == ".pkl"
    )
    payload = _read_pickle(local) if from_pickle else _read_torch(local)
    state = _state_dict_of(payload, path)
    converted_from = payload.get(CONVERTED_FROM_KEY) if _STATE_KEY in payload else None
    if converted_from is not None:
        if not isinstance(converted_from, str):
            raise CheckpointError(f"{path}: '{CONVERTED_FROM_KEY}' is not a format name")
        _format(converted_from)
        return Checkpoint(state, source_format="vitdet", converted_from=converted_from)
    if source_format == "auto":
        source_format = detect_format(state, from_pickle=from_pickle)
    return Checkpoint(state, source_format=source_format)


# ---------------------------------------------------------------------------------------------
# Loading into a model.


def vit_prefix(model: nn.Module) -> str:
    """Where the model's one ViT lives: ``"backbone.net."`` in a detector, ``""`` for a ViT."""
    names = [name for name, module in model.named_modules() if isinstance(module, ViT)]
    if len(names) != 1:
        raise CheckpointError(f"expected exactly one ViT in the model, found {len(names)}")
    return f"{names[0]}." if names[0] else ""


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a ``DataParallel`` / ``DistributedDataParallel`` wrapper, or itself."""
    parallel = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    return model.module if isinstance(model, parallel) else model


@torch.no_grad()
def load_state_dict_strict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source_format: str,
    converted_from: str | None = None,
    log: bool = True,
) -> LoadReport:
    """Convert ``state_dict`` from ``source_format`` and load it into ``model`` strictly.

    Raises ``CheckpointError`` (carrying the report) naming every refused key; the model is
    untouched then. Otherwise every target key is either loaded or in the format's documented
    expected-missing list, and ``model.load_state_dict(..., strict=True)`` does the copy.
    """
    model = unwrap(model)
    target = model.state_dict()
    converted, report = prepare_state_dict(
        state_dict,
        source_format,
        {k: v.shape for k, v in target.items()},
        prefix="" if source_format == "own" else vit_prefix(model),
        converted_from=converted_from,
    )
    if report.refused:
        raise CheckpointError(f"checkpoint does not fit the model:\n{report.summary()}", report)
    model.load_state_dict({**{k: target[k] for k in report.new}, **converted}, strict=True)
    if log:
        logger.info(report.summary())
    return report


def load_checkpoint(
    model: nn.Module, path: str, *, source_format: str = "auto", log: bool = True
) -> LoadReport:
    """Initialise ``model`` from a checkpoint file of any format (``train.init_checkpoint``).

    Reads safely (``read_checkpoint``), detects the format, converts, resamples, loads strictly
    (``load_state_dict_strict``) and logs one short report. Optimizer and scheduler state in the
    file are ignored: resuming is ``vitdet.engine.RunCheckpointer``'s job (``read_run_state``).
    """
    ckpt = read_checkpoint(path, source_format)
    fmt = ckpt.source_format
    if fmt == "sam" and any(k.startswith("mask_decoder.") for k in unwrap(model).state_dict()):
        fmt = "own"  # a SAM file into a SAM model (fine-tuning): its names already
    return load_state_dict_strict(
        model,
        ckpt.state_dict,
        source_format=fmt,
        converted_from=ckpt.converted_from,
        log=log,
    )


def read_run_state(path: str, *, mmap: bool = False) -> dict:
    """The whole payload of a checkpoint a training run wrote (model, optimizer, scheduler,
    iteration, trainer state), read with ``torch.load(weights_only=True)``: tensors and plain
    containers only. The model's state dict is under ``"model"``; load it with
    ``load_state_dict_strict(model, ..., source_format="own")``.

    mmap: map the tensors' bytes instead of reading them (the checks below need only their
    layout): reading the plain entries of a large file costs almost no I/O.
    """
    local = PathManager.get_local_path(path)
    if Path(local).suffix == ".pkl":
        raise CheckpointError(f"{path}: a .pkl file is not a checkpoint written by a training run")
    payload = _read_torch(local, mmap=mmap)
    if not isinstance(payload, Mapping) or not isinstance(payload.get(_STATE_KEY), Mapping):
        raise CheckpointError(f"{path}: not a training checkpoint (no '{_STATE_KEY}' state dict)")
    # Every tensor (model, optimizer state, ...) before any is copied or cast.
    tensors = _tensors_in(payload)
    bad = [f"{name} ({p})" for name, value in tensors.items() if (p := _tensor_problem(value))]
    bad += _shared_memory(tensors) if not bad else []
    if bad:
        raise CheckpointError(f"{path}: entries refused before reading: {_names(bad)}")
    return dict(payload)


def _tensors_in(payload: object) -> dict[str, torch.Tensor]:
    """Every tensor in nested dicts / lists / tuples, by dotted path (iterative: no recursion
    limit, each container once)."""
    tensors, seen, stack = {}, set(), [("", payload)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, torch.Tensor):
            tensors[path] = node
        elif id(node) not in seen and isinstance(node, (Mapping, list, tuple)):
            seen.add(id(node))
            items = node.items() if isinstance(node, Mapping) else enumerate(node)
            stack.extend((f"{path}.{k}" if path else str(k), v) for k, v in items)
    return tensors


def convert_checkpoint(
    src: str, dst: str, *, source_format: str = "auto", target: nn.Module | None = None
) -> LoadReport:
    """Convert a checkpoint file into this project's detector layout and save it to ``dst``.

    With ``target`` (a detector, e.g. built on the meta device) tensors are resampled to its
    shapes and every key is checked strictly; without, only the names change. ``dst`` holds
    ``{"model": state dict, "converted_from": format}`` so that loading it applies the source
    format's expected-missing list.
    """
    ckpt = read_checkpoint(src, source_format)
    shapes = None
    if target is not None:
        target = unwrap(target)
        if vit_prefix(target) != VITDET_VIT_PREFIX:
            raise CheckpointError(
                f"the target must be a detector with its ViT at {VITDET_VIT_PREFIX}"
            )
        shapes = {k: v.shape for k, v in target.state_dict().items()}
    state, report = prepare_state_dict(
        ckpt.state_dict,
        ckpt.source_format,
        shapes,
        prefix=VITDET_VIT_PREFIX,
        converted_from=ckpt.converted_from,
    )
    if report.refused:
        raise CheckpointError(f"checkpoint does not fit the model:\n{report.summary()}", report)
    origin = ckpt.converted_from or ckpt.source_format
    torch.save({_STATE_KEY: state, CONVERTED_FROM_KEY: origin}, dst)
    return report


# ---------------------------------------------------------------------------------------------


def _format(name: str) -> SourceFormat:
    fmt = FORMATS.get(name)
    if fmt is None:
        raise CheckpointError(f"unknown checkpoint format {name!r}; one of {sorted(FORMATS)}")
    return fmt


def _matches(name: str, globs: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, g) for g in globs)


def _names(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown}, ... (+{len(names) - limit} more)" if len(names) > limit else shown or "-"


def _grouped(names: Sequence[str], globs: Sequence[str]) -> str:
    """'glob (count), ...' over the globs that match ``names``."""
    counts = {g: sum(fnmatch.fnmatchcase(n, g) for n in names) for g in globs}
    return ", ".join(f"{g} ({c})" for g, c in counts.items() if c) or "-"
