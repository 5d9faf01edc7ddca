"""Fast paths of the ViT agree with the reference computations, forward and backward (the oneDNN
linear layers: test_onednn.py)."""

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from vitdet.modeling.pos_embed import decomposed_rel_pos_bias, decomposed_rel_pos_terms
from vitdet.modeling.rel_pos_attention import _attend_explicit, rel_pos_attention
from vitdet.modeling.vit import Attention, ViT
from vitdet.modeling.windows import window_partition, window_unpartition


def explicit_attention(q, k, v, rel_h, rel_w, scale):
    bias = (rel_h[..., :, None] + rel_w[..., None, :]).flatten(-2)
    return ((q @ k.transpose(-2, -1)) * scale + bias).softmax(dim=-1) @ v


# chunks of 4 query rows of one head / of one head / of one image's heads / one chunk
@pytest.mark.parametrize("chunk_elements", [4 * 20, 20 * 20, 3 * 20 * 20, 2**26])
def test_rel_pos_attention_matches_explicit_forward_and_backward(chunk_elements):
    b, nh, kh, kw, d = 2, 3, 5, 4, 8
    n = kh * kw
    gen = torch.Generator().manual_seed(0)
    inputs = [
        torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=True)
        for shape in [(b, nh, n, d)] * 3 + [(b, nh, n, kh), (b, nh, n, kw)]
    ]
    out = rel_pos_attention(*inputs, scale=0.3, chunk_elements=chunk_elements)
    expected = explicit_attention(*inputs, scale=0.3)
    assert (out - expected).abs().max() < 1e-12
    grad = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    got = torch.autograd.grad(out, inputs, grad)
    want = torch.autograd.grad(expected, inputs, grad)
    for name, g, w in zip(("q", "k", "v", "rel_h", "rel_w"), got, want, strict=True):
        assert (g - w).abs().max() < 1e-12, name


def test_rel_pos_attention_uneven_chunks_without_autograd():
    q, k, v = (torch.randn(1, 2, 12, 4) for _ in range(3))
    rel_h, rel_w = torch.randn(1, 2, 12, 3), torch.randn(1, 2, 12, 4)
    with torch.no_grad():
        out = rel_pos_attention(q, k, v, rel_h, rel_w, scale=0.5, chunk_elements=2 * 12 * 5)
    assert (out - explicit_attention(q, k, v, rel_h, rel_w, 0.5)).abs().max() < 1e-6


# attention shapes for the property-based tests: images, heads, and a kh x kw key grid
ATTENTION_SHAPES = dict(
    batch=st.integers(1, 3),
    num_heads=st.integers(1, 3),
    kh=st.integers(1, 6),
    kw=st.integers(1, 6),
)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    **ATTENTION_SHAPES,
    chunk_elements=st.integers(1, 800),  # query rows of one head ... whole images ... all
)
def test_sdpa_path_any_shape_and_chunking(batch, num_heads, kh, kw, chunk_elements):
    # the fp32 path (SDPA per chunk forward, recomputing backward), run in float64, on q, k, v
    # as the ViT passes them: views of one (b, n, 3, nh, d) qkv map
    n, d = kh * kw, 4
    gen = torch.Generator().manual_seed(0)
    qkv = torch.randn(batch, n, 3, num_heads, d, generator=gen).double().requires_grad_()
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    rel_h = torch.randn(batch, num_heads, n, kh, generator=gen).double().requires_grad_()
    rel_w = torch.randn(batch, num_heads, n, kw, generator=gen).double().requires_grad_()
    inputs = (qkv, rel_h, rel_w)
    out = rel_pos_attention(q, k, v, rel_h, rel_w, scale=0.3, chunk_elements=chunk_elements)
    expected = explicit_attention(q, k, v, rel_h, rel_w, 0.3)
    assert out.shape == (batch, num_heads, n, d)
    assert (out - expected).abs().max() < 1e-12
    grad = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    got = torch.autograd.grad(out, inputs, grad)
    want = torch.autograd.grad(expected, inputs, grad)
    for name, g, w in zip(("qkv", "rel_h", "rel_w"), got, want, strict=True):
        assert (g - w).abs().max() < 1e-12, name
    with torch.no_grad():
        out = rel_pos_attention(q, k, v, rel_h, rel_w, scale=0.3, chunk_elements=chunk_elements)
    assert (out - expected).abs().max() < 1e-12


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    **ATTENTION_SHAPES,
    head_dim=st.sampled_from([2, 4, 8, 16]),  # kh + kw <= head_dim folds the bias in, or not
    chunk_elements=st.integers(1, 400),  # row chunks of one head ... several whole heads
)
def test_explicit_low_precision_path_any_shape_and_chunking(
    batch, num_heads, kh, kw, head_dim, chunk_elements
):
    # the bf16 / fp16 CPU forward, run in float64: the same function as the explicit formula
    n = kh * kw
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, num_heads, n, head_dim, generator=gen).double() for _ in "qkv")
    rel_h = torch.randn(batch, num_heads, n, kh, generator=gen).double()
    rel_w = torch.randn(batch, num_heads, n, kw, generator=gen).double()
    out = _attend_explicit(q, k, v, rel_h, rel_w, 0.3, chunk_elements)
    assert out.shape == (batch, num_heads, n, head_dim)
    assert (out - explicit_attention(q, k, v, rel_h, rel_w, 0.3)).abs().max() < 1e-12


