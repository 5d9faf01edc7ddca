"""Fixed 2-D sine-cosine position embeddings (MAE; "Better plain ViT baselines" / SimpleViT)."""

from __future__ import annotations

import torch

__all__ = ["sincos_pos_embed"]


def sincos_pos_embed(
    embed_dim: int,
    grid_size: tuple[int, int],
    *,
    cls_token: bool = False,
    temperature: float = 10000.0,
) -> torch.Tensor:
    """2-D sine-cosine embedding of a token grid, in the pretraining layout of ``pos_embed``.

    Channel quarters hold ``sin(x w)``, ``cos(x w)``, ``sin(y w)``, ``cos(y w)`` for column x,
    row y and frequencies ``w_i = temperature ** (-i / (embed_dim / 4))``, i < embed_dim / 4
    (the order of MAE's ``get_2d_sincos_pos_embed`` and of SimpleViT's ``posemb_sincos_2d``).

    Args:
        grid_size: (H, W) tokens.
        cls_token: prepend a zero entry for a cls token (the MAE layout).
    Returns:
        (1, [1 +] H * W, embed_dim) float32, row-major over the grid.
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim {embed_dim} must be divisible by 4 for a 2-D sin-cos table")
    h, w = grid_size
    omega = temperature ** -(torch.arange(embed_dim // 4, dtype=torch.float64) / (embed_dim / 4))
    y, x = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    # (h w) 1 * 1 (c/4) -> (h w) (c/4) phases along each axis
    x_phase = x.reshape(-1, 1) * omega[None]
    y_phase = y.reshape(-1, 1) * omega[None]
    table = torch.cat([x_phase.sin(), x_phase.cos(), y_phase.sin(), y_phase.cos()], dim=1)
    if cls_token:
        table = torch.cat([table.new_zeros(1, embed_dim), table], dim=0)
    return table.float()[None]  # (n, c) -> (1, n, c)
