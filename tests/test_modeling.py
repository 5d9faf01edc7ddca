"""ViT backbone and simple feature pyramid: invariants, padding contract, reference parity."""

from functools import partial

import pytest
import torch
import torch.nn as nn
from detectron2.structures import ImageList

from vitdet.modeling import LastLevelMaxPool, SimpleFeaturePyramid, ViT
from vitdet.modeling.pos_embed import rel_pos_table, resample_abs_pos
from vitdet.modeling.vit import Attention
from vitdet.modeling.windows import window_partition, window_unpartition

from helpers import tiny_vit


def tiny_pyramid(net: ViT | None = None, **kw) -> SimpleFeaturePyramid:
    args = dict(
        net=net or tiny_vit(),
        in_feature="last_feat",
        out_channels=32,
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        top_block=LastLevelMaxPool(),
        square_pad=128,
    )
    args.update(kw)
    return SimpleFeaturePyramid(**args)


@pytest.mark.parametrize("hw", [(14, 14), (13, 9), (2, 5), (28, 30)])
def test_window_partition_round_trip(hw):
    x = torch.randn(2, *hw, 8)
    windows, pad_hw = window_partition(x, 7)
    assert windows.shape[1:] == (7, 7, 8)
    assert pad_hw == (-(-hw[0] // 7) * 7, -(-hw[1] // 7) * 7)
    assert windows.shape[0] == 2 * (pad_hw[0] // 7) * (pad_hw[1] // 7)
    assert torch.equal(window_unpartition(windows, 7, pad_hw, hw), x)
    # padded tokens are zeros
    total = windows.abs().sum()
    assert torch.allclose(total, x.abs().sum())


def test_window_partition_layout():
    # window i covers rows (i // nw) * ws.., cols (i % nw) * ws..
    x = torch.arange(4 * 6, dtype=torch.float32).view(1, 4, 6, 1)
    windows, _ = window_partition(x, 2)
    assert torch.equal(windows[1, :, :, 0], x[0, 0:2, 2:4, 0])
    assert torch.equal(windows[3, :, :, 0], x[0, 2:4, 0:2, 0])


def test_abs_pos_resample_identity_and_shape():
    pos = torch.randn(1, 1 + 14 * 14, 16)
    same = resample_abs_pos(pos, True, (14, 14))
    assert torch.equal(same.reshape(1, -1, 16), pos[:, 1:])
    up = resample_abs_pos(pos, True, (64, 40))
    assert up.shape == (1, 64, 40, 16)
    # a constant embedding stays constant under bicubic resampling
    const = torch.full((1, 197, 4), 0.5)
    assert torch.allclose(resample_abs_pos(const, True, (9, 23)), torch.tensor(0.5), atol=1e-6)
    with pytest.raises(ValueError, match="square"):
        resample_abs_pos(torch.randn(1, 1 + 15, 4), True, (4, 4))


def test_abs_pos_cache_follows_parameter():
    vit = tiny_vit().eval()
    with torch.no_grad():
        first = vit.abs_pos((5, 7))
        assert vit.abs_pos((5, 7)) is first  # cached per grid
        vit.pos_embed.add_(1.0)  # an in-place update invalidates the cache
        second = vit.abs_pos((5, 7))
    assert second is not first
    assert torch.allclose(second, first + 1.0, atol=1e-5)
    # with autograd on, the resample is recomputed and differentiable
    vit.abs_pos((5, 7)).sum().backward()
    assert vit.pos_embed.grad is not None


def test_rel_pos_table_matches_definition():
    table = torch.randn(2 * 5 - 1, 3)
    out = rel_pos_table(5, 5, table)
    for i in range(5):
        for j in range(5):
            assert torch.equal(out[i, j], table[i - j + 4])
    # different q / k sizes interpolate to 2 * max - 1 entries
    assert rel_pos_table(4, 8, table).shape == (4, 8, 3)


@pytest.mark.parametrize("use_rel_pos", [True, False])
@pytest.mark.parametrize("hw", [(5, 5), (3, 7)])
def test_fused_attention_equals_plain(use_rel_pos, hw):
    attn = Attention(
        dim=32, num_heads=4, use_rel_pos=use_rel_pos, rel_pos_zero_init=False, input_size=(5, 5)
    )
    x = torch.randn(2, *hw, 32)
    attn.use_fused_attn = True
    fused = attn(x)
    attn.use_fused_attn = False
    plain = attn(x)
    assert (fused - plain).abs().max() < 1e-5


def test_pyramid_strides_names_channels():
    model = tiny_pyramid().eval()
    shapes = model.output_shape()
    assert list(shapes) == ["p2", "p3", "p4", "p5", "p6"]
    assert [s.stride for s in shapes.values()] == [4, 8, 16, 32, 64]
    assert {s.channels for s in shapes.values()} == {32}
    with torch.no_grad():
        out = model(torch.randn(1, 3, 128, 128))
    for name, spec in shapes.items():
        assert out[name].shape == (1, 32, 128 // spec.stride, 128 // spec.stride)


def test_pyramid_rejects_unknown_scale():
    with pytest.raises(ValueError, match=r"allowed: \[4.0, 2.0, 1.0, 0.5\]"):
        tiny_pyramid(scale_factors=(4.0, 3.0))


@pytest.mark.parametrize("square_pad", [128, 0])
def test_padding_contract_honoured_by_imagelist(square_pad):
    model = tiny_pyramid(square_pad=square_pad)
    images = [torch.zeros(3, 100, 70), torch.zeros(3, 37, 90)]
    batch = ImageList.from_tensors(
        images, model.size_divisibility, padding_constraints=model.padding_constraints
    )
    h, w = batch.tensor.shape[-2:]
    if square_pad:
        assert (h, w) == (128, 128)
    else:
        # the reference skips this padding (misspelt key); here it happens
        assert (h, w) == (128, 128) == (-(-100 // 64) * 64, -(-90 // 64) * 64)
    assert h % 64 == 0 and w % 64 == 0
    assert model.padding_constraints["size_divisibility"] == 64


@pytest.mark.parametrize("hw", [(128, 128), (100, 70), (20, 33), (16, 16), (160, 96)])
def test_any_input_size(hw):
    vit = tiny_vit().eval()
    with torch.no_grad():
        out = vit(torch.randn(1, 3, *hw))["last_feat"]
    assert out.shape == (1, 64, -(-hw[0] // 16), -(-hw[1] // 16))
    assert torch.isfinite(out).all()


def test_window_padding_does_not_leak_across_images():
    # each image of a batch is computed independently of the others
    vit = tiny_vit().eval()
    x = torch.randn(2, 3, 80, 112)
    with torch.no_grad():
        both = vit(x)["last_feat"]
        one = vit(x[1:])["last_feat"]
    assert (both[1:] - one).abs().max() < 1e-5


def test_drop_path_and_act_checkpoint_training():
    torch.manual_seed(0)
    vit = tiny_vit(drop_path_rate=0.2, use_act_checkpoint=True)
    x = torch.randn(2, 3, 64, 64)
    vit.train()
    out = vit(x)["last_feat"]
    out.sum().backward()
    grads = [p.grad for p in vit.parameters() if p.requires_grad]
    assert all(g is not None for g in grads[:3])
    # without checkpointing, same seed -> same result
    torch.manual_seed(1)
    a = vit(x)["last_feat"]
    vit.use_act_checkpoint = False
    torch.manual_seed(1)
    b = vit(x)["last_feat"]
    assert torch.allclose(a, b, atol=1e-6)
    # in eval, drop path is the identity
    vit.eval()
    with torch.no_grad():
        assert torch.equal(vit(x)["last_feat"], vit(x)["last_feat"])


def test_residual_blocks_start_as_identity():
    plain = tiny_vit()
    res = tiny_vit(residual_block_indexes=(0, 2))
    res.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(plain.eval()(x)["last_feat"], res.eval()(x)["last_feat"], atol=1e-6)
    assert any(".residual.conv1." in k for k in res.state_dict())


def test_block_index_validation():
    with pytest.raises(ValueError, match="out of range"):
        tiny_vit(global_attn_indexes=(4,))


# --- parity with detectron2's reference implementation -------------------------------------

reference = pytest.importorskip("detectron2.modeling")
needs_reference = pytest.mark.skipif(
    not hasattr(reference, "ViT"), reason="installed detectron2 has no ViT"
)


@needs_reference
@pytest.mark.parametrize("hw", [(128, 128), (96, 160)])
def test_numerical_parity_with_reference(hw):
    pytest.importorskip("timm")  # the reference Block imports timm
    from detectron2.modeling import SimpleFeaturePyramid as RefPyramid
    from detectron2.modeling import ViT as RefViT
    from detectron2.modeling.backbone.fpn import LastLevelMaxPool as RefMaxPool

    depth, global_idx = 4, (1, 3)
    common = dict(
        img_size=128,
        patch_size=16,
        embed_dim=64,
        depth=depth,
        num_heads=4,
        window_size=3,
        mlp_ratio=4,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        rel_pos_zero_init=False,
        pretrain_img_size=64,
    )
    ref = RefPyramid(
        net=RefViT(
            **common,
            window_block_indexes=[i for i in range(depth) if i not in global_idx],
            out_feature="last_feat",
        ),
        in_feature="last_feat",
        out_channels=32,
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        top_block=RefMaxPool(),
        norm="LN",
        square_pad=128,
    ).eval()
    ours = tiny_pyramid(net=ViT(**common, global_attn_indexes=global_idx)).eval()
    ref_state = ref.state_dict()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in ref_state.items()
    }
    # give every parameter non-trivial values (norms and rel-pos included)
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=gen) * 0.2 for k, v in ref_state.items()}
    ref.load_state_dict(state)
    ours.load_state_dict(state)
    x = torch.randn(2, 3, *hw, generator=gen)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert list(got) == list(expected)
    for name in expected:
        assert got[name].shape == expected[name].shape
        assert (got[name] - expected[name]).abs().max() <= 1e-4, name
    # and the gradients of a loss on every level, for the input and every parameter (the
    # training step of tools/benchmarks/speed.py backpropagates the same loss), within 1e-4 of
    # each tensor's largest gradient (measured: at most 1.4e-6)
    grads = {}
    for impl, model in (("ref", ref), ("ours", ours)):
        image = x.clone().requires_grad_()
        loss = sum(f.square().mean() for f in model(image).values())
        params = [p for _, p in sorted(model.named_parameters())]
        grads[impl] = torch.autograd.grad(loss, [image, *params])
    names = ["input"] + [n for n, _ in sorted(ours.named_parameters())]
    for name, g, want in zip(names, grads["ours"], grads["ref"], strict=True):
        scale = want.abs().max()
        assert (g - want).abs().max() <= 1e-4 * scale, name