def test_bf16_on_the_cpu_takes_the_explicit_path():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 30, 8, generator=gen).bfloat16() for _ in "qkv")
    rel_h, rel_w = torch.randn(1, 2, 30, 5, generator=gen), torch.randn(1, 2, 30, 6, generator=gen)
    with torch.no_grad():
        out = rel_pos_attention(q, k, v, rel_h, rel_w, scale=0.5, chunk_elements=2 * 30 * 7)
    expected = _attend_explicit(q, k, v, rel_h.bfloat16(), rel_w.bfloat16(), 0.5, 2 * 30 * 7)
    assert torch.equal(out, expected)


def test_rel_pos_terms_sum_to_the_bias():
    q = torch.randn(6, 3 * 5, 8)
    table_h, table_w = torch.randn(5, 8), torch.randn(9, 8)
    rel_h, rel_w = decomposed_rel_pos_terms(q, table_h, table_w, (3, 5), (3, 5))
    assert rel_h.shape == (6, 15, 3) and rel_w.shape == (6, 15, 5)
    bias = decomposed_rel_pos_bias(q, table_h, table_w, (3, 5), (3, 5))
    assert torch.allclose((rel_h[..., :, None] + rel_w[..., None, :]).flatten(-2), bias)


def test_window_partition_pads_with_a_given_token():
    x = torch.randn(2, 5, 4, 3)
    fill = torch.tensor([1.0, -2.0, 3.0])
    windows, pad_hw = window_partition(x, 3, pad_value=fill)
    assert pad_hw == (6, 6)
    grid = window_unpartition(windows, 3, pad_hw, pad_hw)  # uncropped
    assert torch.equal(grid[:, :5, :4], x)
    assert torch.equal(grid[:, 5:], fill.expand(2, 1, 6, 3))
    assert torch.equal(grid[:, :, 4:], fill.expand(2, 6, 2, 3))


@pytest.mark.parametrize("hw", [(7, 7), (5, 8), (3, 3)])
@pytest.mark.parametrize("qkv_bias", [True, False])
def test_window_attention_fused_equals_reference_order(hw, qkv_bias):
    # fused: qkv on real tokens, padding filled with the qkv bias; plain: zero-pad, then qkv
    torch.manual_seed(0)
    attn = Attention(
        dim=16,
        num_heads=2,
        qkv_bias=qkv_bias,
        use_rel_pos=True,
        rel_pos_zero_init=False,
        window_size=3,
    )
    if qkv_bias:
        nn.init.normal_(attn.qkv.bias)  # padded tokens' k / v rows are this bias
    x = torch.randn(2, *hw, 16, requires_grad=True)
    results = []
    for fused in (True, False):
        attn.use_fused_attn = fused
        out = attn(x)
        grads = torch.autograd.grad(out.square().sum(), [x, *attn.parameters()])
        results.append((out, grads))
    (fused_out, fused_grads), (plain_out, plain_grads) = results
    assert (fused_out - plain_out).abs().max() < 1e-5
    for g, w in zip(fused_grads, plain_grads, strict=True):
        assert (g - w).abs().max() < 1e-4


def test_vit_fused_and_plain_agree_in_training():
    torch.manual_seed(0)
    kw = dict(
        img_size=64,
        embed_dim=32,
        depth=2,
        num_heads=2,
        window_size=3,
        global_attn_indexes=(1,),
        pretrain_img_size=32,
        rel_pos_zero_init=False,
    )
    fused, plain = ViT(**kw), ViT(**kw, use_fused_attn=False)
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(1, 3, 64, 80)
    outs, grads = [], []
    for model in (fused, plain):
        out = model(x)["last_feat"]
        outs.append(out)
        grads.append(torch.autograd.grad(out.square().mean(), list(model.parameters())))
    assert (outs[0] - outs[1]).abs().max() < 1e-5
    for g, w in zip(*grads, strict=True):
        assert (g - w).abs().max() < 1e-5


def test_vit_inference_is_one_graph_for_torch_compile():
    # the opt-in compile task of tools/benchmarks/speed.py: no graph break (the oneDNN switch
    # and the position cache step aside under dynamo)
    torch.manual_seed(0)
    model = ViT(
        img_size=64, embed_dim=32, depth=2, num_heads=2, window_size=3, global_attn_indexes=(1,)
    ).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        explained = torch._dynamo.explain(model)(x)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
