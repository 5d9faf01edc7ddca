"""Position embeddings: absolute (pretraining layout, resampled) and decomposed relative."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from .sincos import sincos_pos_embed

PosEmbedType = Literal["learned", "sincos"]


def register_abs_pos_embed(
    module: nn.Module,
    *,
    pos_embed_type: PosEmbedType,
    embed_dim: int,
    grid_size: int,
    cls_token: bool,
) -> None:
    """Give ``module`` its ``pos_embed`` in the pretraining layout: (1, [1 +] S * S, C), S =
    ``grid_size``, cls slot first if ``cls_token``.

    ``"learned"``: a zero parameter, for the caller to initialise; ``"sincos"``: the fixed 2-D
    sin-cos table as a persistent buffer (in the state dict, so checkpoints carry it; not
    trained). Shared by the ViTDet backbone and the MAE / classifier encoder.
    """
    if pos_embed_type == "sincos":
        table = sincos_pos_embed(embed_dim, (grid_size, grid_size), cls_token=cls_token)
        module.register_buffer("pos_embed", table)
    elif pos_embed_type == "learned":
        module.pos_embed = nn.Parameter(torch.zeros(1, grid_size**2 + cls_token, embed_dim))
    else:
        raise ValueError(f"pos_embed_type must be 'learned' or 'sincos', got {pos_embed_type!r}")


def resample_abs_pos(
    pos_embed: torch.Tensor, has_cls_token: bool, hw: tuple[int, int]
) -> torch.Tensor:
    """Resample an absolute position embedding stored in the pretraining layout to a token grid.

    Args:
        pos_embed: (1, [1 +] S * S, C), a square pretraining grid, cls slot first if
            ``has_cls_token``.
        has_cls_token: whether the first entry is the cls token's (it is dropped).
        hw: target token grid (H, W).
    Returns:
        (1, H, W, C), bicubically resized when the grid differs (identity otherwise).
    """
    if has_cls_token:
        pos_embed = pos_embed[:, 1:]
    num_pos = pos_embed.shape[1]
    size = math.isqrt(num_pos)
    if size * size != num_pos:
        raise ValueError(f"absolute position embedding has {num_pos} entries, not a square grid")
    h, w = hw
    grid = pos_embed.reshape(1, size, size, -1)
    if (size, size) == (h, w):
        return grid
    # 1 s s c -> 1 c s s for interpolation, and back
    grid = F.interpolate(grid.permute(0, 3, 1, 2), size=(h, w), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1)


def resize_rel_pos(rel_pos: torch.Tensor, length: int) -> torch.Tensor:
    """A relative position table (L, C) linearly resized to (length, C), contiguous.

    Used at run time for another window or input size, and by the checkpoint converters.
    """
    # l c -> 1 c l for 1-D interpolation, and back
    resized = F.interpolate(rel_pos.T.unsqueeze(0), size=length, mode="linear")
    return resized.squeeze(0).T.contiguous()


def rel_pos_table(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative position embeddings for every (query, key) coordinate pair along one axis.

    Args:
        q_size, k_size: query and key lengths along the axis.
        rel_pos: (L, C) table; linearly resized to 2 * max(q_size, k_size) - 1 entries if needed.
    Returns:
        (q_size, k_size, C).
    """
    max_rel_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_rel_dist:
        rel_pos = resize_rel_pos(rel_pos, max_rel_dist)
    # Scale coordinates with the shorter side so that q and k spans match.
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative.long()]


def decomposed_rel_pos_terms(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_hw: tuple[int, int],
    k_hw: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two factors of the decomposed relative position term of MViTv2.

    ``bias[i, (a, b)] = rel_h[i, a] + rel_w[i, b]`` for query i and key (a, b).

    Args:
        q: (..., q_h * q_w, C) unscaled queries.
        rel_pos_h, rel_pos_w: (L, C) tables along height and width.
    Returns:
        rel_h: (..., q_h * q_w, k_h) and rel_w: (..., q_h * q_w, k_w), contiguous.
    """
    q_h, q_w = q_hw
    k_h, k_w = k_hw
    r_h = rel_pos_table(q_h, k_h, rel_pos_h)
    r_w = rel_pos_table(q_w, k_w, rel_pos_w)
    lead, dim = q.shape[:-2], q.shape[-1]
    r_q = q.reshape(-1, q_h, q_w, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, r_h)  # (B, q_h, q_w, k_h)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, r_w)  # (B, q_h, q_w, k_w)
    # b qh qw k -> ... (qh qw) k
    return rel_h.reshape(*lead, q_h * q_w, k_h), rel_w.reshape(*lead, q_h * q_w, k_w)


def decomposed_rel_pos_bias(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_hw: tuple[int, int],
    k_hw: tuple[int, int],
) -> torch.Tensor:
    """Decomposed relative position term of MViTv2, as an additive attention bias.

    Args:
        q: (B, q_h * q_w, C) unscaled queries (B counts batch x heads).
        rel_pos_h, rel_pos_w: (L, C) tables along height and width.
    Returns:
        (B, q_h * q_w, k_h * k_w) bias to add to the attention logits.
    """
    rel_h, rel_w = decomposed_rel_pos_terms(q, rel_pos_h, rel_pos_w, q_hw, k_hw)
    # b nq kh 1 + b nq 1 kw -> b nq (kh kw)
    bias = rel_h[:, :, :, None] + rel_w[:, :, None, :]
    return bias.flatten(2)
