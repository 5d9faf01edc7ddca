"""The two feed-forward networks of SAM, named as in its checkpoints.

- ``LinMlp``: a transformer block's two-layer MLP with the release's ``lin1`` / ``lin2`` names
  (the ViT's :class:`~vitdet.modeling.vit.Mlp` says ``fc1`` / ``fc2``). It takes ``Mlp``'s
  keywords, so the image encoder builds the ViT's own ``Block`` with ``mlp_layer=LinMlp``
  instead of a copy of the block: same fused attention, same oneDNN GEMMs with GELU fused. The
  two-way transformer of the mask decoder uses it too (with ReLU).
- ``HeadMlp``: the decoder's hypernetwork and IoU heads, ``layers.N`` linear layers with ReLU
  between them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..onednn import gelu_mlp, linear

__all__ = ["LinMlp", "HeadMlp"]


class LinMlp(nn.Module):
    """x -> lin2(act(lin1(x))); (..., dim) -> (..., dim)."""

    def __init__(self, *, dim: int, hidden_dim: int, act_layer: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden_dim)
        self.lin2 = nn.Linear(hidden_dim, dim)
        self.act = act_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.act, nn.GELU):  # fused into lin1 (inference), recomputed (training)
            return gelu_mlp(x, self.lin1, self.lin2, approximate=self.act.approximate)
        return linear(self.act(linear(x, self.lin1)), self.lin2)


class HeadMlp(nn.Module):
    """``num_layers`` linear layers, ReLU between them: (..., in_dim) -> (..., out_dim)."""

    def __init__(self, *, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = F.relu(linear(x, layer))
        return linear(x, self.layers[-1])
