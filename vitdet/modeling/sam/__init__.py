"""Segment Anything's network on this project's plain ViT: the image encoder (ViT ``Block``s +
neck), the prompt encoder, the two-way transformer and the mask decoder. The user-facing API
(``build_sam``, predictors, export) is :mod:`vitdet.sam`."""

from .image_encoder import SamImageEncoder
from .mask_decoder import MaskDecoder
from .mlp import HeadMlp, LinMlp
from .neck import SamNeck
from .prompt_encoder import PositionEmbeddingRandom, PromptEncoder
from .sam import Sam
from .transformer import TwoWayTransformer

__all__ = [
    "Sam",
    "SamImageEncoder",
    "SamNeck",
    "PromptEncoder",
    "PositionEmbeddingRandom",
    "MaskDecoder",
    "TwoWayTransformer",
    "LinMlp",
    "HeadMlp",
]
