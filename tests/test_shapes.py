"""Any input size runs: the ViT and the pyramid, forward and backward, on the fused and the plain
attention paths, in fp32 and under bf16 autocast; the two paths agree, and both match
detectron2's reference ViT / SimpleFeaturePyramid where it applies.

Property-based (hypothesis): token grids of 1..20 rows and columns (smaller than a window, not a
multiple of it, a single row or column, partial patches), batch 1-3, window 0 (all global),
odd or 14, rel-pos on / off, a residual block or none. Tiny dims (width 32, 2 heads, 2 blocks:
one windowed, one global), few derandomized examples, one thread: the file runs in seconds.

Equality is checked in float64, where both paths and the reference compute the same math
(to ~1e-14: no rounding to blur a wrong padding or bias), and again in fp32 and bf16 with
tolerances for their rounding (see the tolerances below: the fused backward is the less
accurate one on nearly one-hot attention rows). Random weights at the scale of a trained
network (``randomize``): with all parameters ~ N(0, 0.25), norm weights near 0 included, the
tiny model is so badly conditioned that bf16 moves its gradients by 50 %.

Where the reference does not apply (not compared with it, only fused vs plain):
- image sizes that are not a multiple of the patch size: our PatchEmbed zero-pads the partial
  patch (ceil), the reference's conv drops it (floor);
- bf16 autocast: the reference has the plain path's formulation, nothing more to learn.
The reference runs every grid size drawn here (1 x 1 tokens included).
"""

from functools import partial

import pytest
import torch
import torch.nn as nn
from detectron2.structures import ImageList
from hypothesis import given, settings
from hypothesis import strategies as st

from vitdet.modeling import LastLevelMaxPool, SimpleFeaturePyramid, ViT
from vitdet.modeling.vit import Attention
from vitdet.modeling.windows import window_partition, window_unpartition

PATCH = 16
DIM, HEADS, DEPTH = 32, 2, 2
GLOBAL = (1,)  # block 0 windowed (when window_size > 0), block 1 global
OUT_CHANNELS = 16  # with DIM: channel norms over >= 8 channels (4 amplify bf16 noise)
SCALES = (4.0, 2.0, 1.0, 0.5)

# Tolerances on max |got - want| per tensor, relative to the tensor's max |want|; gradients
# relative to at least GRAD_FLOOR x the largest gradient of the model, because gradients that
# cancel carry the rounding noise of the terms that cancel (the rel-pos table of a window that
# holds one real token has a nearly zero gradient). Measured over 200 examples of each test:
# - fp64, fused vs plain vs reference: the same math, <= 2e-14.
# - fp32, fused vs plain: outputs <= 2e-6 (the same sums in another order: SDPA and a chunked
#   backward vs explicit softmax; qkv of real tokens with bias-filled padding vs qkv of
#   zero-padded tokens); gradients <= 3e-5 typically, but up to 3e-2 (pixel gradient) on
#   inputs that are mostly padding. That is not the attention backward (its accuracy against
#   float64: test_attention_accuracy.py) but a max pool of the pyramid: padding tokens give
#   near-ties (e.g. a 176 x 16 image padded to 192 x 64, window 0, no rel-pos: two values of
#   one 2 x 2 window of simfp_3's MaxPool2d 9e-10 apart in float64), and any fp32 rounding
#   difference (SDPA's forward sums in another order than the explicit softmax) can send that
#   window's gradient to the other token. float64 pins the gradients; fp32 bounds that rounding.
# - bf16 autocast, fused vs plain: values are rounded to 8 mantissa bits (step 2 ** -8 = 0.4 %)
#   at different points: the plain path's softmax and its backward run in fp32 (autocast), the
#   fused backward recomputes logits and probabilities in fp32 and runs its other matrix
#   products in bf16; outputs <= 2.3e-2 (p2, after three norms), gradients <= 0.13 (a global
#   block's rel-pos and norm1). The rel-pos gradients that are exactly zero (``exactly_zero_grads``)
#   come out of the fused bf16 backward as noise of up to ~5 % of the largest gradient (the
#   plain path: ~0), so bf16 leaves them out. These bounds only show that the bf16 paths run
#   and agree to rounding noise; float64 and fp32 pin the numbers.
FP64_TOL = 1e-9
FP32_TOL = {"out": 1e-5, "grad": 0.1}
BF16_TOL = {"out": 5e-2, "grad": 0.25}
GRAD_FLOOR = 0.05

EXAMPLES = settings(max_examples=30, deadline=None, derandomize=True)

