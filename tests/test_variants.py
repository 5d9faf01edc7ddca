"""Backbone variants from the papers: fixed 2-D sin-cos positions, a convolutional stem, and the
image classifier built from the same blocks (tiny, CPU, seeded).
"""

from functools import partial

import pytest
import torch
import torch.nn as nn
from detectron2.layers.batch_norm import LayerNorm as ChannelLayerNorm

from vitdet.checkpoint import load_state_dict_strict
from vitdet.modeling.classifier import ViTClassifier
from vitdet.modeling.encoder import ViTEncoder
from vitdet.modeling.mae import MaskedAutoencoderViT
from vitdet.modeling.sincos import sincos_pos_embed
from vitdet.modeling.stems import ConvStem
from vitdet.modeling.vit import PatchEmbed, ViT

import helpers

TINY = dict(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2)
# A LayerNorm stem, as advised for detection.
LN_STEM = partial(ConvStem, norm_layer=ChannelLayerNorm)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_vit(**hooks) -> ViT:
    """The ViTDet backbone at the size of TINY: 4 x 4 tokens, windows of 2, block 1 global."""
    return helpers.tiny_vit(
        **TINY, window_size=2, global_attn_indexes=(1,), rel_pos_zero_init=True, **hooks
    )


# --- sin-cos position embeddings ------------------------------------------------------------


def test_sincos_layout_and_values():
    table = sincos_pos_embed(16, (3, 5), cls_token=True)
    assert table.shape == (1, 1 + 3 * 5, 16) and table.dtype == torch.float32
    assert torch.equal(table[0, 0], torch.zeros(16))  # the cls slot
    # Position (row 0, column 0): sin 0 = 0 and cos 0 = 1 in each axis's quarters.
    assert torch.equal(table[0, 1], torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4))
    # Row-major: entry 1 + (y * W + x) holds column x in the first half, row y in the second.
    y, x = 2, 3
    entry = table[0, 1 + y * 5 + x]
    omega = 10000.0 ** -(torch.arange(4, dtype=torch.float64) / 4)
    expected = torch.cat(
        [(x * omega).sin(), (x * omega).cos(), (y * omega).sin(), (y * omega).cos()]
    )
    torch.testing.assert_close(entry, expected.float())
    assert sincos_pos_embed(16, (3, 5)).shape == (1, 15, 16)


def test_sincos_positions_distinct_and_relative():
    table = sincos_pos_embed(64, (6, 6))[0].double()
    distances = torch.cdist(table, table)
    off_diagonal = distances[~torch.eye(36, dtype=torch.bool)]
    assert off_diagonal.min() > 0.1  # every position has its own code
    # The similarity of two positions depends only on their offset (sum of cosines).
    gram = table @ table.T
    index = lambda y, x: y * 6 + x  # noqa: E731
    assert gram[index(0, 0), index(1, 2)] == pytest.approx(gram[index(3, 3), index(4, 5)])
    # and nearer positions are more alike
    assert gram[index(0, 0), index(0, 1)] > gram[index(0, 0), index(0, 2)] > gram[0, index(0, 3)]


def test_sincos_rejects_width_not_divisible_by_4():
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_pos_embed(30, (2, 2))


def test_sincos_encoder_positions_are_fixed():
    encoder = ViTEncoder(**TINY, pos_embed_type="sincos")
    names = dict(encoder.named_parameters())
    assert "pos_embed" not in names  # a buffer, not a parameter ...
    assert "pos_embed" in encoder.state_dict()  # ... that checkpoints carry
    torch.testing.assert_close(encoder.pos_embed, sincos_pos_embed(32, (4, 4), cls_token=True))

    classifier = ViTClassifier(**TINY, num_classes=3, pos_embed_type="sincos")
    before = classifier.pos_embed.clone()
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=0.1)
    classifier(torch.randn(2, 3, 64, 64)).sum().backward()
    optimizer.step()
    assert torch.equal(classifier.pos_embed, before)


# --- convolutional stem ---------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(64, 64), (50, 70)])
def test_conv_stem_grid_matches_patch_embed(hw):
    x = torch.randn(2, 3, *hw)
    stem = ConvStem(patch_size=16, embed_dim=32)
    out = stem(x)
    assert out.shape == PatchEmbed(patch_size=16, embed_dim=32)(x).shape  # (B, h, w, C) NHWC
    assert out.shape == (2, -(-hw[0] // 16), -(-hw[1] // 16), 32)


def test_conv_stem_layers():
    stem = ConvStem(patch_size=16, embed_dim=32)
    convs = [m for m in stem.stem if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size, c.stride, c.out_channels) for c in convs] == [
        ((3, 3), (2, 2), w)
        for w in (4, 8, 16, 32)  # doubling up to the width
    ]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in stem.stem) == 4
    assert sum(isinstance(m, nn.ReLU) for m in stem.stem) == 4
    assert stem.proj.kernel_size == (1, 1) and stem.proj.out_channels == 32

    ln_stem = ConvStem(
        patch_size=8, embed_dim=32, channels=(8, 16, 24), norm_layer=ChannelLayerNorm
    )
    assert sum(isinstance(m, ChannelLayerNorm) for m in ln_stem.stem) == 3
    assert ln_stem(torch.randn(1, 3, 32, 32)).shape == (1, 4, 4, 32)
    with pytest.raises(ValueError, match="need 4"):
        ConvStem(patch_size=16, channels=(8, 16))
    with pytest.raises(ValueError, match="power of 2"):
        ConvStem(patch_size=14)


