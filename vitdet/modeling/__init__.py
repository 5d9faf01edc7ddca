"""ViTDet modeling: the plain ViT backbone and the simple feature pyramid; MAE pretraining and
the classifier built from the same blocks; the backbone variants (conv stem, sin-cos positions)."""

from .classifier import ViTClassifier
from .mae import MaskedAutoencoderViT
from .pyramid import ALLOWED_SCALES, LastLevelMaxPool, SimpleFeaturePyramid
from .sincos import sincos_pos_embed
from .stems import ConvStem
from .vit import ViT

__all__ = [
    "ViT",
    "SimpleFeaturePyramid",
    "LastLevelMaxPool",
    "ALLOWED_SCALES",
    "ViTClassifier",
    "MaskedAutoencoderViT",
    "ConvStem",
    "sincos_pos_embed",
]
