"""MaskSampledROIHeads: the mask head trains on at most N foreground RoIs per image, drawn
uniformly; the box branch and inference are detectron2's StandardROIHeads' to the bit."""

import pytest
import torch
from detectron2.config import instantiate
from detectron2.modeling.roi_heads import StandardROIHeads
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage
from hypothesis import given, settings
from hypothesis import strategies as st

from vitdet.config import load_config
from vitdet.modeling.roi_heads import MaskSampledROIHeads, sample_instances

from helpers import COCO_CONFIG, SYNTHETIC_CONFIG, TEST_SIZE, TINY_DETECTOR

SAMPLED = "model.roi_heads._target_=vitdet.modeling.roi_heads.MaskSampledROIHeads"


def proposals(n: int) -> Instances:
    instances = Instances((64, 64), proposal_boxes=Boxes(torch.rand(n, 4) * 64))
    instances.index = torch.arange(n)
    return instances


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 40), limit=st.integers(1, 20), seed=st.integers(0, 2**16))
def test_sample_keeps_a_sorted_subset_of_at_most_limit(n, limit, seed):
    torch.manual_seed(seed)
    kept = sample_instances(proposals(n), limit).index
    assert len(kept) == min(n, limit)
    assert torch.all(kept[1:] > kept[:-1])  # distinct, original order
    torch.manual_seed(seed)
    assert torch.equal(sample_instances(proposals(n), limit).index, kept)  # seeded: repeats


def test_sample_draws_every_proposal_equally_often():
    """Uniform without replacement: each of 10 proposals kept in 3 / 10 of the draws."""
    torch.manual_seed(0)
    draws = 4000
    counts = torch.zeros(10)
    for _ in range(draws):
        counts[sample_instances(proposals(10), 3).index] += 1
    # binomial(4000, 0.3): standard deviation 29 draws; 5 sigma
    assert torch.all((counts - 0.3 * draws).abs() < 5 * 29), counts


def detector(*overrides: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return instantiate(load_config(COCO_CONFIG, [*TINY_DETECTOR, *overrides]).model)


def training_batch() -> list[dict]:
    """Two 128 px images with 6 objects each (rectangles with their masks)."""
    generator = torch.Generator().manual_seed(1)
    batch = []
    for _ in range(2):
        xy = torch.randint(0, TEST_SIZE - 40, (6, 2), generator=generator)
        wh = torch.randint(12, 40, (6, 2), generator=generator)
        boxes = torch.cat([xy, xy + wh], 1).float()
        masks = torch.zeros(6, TEST_SIZE, TEST_SIZE, dtype=torch.bool)
        for mask, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist(), strict=True):
            mask[y0:y1, x0:x1] = True
        instances = Instances((TEST_SIZE, TEST_SIZE), gt_boxes=Boxes(boxes))
        instances.gt_classes = torch.randint(0, 80, (6,), generator=generator)
        instances.gt_masks = BitMasks(masks)
        image = torch.randint(0, 256, (3, TEST_SIZE, TEST_SIZE), generator=generator)
        batch.append({"image": image.float(), "instances": instances})
    return batch


def training_losses(model: torch.nn.Module, seen: list[list[int]]) -> dict[str, torch.Tensor]:
    """The model's training losses on training_batch(); appends to ``seen`` the gt classes of
    the RoIs the mask head was given, per image."""

    def record(module, args):
        seen.append([x.gt_classes.tolist() for x in args[1]])

    handle = model.roi_heads.mask_head.register_forward_pre_hook(record)
    model.train()
    torch.manual_seed(2)
    with EventStorage(0):  # detectron2's heads log training statistics
        losses = model(training_batch())
    handle.remove()
    return losses


def test_mask_head_trains_on_at_most_n_foreground_rois_and_box_losses_are_unchanged():
    standard = detector()
    assert type(standard.roi_heads) is StandardROIHeads
    sampled = detector(SAMPLED, "+model.roi_heads.mask_rois_per_image=2")
    assert isinstance(sampled.roi_heads, MaskSampledROIHeads)
    sampled.load_state_dict(standard.state_dict())

    all_rois, few_rois = [], []
    expected = training_losses(standard, all_rois)
    got = training_losses(sampled, few_rois)
    # every image has >= 6 foreground RoIs (its ground truth is added to the proposals)
    assert all(len(classes) >= 6 for classes in all_rois[0])
    assert [len(classes) for classes in few_rois[0]] == [2, 2]
    for image_all, image_few in zip(all_rois[0], few_rois[0], strict=True):
        assert all(c < 80 for c in image_few)  # foreground only
        assert set(image_few) <= set(image_all)
    for name in ("loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"):
        assert torch.equal(got[name], expected[name]), name
    assert torch.isfinite(got["loss_mask"]) and not torch.equal(
        got["loss_mask"], expected["loss_mask"]
    )


def test_a_limit_above_every_count_changes_nothing():
    standard = detector()
    sampled = detector(SAMPLED, "+model.roi_heads.mask_rois_per_image=1000")
    sampled.load_state_dict(standard.state_dict())
    expected, got = training_losses(standard, []), training_losses(sampled, [])
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


def test_inference_is_standard():
    standard = detector().eval()
    sampled = detector(SAMPLED, "+model.roi_heads.mask_rois_per_image=1").eval()
    sampled.load_state_dict(standard.state_dict())
    inputs = [{"image": batch["image"]} for batch in training_batch()]
    with torch.no_grad():
        for want, have in zip(standard(inputs), sampled(inputs), strict=True):
            want, have = want["instances"], have["instances"]
            assert len(want) > 0
            assert torch.equal(have.pred_boxes.tensor, want.pred_boxes.tensor)
            assert torch.equal(have.pred_masks, want.pred_masks)


def test_limit_below_one_is_refused():
    with pytest.raises(ValueError, match="mask_rois_per_image must be >= 1"):
        detector(SAMPLED, "+model.roi_heads.mask_rois_per_image=0")


def test_the_synthetic_configs_cap_is_turned_off_with_null():
    assert load_config(SYNTHETIC_CONFIG, []).model.roi_heads.mask_rois_per_image == 8
    off = load_config(SYNTHETIC_CONFIG, ["model.roi_heads.mask_rois_per_image=null"]).model
    assert off.roi_heads.mask_rois_per_image is None
    assert instantiate(off).roi_heads.mask_rois_per_image is None