# --- classifier -----------------------------------------------------------------------------


@pytest.mark.parametrize("global_pool", ["token", "avg"])
@pytest.mark.parametrize("pos_embed_type", ["learned", "sincos"])
@pytest.mark.parametrize("stem", [PatchEmbed, ConvStem])
def test_classifier_variants_forward(global_pool, pos_embed_type, stem):
    model = ViTClassifier(
        **TINY,
        num_classes=5,
        global_pool=global_pool,
        pos_embed_type=pos_embed_type,
        patch_embed_layer=stem,
    )
    assert (model.cls_token is not None) == (global_pool == "token")
    assert model.pos_embed.shape == (1, 16 + (global_pool == "token"), 32)
    assert isinstance(model.patch_embed, stem)
    x = torch.randn(2, 3, 64, 64)
    assert model(x).shape == (2, 5)
    assert model.forward_features(x).shape == (2, 32)
    assert model(torch.randn(1, 3, 96, 80)).shape == (1, 5)  # positions resampled to 6 x 5


def test_classifier_pooling():
    model = ViTClassifier(**TINY, num_classes=5, global_pool="avg").eval()
    x = torch.randn(2, 3, 64, 64)
    tokens = model.embed(x)
    torch.testing.assert_close(model.forward_features(x), model.encode(tokens).mean(dim=1))
    # Shuffling the patch tokens only permutes the outputs: the mean is unchanged.
    shuffled = tokens[:, torch.randperm(tokens.shape[1])]
    torch.testing.assert_close(model.encode(shuffled).mean(dim=1), model.forward_features(x))
    token_model = ViTClassifier(**TINY, num_classes=5, global_pool="token").eval()
    tokens = token_model.embed(x)
    torch.testing.assert_close(token_model.forward_features(x), token_model.encode(tokens)[:, 0])
    with pytest.raises(ValueError, match="global_pool"):
        ViTClassifier(**TINY, num_classes=5, global_pool="max")


def test_classifier_weights_initialise_the_backbone():
    """The classifier's names are timm's: its encoder loads strictly into the ViTDet ViT."""
    classifier = ViTClassifier(**TINY, num_classes=5)
    vit = tiny_vit()
    report = load_state_dict_strict(vit, classifier.state_dict(), source_format="timm", log=False)
    assert set(report.dropped) == {
        "cls_token",
        "norm.weight",
        "norm.bias",
        "head.weight",
        "head.bias",
    }
    for name, value in vit.state_dict().items():
        if "rel_pos" not in name:
            torch.testing.assert_close(value, classifier.state_dict()[name], msg=name)


# --- the hooks in the ViTDet backbone -------------------------------------------------------


def test_vit_with_conv_stem_and_sincos():
    vit = tiny_vit(patch_embed_layer=LN_STEM, pos_embed_type="sincos")
    assert isinstance(vit.patch_embed, ConvStem)
    assert "pos_embed" not in dict(vit.named_parameters())
    torch.testing.assert_close(vit.pos_embed, sincos_pos_embed(32, (4, 4), cls_token=True))
    out = vit(torch.randn(2, 3, 64, 96))["last_feat"]
    assert out.shape == (2, 32, 4, 6)  # NCHW at the boundary


def test_vit_default_hooks_keep_the_released_layout():
    vit = tiny_vit()
    assert isinstance(vit.patch_embed, PatchEmbed)
    assert isinstance(vit.pos_embed, nn.Parameter)
    with pytest.raises(ValueError, match="pos_embed_type"):
        ViT(**TINY, pos_embed_type="rope")


def test_mae_with_conv_stem_initialises_a_conv_stem_vit():
    mae = MaskedAutoencoderViT(
        **TINY,
        decoder_embed_dim=16,
        decoder_depth=1,
        decoder_num_heads=2,
        patch_embed_layer=LN_STEM,
    )
    vit = tiny_vit(patch_embed_layer=LN_STEM, pos_embed_type="sincos")
    report = load_state_dict_strict(vit, mae.state_dict(), source_format="mae", log=False)
    assert "patch_embed.stem.0.weight" in report.loaded and "pos_embed" in report.loaded
    for name, value in mae.state_dict().items():
        if name in vit.state_dict():
            torch.testing.assert_close(vit.state_dict()[name], value, msg=name)
