"""RoIAlign on the CPU as two small matmuls per RoI, and detectron2's ``ROIPooler`` on it.

torchvision's CPU RoIAlign backward is a serial loop over every (RoI, channel, bin, sample)
that scatters into the feature map one float at a time: in a training step of the Synthetic
config it took 16% of the step. Its forward reads a contiguous map, so a channels-last pyramid
level is copied first. Both passes here use that RoIAlign is separable: the sample grid of a bin
is a product of rows and columns, and a bilinear weight is a row weight times a column weight, so
for RoI ``r`` on image ``b``

    out[r, c] = Ay[r] @ x[b, c] @ Ax[r]^T      (PH x H) (H x W) (W x PW)

with ``Ay[r, i, y]`` the mean over the bin's sample rows of their interpolation weight on row
``y`` (zero for samples outside the map), ``Ax`` the same for columns. Each matrix is nonzero
only on the RoI's band of rows (columns), a few pixels more than its extent, so the forward pass
gathers each RoI's band from a channels-last view of the map and applies two batched matmuls,
and the backward pass computes ``Ay[r]^T @ grad[r, c] @ Ax[r]`` on the band and adds it into the
map with one ``index_add_``. RoIs are processed in passes of similar band size. Same numbers as
torchvision's to float rounding (tests/test_roi_align.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn as nn
from detectron2.layers import ROIAlign as _D2ROIAlign
from detectron2.modeling.poolers import ROIPooler as _D2ROIPooler

__all__ = ["ROIAlign", "ROIPooler", "roi_align_forward", "roi_align_backward"]

# Band floats per pass (RoIs x channels x band rows x band columns): bounds the temporary memory
# of either direction to ~64 MB in fp32 whatever the number of RoIs.
PATCH_ELEMENTS = 2**24


def _axis_weights(
    start: torch.Tensor, length: torch.Tensor, bins: int, sampling_ratio: int, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Interpolation weights of one axis, cropped to each RoI's band of the map.

    Args:
        start, length: (R,) the RoIs' start and extent on this axis, in map pixels; R >= 1.
        bins: output bins along the axis; ``size``: the map's extent along it.
    Returns:
        weights (R, bins, K) and the band's first index (R,): bin ``i`` of RoI ``r`` takes
        ``weights[r, i, j]`` of map line ``first[r] + j`` (lines past the map weigh zero).
    """
    bin_size = length / bins
    if sampling_ratio > 0:
        grid = torch.full_like(length, float(sampling_ratio))
    else:
        grid = torch.ceil(length / bins)  # adaptive: samples per bin along this axis
    max_grid = max(int(grid.max().item()), 1)
    step = torch.arange(max_grid, dtype=start.dtype, device=start.device)[None, None, :]
    offsets = torch.arange(bins, dtype=start.dtype, device=start.device)[None, :, None]
    # (R, bins, G): sample s of bin i, in torchvision's order of operations (a RoI of no extent
    # has no samples: grid 0, divided as 1 to keep NaN out)
    bin_size, grid = bin_size[:, None, None], grid[:, None, None]
    pos = start[:, None, None] + offsets * bin_size + (step + 0.5) * bin_size / grid.clamp(min=1)
    # samples past the RoI's own grid (a smaller RoI than the batch's largest) and outside the
    # map weigh zero
    valid = (step < grid) & (pos >= -1.0) & (pos <= size)
    weight = valid.to(pos.dtype) / grid.clamp(min=1)
    # torchvision's bilinear rule: clamp to 0, and the last line takes all of a sample past it
    pos = pos.clamp(min=0)
    low = pos.floor().clamp(max=size - 1)
    high = (low + 1).clamp(max=size - 1)
    frac = torch.where(low >= size - 1, torch.zeros_like(pos), pos - low)
    first = torch.where(valid, low, torch.full_like(low, size - 1)).amin(dim=(1, 2))
    # band lines of the samples; idle samples point at line 0 with weight 0
    low_j = torch.where(valid, low - first[:, None, None], 0).long()
    high_j = torch.where(valid, high - first[:, None, None], 0).long()
    span = int(high_j.max().item()) + 1
    weights = start.new_zeros(start.shape[0], bins, span)
    weights.scatter_add_(2, low_j, weight * (1 - frac))
    weights.scatter_add_(2, high_j, weight * frac)
    return weights, first.long()