window_sizes = st.sampled_from([0, 3, 5, 7, 14])
residual_blocks = st.sampled_from([None, 0, 1])  # index of the block with a conv bottleneck


@st.composite
def image_sides(draw, max_tokens: int = 20, whole_patches: bool = False) -> int:
    """A side in pixels with ceil(side / PATCH) tokens in 1..max_tokens, partial patch or not."""
    tokens = draw(st.integers(1, max_tokens))
    short = 0 if whole_patches else draw(st.sampled_from([0, 0, 1, PATCH // 2, PATCH - 1]))
    return tokens * PATCH - short


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models: one thread is faster, and much faster on a busy shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def vit_args(window_size: int, use_rel_pos: bool, residual_block: int | None) -> dict:
    return dict(
        img_size=64,  # global rel-pos tables of 2 * 4 - 1 rows, resized to the grid
        patch_size=PATCH,
        embed_dim=DIM,
        depth=DEPTH,
        num_heads=HEADS,
        window_size=window_size,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=use_rel_pos,
        rel_pos_zero_init=False,
        residual_block_indexes=() if residual_block is None else (residual_block,),
        pretrain_img_size=32,
    )


def make_vit(window_size: int, use_rel_pos: bool, residual_block: int | None) -> ViT:
    return ViT(**vit_args(window_size, use_rel_pos, residual_block), global_attn_indexes=GLOBAL)


def make_pyramid(net: ViT, square_pad: int) -> SimpleFeaturePyramid:
    return SimpleFeaturePyramid(
        net=net,
        in_feature="last_feat",
        out_channels=OUT_CHANNELS,
        scale_factors=SCALES,
        top_block=LastLevelMaxPool(),
        square_pad=square_pad,
    )


def make_reference(
    window_size: int, use_rel_pos: bool, residual_block: int | None, square_pad: int | None
) -> nn.Module:
    """detectron2's ViT (and pyramid unless ``square_pad`` is None) with our layout."""
    pytest.importorskip("timm")  # the reference Block imports timm
    from detectron2.modeling import SimpleFeaturePyramid as RefPyramid
    from detectron2.modeling import ViT as RefViT
    from detectron2.modeling.backbone.fpn import LastLevelMaxPool as RefMaxPool

    windowed = [i for i in range(DEPTH) if i not in GLOBAL] if window_size else []
    net = RefViT(
        **vit_args(window_size, use_rel_pos, residual_block),
        window_block_indexes=windowed,
        out_feature="last_feat",
    )
    if square_pad is None:
        return net
    return RefPyramid(
        net=net,
        in_feature="last_feat",
        out_channels=OUT_CHANNELS,
        scale_factors=SCALES,
        top_block=RefMaxPool(),
        norm="LN",
        square_pad=square_pad,
    )


def randomize(*models: nn.Module, seed: int = 0) -> None:
    """The same random values in every parameter of every model (the layouts are equal), at the
    scale of a trained network: weights ~ N(0, 1 / fan_in), norm weights ~ 1, biases small;
    rel-pos tables and the qkv bias (the fused path's padding) clearly non-zero; the residual
    block's zero-init last norm non-zero too."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, value in models[0].state_dict().items():
        noise = torch.randn(value.shape, generator=gen)
        if "rel_pos" in name or "pos_embed" in name or "qkv.bias" in name:
            state[name] = noise * 0.5
        elif value.ndim >= 2:  # linear and conv weights
            state[name] = noise / value[0].numel() ** 0.5
        elif "norm" in name and name.endswith("weight"):
            state[name] = 1.0 + noise * 0.2
        else:
            state[name] = noise * 0.2
    for model in models:
        model.load_state_dict(state)


def set_fused(model: nn.Module, fused: bool) -> None:
    for m in model.modules():
        if isinstance(m, Attention):
            m.use_fused_attn = fused


def run(model: nn.Module, x: torch.Tensor, precision: str, *, fused: bool = True):
    """Outputs and the gradients of a fixed random projection of them, as float64
    ({name: out}, {"x": d x, name: d param}). ``precision``: "fp32", "fp64" (model and input
    in float64, the model back in float32 afterwards) or "bf16" (autocast)."""
    set_fused(model, fused)
    dtype = torch.float64 if precision == "fp64" else torch.float32
    model.to(dtype)
    try:
        x = x.detach().to(dtype).requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(x)
        out = {k: v.double() for k, v in out.items()}
        gen = torch.Generator().manual_seed(1)
        loss = sum(
            (v * torch.randn(v.shape, generator=gen, dtype=v.dtype)).sum() for v in out.values()
        )
        names, params = zip(*model.named_parameters(), strict=True)
        grads = torch.autograd.grad(loss, [x, *params])
    finally:
        model.float()
        set_fused(model, True)
    return out, {k: g.double() for k, g in zip(("x", *names), grads, strict=True)}


def assert_close(
    got: dict,
    want: dict,
    tol: float,
    what: str,
    floor: float = 0.0,
    skip=frozenset(),
) -> None:
    """Per tensor: max |got - want| <= tol * max(max |want|, floor * largest |want| of all);
    names in ``skip`` are only checked for being finite."""
    assert set(got) == set(want), what  # parameter order differs from the reference's
    largest = max(w.abs().max().item() for w in want.values())
    for name in want:
        g, w = got[name], want[name]
        assert g.shape == w.shape, (what, name)
        assert torch.isfinite(g).all(), (what, name)
        if name in skip:
            continue
        err = (g - w).abs().max().item()
        scale = max(w.abs().max().item(), floor * largest)
        assert err <= tol * scale, f"{what} {name}: max err {err:.3g}, scale {scale:.3g}"


def exactly_zero_grads(window_size: int, use_rel_pos: bool, grid: tuple[int, int]) -> set[str]:
    """Rel-pos tables whose gradient is zero in exact arithmetic: a global block over a single
    token row (column) adds one row (column) term to all the logits of a query, which the
    softmax ignores."""
    names = set()
    for i in range(DEPTH) if use_rel_pos else ():
        if window_size == 0 or i in GLOBAL:
            names |= {f"blocks.{i}.attn.rel_pos_h"} if grid[0] == 1 else set()
            names |= {f"blocks.{i}.attn.rel_pos_w"} if grid[1] == 1 else set()
    return names


def assert_paths_agree(
    model: nn.Module, x: torch.Tensor, *, bf16: bool, zero=frozenset()
) -> dict[str, torch.Tensor]:
    """fp32: fused == plain in float64, and in fp32 to its rounding. bf16: fused == plain to
    rounding noise (except the ``zero`` gradients). Outputs and all gradients finite. Returns
    the fused outputs."""
    if bf16:
        (fused_out, fused_grads), (plain_out, plain_grads) = (
            run(model, x, "bf16", fused=f) for f in (True, False)
        )
        assert_close(fused_out, plain_out, BF16_TOL["out"], "bf16 fused vs plain output")
        assert_close(
            fused_grads, plain_grads, BF16_TOL["grad"], "bf16 fused vs plain", GRAD_FLOOR, zero
        )
        return fused_out
    (out64, grads64), (plain_out, plain_grads) = (
        run(model, x, "fp64", fused=f) for f in (True, False)
    )
    assert_close(out64, plain_out, FP64_TOL, "fp64 fused vs plain output")
    assert_close(grads64, plain_grads, FP64_TOL, "fp64 fused vs plain gradient", GRAD_FLOOR)
    fused_out, fused_grads = run(model, x, "fp32")
    plain_out, plain_grads = run(model, x, "fp32", fused=False)
    assert_close(fused_out, plain_out, FP32_TOL["out"], "fp32 fused vs plain output")
    assert_close(fused_grads, plain_grads, FP32_TOL["grad"], "fp32 fused vs plain", GRAD_FLOOR)
    return fused_out


def assert_matches_reference(ours: nn.Module, ref: nn.Module, x: torch.Tensor) -> None:
    """Same weights, float64: outputs and gradients of both our paths equal detectron2's."""
    want, want_grads = run(ref, x, "fp64")
    for fused in (True, False):
        got, got_grads = run(ours, x, "fp64", fused=fused)
        assert_close(got, want, FP64_TOL, f"ours (fused={fused}) vs reference output")
        assert_close(
            got_grads, want_grads, FP64_TOL, f"ours (fused={fused}) vs reference", GRAD_FLOOR
        )


# --- regression: one row of windows in one image --------------------------------------------


@pytest.mark.parametrize(
    "hw, window_size", [((2, 8), 3), ((1, 5), 3), ((1, 20), 14), ((5, 30), 14), ((2, 2), 3)]
)
def test_window_partition_is_contiguous(hw, window_size):
    # b = nh = 1 < nw: the permuted windows used to come back as a strided view, and the fused
    # attention's view((b, ws * ws, ...)) failed ("view size is not compatible ...")
    x = torch.randn(1, *hw, 4)
    windows, pad_hw = window_partition(x, window_size, pad_value=torch.ones(4))
    assert windows.is_contiguous()
    assert torch.equal(window_unpartition(windows, window_size, pad_hw, hw), x)


@pytest.mark.parametrize("use_rel_pos", [True, False])
def test_wide_image_shorter_than_a_window(use_rel_pos):
    # the reported crash: 2 x 20 tokens, window 14 -> one row of two windows
    torch.manual_seed(0)
    model = make_vit(14, use_rel_pos, None)
    randomize(model)
    x = torch.randn(1, 3, 2 * PATCH, 20 * PATCH, generator=torch.Generator().manual_seed(2))
    out = assert_paths_agree(model, x, bf16=False)
    assert out["last_feat"].shape == (1, DIM, 2, 20)


# --- properties -------------------------------------------------------------------------------


@EXAMPLES
@given(
    height=image_sides(),
    width=image_sides(),
    batch=st.integers(1, 3),
    window_size=window_sizes,
    use_rel_pos=st.booleans(),
    residual_block=residual_blocks,
    bf16=st.booleans(),
)
def test_vit_any_size_fused_equals_plain(
    height, width, batch, window_size, use_rel_pos, residual_block, bf16
):
    torch.manual_seed(0)
    model = make_vit(window_size, use_rel_pos, residual_block)
    randomize(model)
    x = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(2))
    grid = (-(-height // PATCH), -(-width // PATCH))  # partial patches count
    zero = exactly_zero_grads(window_size, use_rel_pos, grid)
    out = assert_paths_agree(model, x, bf16=bf16, zero=zero)
    assert out["last_feat"].shape == (batch, DIM, *grid)


@EXAMPLES
@given(
    height=image_sides(whole_patches=True),
    width=image_sides(whole_patches=True),
    batch=st.integers(1, 3),
    window_size=window_sizes,
    use_rel_pos=st.booleans(),
    residual_block=residual_blocks,
)
def test_vit_any_size_equals_reference(
    height, width, batch, window_size, use_rel_pos, residual_block
):
    # whole patches only (see the module docstring); compared in float64
    torch.manual_seed(0)
    ours = make_vit(window_size, use_rel_pos, residual_block)
    ref = make_reference(window_size, use_rel_pos, residual_block, square_pad=None)
    randomize(ours, ref)
    x = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(2))
    assert_matches_reference(ours, ref, x)


@EXAMPLES
@given(
    sizes=st.lists(st.tuples(image_sides(12), image_sides(12)), min_size=1, max_size=3),
    square_pad=st.sampled_from([0, 192]),  # 0 or >= every image (12 tokens * 16 px)
    window_size=window_sizes,
    use_rel_pos=st.booleans(),
    residual_block=residual_blocks,
    bf16=st.booleans(),
)
def test_pyramid_any_size_honours_contract(
    sizes, square_pad, window_size, use_rel_pos, residual_block, bf16
):
    # images of any size, padded as the detector pads them (its padding contract), then p2..p6
    torch.manual_seed(0)
    model = make_pyramid(make_vit(window_size, use_rel_pos, residual_block), square_pad)
    randomize(model)
    gen = torch.Generator().manual_seed(2)
    images = [torch.randn(3, h, w, generator=gen) for h, w in sizes]
    x = ImageList.from_tensors(
        images, model.size_divisibility, padding_constraints=model.padding_constraints
    ).tensor
    hp, wp = x.shape[-2:]
    divisor = model.size_divisibility
    assert divisor == 64 and hp % divisor == 0 and wp % divisor == 0
    assert hp >= max(h for h, _ in sizes) and wp >= max(w for _, w in sizes)
    if square_pad:
        assert (hp, wp) == (square_pad, square_pad)
    else:  # the smallest multiple of the divisor that holds every image
        assert hp - divisor < max(h for h, _ in sizes) and wp - divisor < max(w for _, w in sizes)

    out = assert_paths_agree(model, x, bf16=bf16)
    shapes = model.output_shape()
    assert list(out) == list(shapes) == ["p2", "p3", "p4", "p5", "p6"]
    for name, spec in shapes.items():
        assert out[name].shape == (len(sizes), OUT_CHANNELS, hp // spec.stride, wp // spec.stride)

    if not bf16:  # padded inputs are whole patches: the reference applies
        ref = make_reference(window_size, use_rel_pos, residual_block, square_pad=square_pad)
        randomize(model, ref)  # the same values again
        assert_matches_reference(model, ref, x)
