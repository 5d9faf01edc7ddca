"""RoIAlign's vectorised backward against torchvision's, and the pooler built on it."""

import pytest
import torch
from detectron2.layers import ROIAlign as D2ROIAlign
from detectron2.modeling.poolers import ROIPooler as D2ROIPooler
from detectron2.structures import Boxes
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import roi_align

from vitdet.modeling.roi_align import ROIAlign, ROIPooler, roi_align_backward, roi_align_forward


def random_rois(gen, num_rois, num_images, extent):
    """(R, 5) boxes around and beyond a map of ``extent`` image pixels, some degenerate."""
    corners = torch.rand(num_rois, 2, 2, generator=gen, dtype=torch.float64) * 1.4 - 0.2
    corners = corners * extent
    x1y1, x2y2 = corners.min(dim=1).values, corners.max(dim=1).values
    x2y2[::5] = x1y1[::5]  # zero-size boxes
    image = torch.randint(num_images, (num_rois, 1), generator=gen).double()
    return torch.cat([image, x1y1, x2y2], dim=1)


def torchvision_gradient(x, rois, grad, output_size, scale, sampling_ratio, aligned):
    x = x.clone().requires_grad_()
    out = roi_align(x, rois, output_size, scale, sampling_ratio, aligned)
    (g,) = torch.autograd.grad(out, x, grad)
    return g


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    num_images=st.integers(1, 2),
    channels=st.integers(1, 3),
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    num_rois=st.integers(0, 9),
    output_size=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    scale=st.sampled_from([1.0, 0.5, 0.25]),
    sampling_ratio=st.sampled_from([0, 1, 2]),
    aligned=st.booleans(),
    patch_elements=st.sampled_from([1, 2**24]),  # one RoI per pass, or all at once
    seed=st.integers(0, 2**16),
)
def test_forward_and_backward_equal_torchvision_any_shape(
    num_images,
    channels,
    height,
    width,
    num_rois,
    output_size,
    scale,
    sampling_ratio,
    aligned,
    patch_elements,
    seed,
):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_images, channels, height, width, generator=gen, dtype=torch.float64)
    rois = random_rois(gen, num_rois, num_images, max(height, width) / scale)
    grad = torch.randn(num_rois, channels, *output_size, generator=gen, dtype=torch.float64)
    out = roi_align_forward(
        x, rois, output_size, scale, sampling_ratio, aligned, patch_elements=patch_elements
    )
    assert out.shape == grad.shape and out.dtype == torch.float64
    expected = roi_align(x, rois, output_size, scale, sampling_ratio, aligned)
    assert torch.allclose(out, expected, rtol=0, atol=1e-10)
    want = torchvision_gradient(x, rois, grad, output_size, scale, sampling_ratio, aligned)
    got = roi_align_backward(
        grad, rois, x.shape, scale, sampling_ratio, aligned, patch_elements=patch_elements
    )
    assert got.shape == want.shape and got.dtype == torch.float64
    assert (got - want).abs().max() < 1e-10


@pytest.mark.parametrize("channels_last", [False, True])
def test_module_matches_detectron2_forward_and_backward(channels_last):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 32, 24, generator=gen)
    if channels_last:  # the pyramid's layout: read without a copy
        x = x.contiguous(memory_format=torch.channels_last)
    rois = random_rois(gen, 40, 2, 128).float()
    ours, ref = ROIAlign((7, 7), 0.25, 0, True), D2ROIAlign((7, 7), 0.25, 0, True)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    outs = [m(xi, rois) for m, xi in zip((ours, ref), xs, strict=True)]
    assert (outs[0] - outs[1]).abs().max() < 1e-5
    grad = torch.randn(outs[0].shape, generator=gen)
    for out in outs:
        out.backward(grad)
    assert (xs[0].grad - xs[1].grad).abs().max() < 1e-5
    assert xs[0].grad.abs().max() > 0.1


def test_bf16_input_under_autocast_gets_a_bf16_gradient():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 16, 16, generator=gen).bfloat16().requires_grad_()
    rois = random_rois(gen, 10, 1, 64).float()
    with torch.autocast("cpu", torch.bfloat16):
        out = ROIAlign((5, 5), 0.25, 2, True)(x, rois)
    out.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16
    want = torchvision_gradient(
        x.detach().float(), rois.bfloat16().float(), torch.ones(out.shape), (5, 5), 0.25, 2, True
    )
    assert (x.grad.float() - want).abs().max() < 0.05 * want.abs().max()


@pytest.mark.parametrize("pooler_type", ["ROIAlignV2", "ROIAlign"])
def test_pooler_matches_detectron2_over_levels(pooler_type):
    # boxes of every size, so that all four levels receive RoIs
    gen = torch.Generator().manual_seed(2)
    scales = (1 / 4, 1 / 8, 1 / 16, 1 / 32)
    features = [
        torch.randn(2, 6, 256 // int(1 / s), 256 // int(1 / s), generator=gen) for s in scales
    ]
    boxes = []
    for _ in range(2):
        size = torch.tensor([8.0, 20, 40, 70, 120, 200, 250]).repeat_interleave(3)
        xy = torch.rand(len(size), 2, generator=gen) * (256 - size[:, None])
        boxes.append(Boxes(torch.cat([xy, xy + size[:, None]], dim=1)))
    kwargs = dict(output_size=7, scales=scales, sampling_ratio=0, pooler_type=pooler_type)
    ours, ref = (
        ROIPooler(canonical_box_size=56, **kwargs),
        D2ROIPooler(canonical_box_size=56, **kwargs),
    )
    assert all(isinstance(p, ROIAlign) for p in ours.level_poolers)
    grads = []
    for pooler in (ours, ref):
        xs = [f.clone().requires_grad_() for f in features]
        out = pooler(xs, boxes)
        out.backward(torch.ones_like(out))
        grads.append([x.grad for x in xs])
    for g_ours, g_ref in zip(*grads, strict=True):
        assert g_ref.abs().sum() > 0  # the level was used
        assert (g_ours - g_ref).abs().max() < 1e-5