def _passes(
    rois: torch.Tensor,
    spatial_scale: float,
    aligned: bool,
    sampling_ratio: int,
    shape: tuple[int, int, int, int, int],
    patch_elements: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The RoIs in passes of at most ``patch_elements`` band floats: for each pass its RoI
    indices, per-axis weights (r, PH, KH), (r, PW, KW) and the flat map index (r, KH, KW) of
    each band pixel.

    Args:
        rois: (R, 5) ``(batch index, x1, y1, x2, y2)`` in image pixels.
        shape: (C, H, W, PH, PW) of the map and the output.

    RoIs go by the size of their band (at most the extent + 2 lines each way), smallest first,
    so that each pass pads its RoIs to a band of similar size.
    """
    c, h, w, ph, pw = shape
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (rois[:, i] * spatial_scale - offset for i in range(1, 5))
    width, height = x2 - x1, y2 - y1
    if not aligned:  # the legacy RoIAlign makes every RoI at least one pixel
        width, height = width.clamp(min=1), height.clamp(min=1)
    image = rois[:, 0].long()
    band_h = (height.clamp(min=0) + 2).ceil().clamp(max=h)
    band_w = (width.clamp(min=0) + 2).ceil().clamp(max=w)
    band = (band_h * band_w).clamp(min=ph * pw)
    order = band.argsort()
    band = band[order].tolist()
    start, num_rois = 0, rois.shape[0]
    while start < num_rois:
        # as many RoIs as fit at the band floats of the pass's largest (its last)
        count = max(1, patch_elements // int(c * band[start]))
        while count > 1:
            largest = c * band[min(start + count, num_rois) - 1]
            if count * largest <= patch_elements:
                break
            count = max(1, patch_elements // int(largest))
        idx = order[start : start + count]
        start += count
        weights_y, first_y = _axis_weights(y1[idx], height[idx], ph, sampling_ratio, h)
        weights_x, first_x = _axis_weights(x1[idx], width[idx], pw, sampling_ratio, w)
        kh, kw = weights_y.shape[-1], weights_x.shape[-1]
        # lines past the map carry zero weight, so they may point anywhere inside it
        rows = (first_y[:, None] + torch.arange(kh)).clamp(max=h - 1)
        cols = (first_x[:, None] + torch.arange(kw)).clamp(max=w - 1)
        index = (image[idx, None, None] * h + rows[:, :, None]) * w + cols[:, None, :]
        yield idx, weights_y, weights_x, index


def roi_align_forward(
    input: torch.Tensor,
    rois: torch.Tensor,
    output_size: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
    *,
    patch_elements: int = PATCH_ELEMENTS,
) -> torch.Tensor:
    """``torchvision.ops.roi_align`` as ``Ay @ x @ Ax^T`` per RoI, read from a channels-last
    view of the map (no copy when the map is channels-last, as the pyramid's are).

    Args:
        input: (N, C, H, W). rois: (R, 5) ``(batch index, x1, y1, x2, y2)`` in image pixels.
    Returns:
        (R, C, PH, PW) in the input's dtype (computed in fp32 at least, as torchvision's).
    """
    n, c, h, w = input.shape
    ph, pw = output_size
    dtype = torch.promote_types(input.dtype, torch.float32)
    flat = input.to(dtype).permute(0, 2, 3, 1).reshape(n * h * w, c)  # n h w c
    out = flat.new_empty(rois.shape[0], c, ph, pw)
    passes = _passes(
        rois.to(dtype), spatial_scale, aligned, sampling_ratio, (c, h, w, ph, pw), patch_elements
    )
    for idx, weights_y, weights_x, index in passes:
        r, kh, kw = index.shape
        patch = flat.index_select(0, index.reshape(-1)).view(r, kh, kw * c)
        # Ay @ patch: (r, PH, KH) @ (r, KH, KW C) -> (r, PH, KW, C) -> (r, PH C, KW)
        t = torch.bmm(weights_y, patch).view(r, ph, kw, c).transpose(2, 3).reshape(r, ph * c, kw)
        # @ Ax^T: (r, PH C, KW) @ (r, KW, PW) -> (r, PH, C, PW) -> (r, C, PH, PW)
        out[idx] = torch.bmm(t, weights_x.transpose(1, 2)).view(r, ph, c, pw).transpose(1, 2)
    return out.to(input.dtype)


def roi_align_backward(
    grad: torch.Tensor,
    rois: torch.Tensor,
    input_shape: tuple[int, int, int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
    *,
    patch_elements: int = PATCH_ELEMENTS,
) -> torch.Tensor:
    """The gradient of ``roi_align`` with respect to its input map.

    Args:
        grad: (R, C, PH, PW) gradient of the output. rois: (R, 5) ``(batch index, x1, y1, x2,
        y2)`` in image pixels. input_shape: the map's (N, C, H, W).
    Returns:
        (N, C, H, W) in fp32, or float64 for float64 ``grad`` (channels-last memory).
    """
    n, c, h, w = input_shape
    ph, pw = grad.shape[-2:]
    dtype = torch.promote_types(grad.dtype, torch.float32)  # as torchvision: bf16 -> fp32
    grad = grad.to(dtype)
    out = grad.new_zeros(n * h * w, c)  # n h w c, flattened
    passes = _passes(
        rois.to(dtype), spatial_scale, aligned, sampling_ratio, (c, h, w, ph, pw), patch_elements
    )
    for idx, weights_y, weights_x, index in passes:
        r, kh, kw = index.shape
        # grad @ Ax: (r, C PH, PW) @ (r, PW, KW) -> (r, C, PH, KW)
        t = torch.bmm(grad[idx].reshape(r, c * ph, pw), weights_x)
        # Ay^T @ that: (r, KH, PH) @ (r, PH, KW C) -> (r, KH, KW, C)
        t = t.view(r, c, ph, kw).permute(0, 2, 3, 1).reshape(r, ph, kw * c)
        patch = torch.bmm(weights_y.transpose(1, 2), t)
        out.index_add_(0, index.reshape(-1), patch.view(-1, c))
    return out.view(n, h, w, c).permute(0, 3, 1, 2)


class _ROIAlignFunction(torch.autograd.Function):
    """:func:`roi_align_forward` forward, :func:`roi_align_backward` backward."""

    @staticmethod
    def forward(ctx, input, rois, output_size, spatial_scale, sampling_ratio, aligned):
        ctx.save_for_backward(rois)
        ctx.input_shape = tuple(input.shape)
        ctx.input_dtype = input.dtype
        ctx.args = (spatial_scale, sampling_ratio, aligned)
        with torch.autocast(input.device.type, enabled=False):  # fp32 matmuls, as torchvision's
            return roi_align_forward(
                input, rois, output_size, spatial_scale, sampling_ratio, aligned
            )

    @staticmethod
    def backward(ctx, grad_out):
        (rois,) = ctx.saved_tensors
        with torch.autocast(grad_out.device.type, enabled=False):
            grad = roi_align_backward(grad_out, rois, ctx.input_shape, *ctx.args)
        return grad.to(ctx.input_dtype), None, None, None, None, None


class ROIAlign(_D2ROIAlign):
    """detectron2's ``ROIAlign`` (same arguments and results), on the CPU computed by
    :func:`roi_align_forward` / :func:`roi_align_backward`; elsewhere, and in exports, it is
    detectron2's."""

    def forward(self, input: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """input: (N, C, H, W); rois: (R, 5) -> (R, C, PH, PW)."""
        # exports (TorchScript tracing, ONNX) keep torchvision's op, which they know
        exporting = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        if input.device.type != "cpu" or exporting:
            return super().forward(input, rois)
        assert rois.dim() == 2 and rois.size(1) == 5
        output_size = tuple(self.output_size)  # detectron2 stores (PH, PW) via _pair
        return _ROIAlignFunction.apply(
            input,
            rois.to(dtype=input.dtype),
            output_size,
            self.spatial_scale,
            self.sampling_ratio,
            self.aligned,
        )


class ROIPooler(_D2ROIPooler):
    """detectron2's ``ROIPooler`` (same arguments) whose RoIAlign levels are :class:`ROIAlign`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.level_poolers = nn.ModuleList(
            ROIAlign(p.output_size, p.spatial_scale, p.sampling_ratio, p.aligned)
            if isinstance(p, _D2ROIAlign)
            else p
            for p in self.level_poolers
        )
