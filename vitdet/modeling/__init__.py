"""ViTDet modeling: the plain ViT backbone and the simple feature pyramid."""

from .pyramid import ALLOWED_SCALES, LastLevelMaxPool, SimpleFeaturePyramid
from .vit import ViT

__all__ = ["ViT", "SimpleFeaturePyramid", "LastLevelMaxPool", "ALLOWED_SCALES"]
