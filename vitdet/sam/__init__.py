"""Segment Anything on this project's ViT: the user-facing API (inference layer).

``build_sam`` / ``sam_model_registry``, ``SamPredictor`` and ``SamAutomaticMaskGenerator``
have the ``segment_anything`` release's signatures: a script written for the release runs by
changing its import. ONNX export: :mod:`vitdet.sam.export`.
"""

from .automatic import SamAutomaticMaskGenerator
from .build import build_sam, sam_model_registry
from .predictor import SamPredictor
from .transforms import ResizeLongestSide

__all__ = [
    "build_sam",
    "sam_model_registry",
    "SamPredictor",
    "SamAutomaticMaskGenerator",
    "ResizeLongestSide",
]
