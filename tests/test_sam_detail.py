"""The optional detail path of SAM (not in the release): ``DetailStem`` maps the image to the
mask grid, the decoder's zero-initialised fusion starts as the release's decoder, the features
are required exactly when configured, and ``Sam.forward``, ``SamPredictor`` and
``TrainableSam`` all pass them (and train the stem)."""

import numpy as np
import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import instantiate
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sam_training import batch

from vitdet.checkpoint import load_state_dict_strict
from vitdet.config import load_config
from vitdet.modeling.sam.detail_stem import DetailStem
from vitdet.modeling.sam.training import TrainableSam
from vitdet.sam import SamPredictor

from helpers import REPO, scene

TINY = REPO / "configs" / "SAM" / "sam_vit_tiny.py"
DETAIL_DIM = 4


def tiny(*, detail: bool, trainable: bool = False):
    """The tiny SAM (128 px, patch 16: 8 x 8 tokens, 32 x 32 masks), with or without the path."""
    cfg = load_config(TINY)
    if trainable:
        cfg.model._target_ = TrainableSam
        cfg.model.num_masks_per_image = 3
        cfg.model.num_correction_points = 1
    if detail:
        cfg.model.detail_stem = L(DetailStem)(chans=DETAIL_DIM)
        cfg.model.mask_decoder.detail_dim = DETAIL_DIM
    torch.manual_seed(0)
    return instantiate(cfg.model).eval()


def randomise_fusion(model) -> None:
    """Non-zero fusion weights (they start at zero), so that the details change the masks."""
    torch.manual_seed(1)
    for p in model.mask_decoder.detail_fusion.parameters():
        p.data.normal_(0, 0.5)


@settings(max_examples=15, deadline=None)
@given(
    batch=st.integers(1, 2),
    h=st.integers(1, 12).map(lambda n: 4 * n),
    w=st.integers(1, 12).map(lambda n: 4 * n),
    chans=st.integers(1, 6),
)
def test_stem_maps_the_image_to_the_quarter_grid(batch, h, w, chans):
    torch.manual_seed(0)
    out = DetailStem(chans=chans)(torch.randn(batch, 3, h, w))
    assert out.shape == (batch, chans, h // DetailStem.stride, w // DetailStem.stride)
    assert torch.isfinite(out).all()


def test_zero_initialised_fusion_starts_as_the_release_decoder():
    plain, detail = tiny(detail=False), tiny(detail=True)
    extra = {k for k in detail.state_dict() if k not in plain.state_dict()}
    assert extra and all(
        k.startswith(("detail_stem.", "mask_decoder.detail_fusion.")) for k in extra
    )
    state = {k: v for k, v in detail.state_dict().items() if k not in extra}
    load_state_dict_strict(plain, state, source_format="own", log=False)
    torch.manual_seed(2)
    embedding = torch.randn(1, 32, 8, 8)
    image = torch.randn(1, 3, 128, 128)
    sparse, dense = plain.prompt_encoder(
        points=(torch.tensor([[[40.0, 50.0]]]), torch.tensor([[1]])), boxes=None, masks=None
    )
    pe = plain.prompt_encoder.get_dense_pe()
    expected = plain.mask_decoder.predict_masks(embedding, pe, sparse, dense)
    got = detail.mask_decoder.predict_masks(
        embedding, pe, sparse, dense, detail.image_details(image)
    )
    for a, b in zip(expected, got, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_details_are_required_exactly_when_configured():
    plain, detail = tiny(detail=False), tiny(detail=True)
    sparse, dense = plain.prompt_encoder(
        points=(torch.tensor([[[40.0, 50.0]]]), torch.tensor([[1]])), boxes=None, masks=None
    )
    pe, embedding = plain.prompt_encoder.get_dense_pe(), torch.zeros(1, 32, 8, 8)
    details = torch.zeros(1, DETAIL_DIM, 32, 32)
    with pytest.raises(ValueError, match="without detail_dim"):
        plain.mask_decoder.predict_masks(embedding, pe, sparse, dense, details)
    with pytest.raises(ValueError, match="pass the image's detail_features"):
        detail.mask_decoder.predict_masks(embedding, pe, sparse, dense)
    assert plain.image_details(torch.zeros(1, 3, 128, 128)) is None


def test_forward_and_predictor_pass_the_details(one_thread):
    model = tiny(detail=True)
    randomise_fusion(model)
    image = scene(96, 128)  # not square: the padding is part of the stem's input too
    predictor = SamPredictor(model)
    predictor.set_image(image)
    assert predictor.details.shape == (1, DETAIL_DIM, 32, 32)
    point = np.array([[60, 40]])
    masks, iou, low_res = predictor.predict(point, np.array([1]), multimask_output=True)
    resized = torch.as_tensor(predictor.transform.apply_image(image)).permute(2, 0, 1)
    coords = torch.as_tensor(predictor.transform.apply_coords(point, image.shape[:2]))
    record = {
        "image": resized.float(),
        "original_size": image.shape[:2],
        "point_coords": coords[None].float(),
        "point_labels": torch.tensor([[1]]),
    }
    out = model([record], multimask_output=True)[0]
    torch.testing.assert_close(out["low_res_logits"][0], torch.as_tensor(low_res))
    torch.testing.assert_close(out["iou_predictions"][0], torch.as_tensor(iou))
    assert np.array_equal(out["masks"][0].numpy(), masks)
    predictor.details = torch.zeros_like(predictor.details)  # the details do change the masks
    _, _, without = predictor.predict(point, np.array([1]), multimask_output=True)
    assert np.abs(without - low_res).max() > 0.1


@pytest.mark.parametrize("frozen", [False, True])
def test_trainable_sam_trains_the_stem(one_thread, frozen):
    """The stem and the fusion get gradients, with the encoder training or frozen (cached)."""
    model = tiny(detail=True, trainable=True)
    model.freeze_image_encoder = frozen
    if frozen:
        model.image_encoder.requires_grad_(False)
    randomise_fusion(model)
    model.train()
    losses = model(batch())
    sum(losses.values()).backward()
    for name in (
        "detail_stem.0.weight",
        "detail_stem.3.weight",
        "mask_decoder.detail_fusion.weight",
    ):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    encoder_grads = [p.grad for p in model.image_encoder.parameters() if p.grad is not None]
    assert bool(encoder_grads) != frozen
    model.eval()
    out = model(batch())[0]["sam"]
    assert out["box"].shape == (3, 128, 128)
