"""Non-overlapping window partition and its inverse (pure tensor functions, NHWC)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def window_partition(
    x: torch.Tensor, window_size: int, pad_value: torch.Tensor | None = None
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Split a token map into windows, padding bottom/right to a multiple of the window.

    Args:
        x: (B, H, W, C) tokens.
        window_size: side of the square window.
        pad_value: (C,) token written into the padding; zeros when None.
    Returns:
        windows: (B * num_windows, window_size, window_size, C), row-major over windows,
            contiguous (the fused attention views each window's tokens as one axis).
        (Hp, Wp): padded height and width.
    """
    b, h, w, c = x.shape
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    hp, wp = h + pad_h, w + pad_w
    if (pad_h or pad_w) and pad_value is None:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # zero rows/cols at the bottom/right
    elif pad_h or pad_w:
        padded = x.new_empty(b, hp, wp, c)
        padded[:, :h, :w] = x
        padded[:, h:] = pad_value
        padded[:, :h, w:] = pad_value
        x = padded
    # b (nh ws) (nw ws) c -> (b nh nw) ws ws c: ``reshape`` copies, or returns a contiguous
    # view (nw = 1), and ``contiguous`` is a no-op; except for one row of windows in one image
    # (b = nh = 1 < nw, e.g. a wide map no taller than a window): there it returns a view whose
    # window rows lie nw windows apart, which the fused attention cannot flatten to (ws ws)
    # tokens, and ``contiguous`` makes the one copy that other inputs get from ``reshape``.
    x = x.view(b, hp // window_size, window_size, wp // window_size, window_size, c)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c).contiguous()
    return windows, (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, pad_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: stitch windows back and crop the padding.

    Args:
        windows: (B * num_windows, window_size, window_size, C).
        pad_hw: (Hp, Wp) returned by :func:`window_partition`.
        hw: (H, W) before padding.
    Returns:
        (B, H, W, C) tokens.
    """
    hp, wp = pad_hw
    h, w = hw
    nh, nw = hp // window_size, wp // window_size
    b = windows.shape[0] // (nh * nw)
    # (b nh nw) ws ws c -> b (nh ws) (nw ws) c
    x = windows.view(b, nh, nw, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    if hp > h or wp > w:
        x = x[:, :h, :w, :].contiguous()
    return x
