"""ChannelLayerNorm computes detectron2's channel LayerNorm, forward and backward, and the detector
with it in the heads gives the reference heads' detections."""

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.layers.batch_norm import LayerNorm

from vitdet.modeling.channel_norm import ChannelLayerNorm

from helpers import COCO_CONFIG


def test_same_state_dict_and_type_as_detectron2():
    ours, ref = ChannelLayerNorm(8), LayerNorm(8)
    assert isinstance(ours, LayerNorm)  # the solver's weight-decay rules see a norm
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }
    assert ours.eps == ref.eps == 1e-6


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_detectron2_forward_and_backward(dtype, tol, channels_last):
    gen = torch.Generator().manual_seed(0)
    ours, ref = ChannelLayerNorm(16).to(dtype), LayerNorm(16).to(dtype)
    with torch.no_grad():
        ours.weight.normal_(generator=gen), ours.bias.normal_(generator=gen)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 16, 5, 7, generator=gen, dtype=dtype) * 3 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    grad = torch.randn(3, 16, 5, 7, generator=gen, dtype=dtype)
    results = []
    for norm in (ours, ref):
        out = norm(x)
        results.append((out, *torch.autograd.grad(out, [x, *norm.parameters()], grad)))
    assert results[0][0].is_contiguous(memory_format=torch.channels_last)
    for got, want in zip(*results, strict=True):
        assert (got - want).abs().max() <= tol * want.abs().max()


def test_bf16_input_gives_detectron2s_dtype():
    x = torch.randn(2, 8, 4, 4).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = ChannelLayerNorm(8)(x), LayerNorm(8)(x)
    assert got.dtype == want.dtype == torch.float32
    assert (got - want).abs().max() < 5e-2  # detectron2's statistics are bf16 here, ours fp32


def test_detector_heads_match_detectron2_ln():
    cfg = LazyConfig.load(str(COCO_CONFIG))
    net = cfg.model.backbone.net
    net.update(img_size=64, embed_dim=32, depth=2, num_heads=2, window_size=2)
    net.global_attn_indexes = (1,)
    cfg.model.proposal_generator.post_nms_topk = (50, 50)
    cfg.model.roi_heads.box_predictor.test_score_thresh = 0.0
    cfg.model.roi_heads.box_predictor.test_topk_per_image = 10
    assert cfg.model.roi_heads.box_head.conv_norm is ChannelLayerNorm
    torch.manual_seed(0)
    ours = instantiate(cfg.model).eval()
    cfg.model.roi_heads.box_head.conv_norm = cfg.model.roi_heads.mask_head.conv_norm = "LN"
    ref = instantiate(cfg.model).eval()
    ref.load_state_dict(ours.state_dict())
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1)) * 255
    inputs = [{"image": image, "height": 64, "width": 64}]
    with torch.no_grad():
        got, want = (model(inputs)[0]["instances"] for model in (ours, ref))
    assert len(got) == len(want) == 10
    assert (got.pred_boxes.tensor - want.pred_boxes.tensor).abs().max() < 1e-3
    assert (got.scores - want.scores).abs().max() < 1e-5
    assert (got.pred_masks.float() - want.pred_masks.float()).abs().mean() < 1e-3
