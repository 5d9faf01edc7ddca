"""``build_sam``: a SAM model from this project's configs, with the release's weights.

Sizes are the LazyConfig files ``configs/SAM/sam_vit_{b,l,h,tiny}.py`` (the one place their
numbers live). A release checkpoint (``sam_vit_b_01ec64.pth``...) loads through
:mod:`vitdet.checkpoint`: read with ``torch.load(weights_only=True)`` and loaded strictly under
the model's own names (the ``own`` format: the layout is the release's), one report logged.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from detectron2.config import instantiate

from ..checkpoint import load_checkpoint
from ..config import load_config
from ..modeling.sam import Sam

__all__ = ["CONFIG_DIR", "MODEL_TYPES", "build_sam", "sam_config_file", "sam_model_registry"]

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "SAM"
MODEL_TYPES = ("vit_b", "vit_l", "vit_h", "vit_tiny")


def sam_config_file(model_type: str) -> Path:
    """``configs/SAM/sam_<model_type>.py``."""
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown SAM model type {model_type!r}; one of {MODEL_TYPES}")
    path = CONFIG_DIR / f"sam_{model_type}.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the SAM configs ship with the source tree")
    return path


def build_sam(
    model_type: str = "vit_h",
    checkpoint: str | os.PathLike | None = None,
    *,
    overrides: Sequence[str] = (),
) -> Sam:
    """A SAM model in eval mode; ``checkpoint``: a release (or own) SAM state dict file.

    ``overrides`` are config overrides relative to the config root (``model.image_encoder.
    use_fused_attn=False``). Build on the meta device with ``with torch.device("meta"):``.
    """
    cfg = load_config(sam_config_file(model_type), overrides)
    model = instantiate(cfg.model)
    if checkpoint is not None:
        load_checkpoint(model, str(checkpoint), source_format="own")
    return model.eval()


# The release's registry: ``sam_model_registry["vit_b"](checkpoint=...)``.
sam_model_registry: dict[str, Callable[..., Sam]] = {
    "default": partial(build_sam, "vit_h"),
    **{name: partial(build_sam, name) for name in MODEL_TYPES},
}
