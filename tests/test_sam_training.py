"""SAM training (vitdet.modeling.sam.training): losses against hand computations, prompt
sampling inside masks and error regions, min-loss selection, the training / evaluation forward,
the frozen encoder's cache, and the pieces it needs elsewhere (solver, checkpoint, mapper)."""

import math

import numpy as np
import pytest
import torch
from detectron2.config import instantiate
from detectron2.structures import BitMasks, Boxes, Instances

from vitdet.checkpoint import load_checkpoint
from vitdet.config import load_config
from vitdet.data.mapper import DetectionMapper
from vitdet.modeling.sam.training import (
    TrainableSam,
    centre_points,
    dice_loss,
    error_points,
    mask_iou,
    noisy_boxes,
    select_min_loss,
    sigmoid_focal_loss,
    uniform_points,
)
from vitdet.solver import vit_layer_id, vitdet_param_groups

from helpers import REPO, scene

TINY = REPO / "configs" / "SAM" / "sam_vit_tiny.py"


def test_focal_loss_by_hand():
    # one pixel of logit 0 (p = 0.5) on the foreground: 0.25 * 0.5^2 * ln 2
    logits, target = torch.zeros(1, 1, 1), torch.ones(1, 1, 1)
    assert sigmoid_focal_loss(logits, target).item() == pytest.approx(0.25 * 0.25 * math.log(2))
    # logit 2 on the background: p = s(2), (1 - 0.25) * p^2 * -ln(1 - p), mean with a 0 pixel
    p = 1 / (1 + math.exp(-2))
    logits, target = torch.tensor([[[2.0, -50.0]]]), torch.zeros(1, 1, 2)
    expected = (0.75 * p**2 * -math.log(1 - p) + 0.0) / 2
    assert sigmoid_focal_loss(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_dice_loss_by_hand():
    # p = (0.5, 0.5), t = (1, 0): 1 - (2 * 0.5 + 1) / (1 + 1 + 1) = 1/3
    logits, target = torch.zeros(1, 1, 2), torch.tensor([[[1.0, 0.0]]])
    assert dice_loss(logits, target).item() == pytest.approx(1 / 3)
    # a confident perfect prediction: ~0
    assert dice_loss(torch.tensor([[[50.0, -50.0]]]), target).item() == pytest.approx(0, abs=1e-6)


def test_mask_iou_and_min_loss():
    a = torch.zeros(2, 4, 4, dtype=torch.bool)
    b = a.clone()
    a[0, :2], b[0, 1:3] = True, True  # 4 common of 12
    assert mask_iou(a, b).tolist() == pytest.approx([1 / 3, 1.0])  # empty vs empty: 1
    assert select_min_loss(torch.tensor([[3.0, 1.0, 2.0], [0.5, 0.7, 0.1]])).tolist() == [1, 2]


def test_uniform_points_inside_and_seeded():
    masks = torch.zeros(3, 20, 30, dtype=torch.bool)
    masks[0, 5:8, 10:12] = True
    masks[1, 19, 29] = True
    torch.manual_seed(0)
    coords, found = uniform_points(masks)
    assert found.tolist() == [True, True, False] and coords[2].tolist() == [0, 0]
    for i in range(2):
        x, y = coords[i].long().tolist()
        assert masks[i, y, x]
    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        seen.add(tuple(uniform_points(masks)[0][0].tolist()))
    assert len(seen) == 6  # every pixel of the 3 x 2 region is drawn
    torch.manual_seed(3)
    again = uniform_points(masks)[0]
    torch.manual_seed(3)
    assert torch.equal(again, uniform_points(masks)[0])


def test_uniform_points_are_uniform():
    region = torch.zeros(12, 9, dtype=torch.bool)
    region[2:4, 3:6] = True  # 6 pixels
    region[10, 0] = True  # and a lone one far away: 7
    torch.manual_seed(0)
    coords, found = uniform_points(region.expand(7000, -1, -1))
    assert found.all()
    x, y = coords.long().unbind(1)
    assert region[y, x].all()
    counts = torch.bincount(y * 9 + x, minlength=12 * 9)[region.flatten()]
    assert len(counts) == 7 and (counts - 1000).abs().max() < 130  # 1000 +- 4.3 sigma


def test_error_points_labels():
    gt = torch.zeros(3, 10, 10, dtype=torch.bool)
    pred = gt.clone()
    gt[0, 2:5, 2:5] = True  # all missed: a false negative, label 1
    pred[1, 6:8, 6:8] = True  # all spurious: a false positive, label 0
    gt[2, 0:3, 0:3], pred[2, 0:3, 0:3] = True, True  # perfect: padding
    torch.manual_seed(0)
    coords, labels = error_points(pred, gt)
    assert labels.tolist() == [1, 0, -1]
    x, y = coords[0].long().tolist()
    assert gt[0, y, x] and not pred[0, y, x]
    x, y = coords[1].long().tolist()
    assert pred[1, y, x] and not gt[1, y, x]


def test_error_points_stay_in_each_masks_image():
    """Per-mask valid regions (a batch of images of different sizes, padded to one square): a
    false positive in a mask's padding is never drawn."""
    gt = torch.zeros(2, 10, 10, dtype=torch.bool)
    pred = torch.ones(2, 10, 10, dtype=torch.bool)  # all false positive
    valid = torch.zeros(2, 10, 10, dtype=torch.bool)
    valid[0, :, :4], valid[1, :6, :] = True, True  # a 10 x 4 and a 6 x 10 image
    torch.manual_seed(0)
    for _ in range(50):
        coords, labels = error_points(pred, gt, valid)
        assert labels.tolist() == [0, 0]
        assert coords[0, 0] < 4 and coords[1, 1] < 6


def test_noisy_boxes_bounded():
    torch.manual_seed(0)
    boxes = torch.tensor([[10.0, 10.0, 110.0, 60.0]] * 500)
    out = noisy_boxes(boxes, noise_ratio=0.1, max_noise=8.0, size=(100, 100))
    delta = out - boxes
    # std 10 px (10% of 100) bounded at 8: P(|N(0, 1)| > 0.8) = 0.42 of the draws are clamped
    assert delta[:, 0].abs().max() <= 8.0
    assert (delta[:, 0].abs() == 8.0).float().mean().item() == pytest.approx(0.42, abs=0.06)
    assert out[:, 2].max() <= 100  # clipped to the width
    assert delta[:, 1].std() == pytest.approx(5.0, abs=0.5)  # 10% of a 50 px side
    per_box = torch.tensor([[100, 100], [40, 30]]).repeat(250, 1)  # (h, w) of each box's image
    out = noisy_boxes(boxes, noise_ratio=0.1, max_noise=8.0, size=per_box)
    assert out[1::2, 2].max() <= 30 and out[1::2, 3].max() <= 40 and out[::2, 2].max() > 30


def test_centre_points():
    masks = torch.zeros(2, 11, 21, dtype=torch.bool)
    masks[0, 2:9, 3:10] = True  # 7 x 7 square: centre (6, 5)
    coords, found = centre_points(masks)
    assert coords[0].tolist() == [6, 5] and found.tolist() == [True, False]


def tiny_sam(**kwargs) -> TrainableSam:
    cfg = load_config(TINY)
    cfg.model._target_ = TrainableSam
    for k, v in {"num_masks_per_image": 4, "num_correction_points": 2, **kwargs}.items():
        cfg.model[k] = v
    torch.manual_seed(0)
    return instantiate(cfg.model)


def batch(seed: int = 0, size: int = 128) -> list[dict]:
    image = torch.as_tensor(scene(size, size, seed).transpose(2, 0, 1).copy())
    masks = torch.zeros(3, size, size, dtype=torch.bool)
    masks[0, 10:40, 20:70] = True
    masks[1, 60:100, 60:90] = True
    masks[2, 100:120, 5:30] = True
    inst = Instances((size, size))
    inst.gt_masks = BitMasks(masks)
    inst.gt_boxes = Boxes(BitMasks(masks).get_bounding_boxes().tensor)
    inst.gt_classes = torch.tensor([0, 1, 0])
    return [{"image": image, "instances": inst, "image_id": seed}]


def test_train_forward_seeded_and_trains(one_thread):
    model = tiny_sam()
    model.train()
    torch.manual_seed(1)
    losses = model(batch())
    assert set(losses) == {"loss_mask_focal", "loss_mask_dice", "loss_iou"}
    torch.manual_seed(1)
    again = model(batch())
    for k in losses:
        assert torch.equal(losses[k], again[k])
    sum(losses.values()).backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert any(n.startswith("image_encoder.blocks") for n in grads)
    assert "prompt_encoder.no_mask_embed.weight" in grads  # first iteration
    assert "prompt_encoder.mask_downscaling.0.weight" in grads  # later ones
    # a few steps of Adam on one batch lower the loss
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    first = None
    for step in range(15):
        torch.manual_seed(step)
        loss = sum(model(batch()).values())
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first


def test_batch_loss_is_the_mean_over_its_images_masks(one_thread):
    """The masks of all images of a batch go through each decoder pass together, each with its
    own image's embedding and size: with deterministic prompts (exact boxes, no corrections) a
    batch of two images of different sizes gives the mean of the two one-image losses."""
    model = tiny_sam(
        num_correction_points=0, num_mask_only_iterations=0, box_probability=1.0, box_max_noise=0
    )
    model.train()
    first = batch(0)[0]
    second = batch(1)[0]
    second["image"] = second["image"][:, :, :96]  # 128 x 96: padded to 128 x 128 in the batch
    inst = Instances((128, 96))
    inst.gt_masks = BitMasks(second["instances"].gt_masks.tensor[:, :, :96])
    second["instances"] = inst
    together = model([first, second])
    alone = [model([first]), model([second])]
    for k, value in together.items():
        assert value.item() == pytest.approx((alone[0][k] + alone[1][k]).item() / 2, rel=1e-4)


@pytest.mark.parametrize(
    "box_probability, box_multimask_output", [(0.0, False), (1.0, False), (1.0, True)]
)
def test_first_prompt_backpropagates_one_output(one_thread, box_probability, box_multimask_output):
    """One point: exactly one of the three multimask outputs (the lowest loss); a box: the
    single output only, or as a point with ``box_multimask_output``."""
    model = tiny_sam(
        num_correction_points=0,
        num_mask_only_iterations=0,
        box_probability=box_probability,
        box_multimask_output=box_multimask_output,
    )
    model.train()
    seen = {}
    predict_masks = model.mask_decoder.predict_masks

    def spy(*args):
        seen["out"] = predict_masks(*args)
        return seen["out"]

    model.mask_decoder.predict_masks = spy
    torch.manual_seed(0)
    losses = model(batch())  # only the first iteration
    masks, iou_pred = seen["out"]
    masks.retain_grad()
    iou_pred.retain_grad()
    sum(losses.values()).backward()
    grad = masks.grad.flatten(2).abs().sum(-1)  # (N, 4)
    if box_probability and not box_multimask_output:
        assert (grad[:, 0] > 0).all() and (grad[:, 1:] == 0).all()
        assert (iou_pred.grad[:, 0] != 0).all() and (iou_pred.grad[:, 1:] == 0).all()
    else:
        assert (grad[:, 0] == 0).all()  # the single output is not used with one point
        assert ((grad[:, 1:] > 0).sum(1) == 1).all()  # one multimask output per mask
        assert (iou_pred.grad[:, 0] == 0).all() and (iou_pred.grad[:, 1:] != 0).all()


def test_frozen_encoder_cache_and_eval(one_thread):
    model = tiny_sam(freeze_image_encoder=True, embedding_cache_size=8, eval_clicks=(1, 3))
    model.train()
    assert not model.image_encoder.training
    assert not any(p.requires_grad for p in model.image_encoder.parameters())
    groups = vitdet_param_groups(model, base_lr=1.0, weight_decay=0.1, num_layers=2)
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())
    calls = []
    model.image_encoder.register_forward_hook(lambda m, i, o: calls.append(1))
    model(batch(0))
    model(batch(0))
    model(batch(1))
    assert len(calls) == 2 and len(model._cache) == 2
    model.eval()
    out = model(batch(0))[0]["sam"]
    assert set(out) == {"box", "point", "click1", "click3", "prompts"}
    assert out["box"].shape == (3, 128, 128) and out["box"].dtype == torch.bool
    assert torch.equal(out["click1"], out["point"])
    coords = out["prompts"]["point_coords"]
    gt = batch(0)[0]["instances"].gt_masks.tensor
    for i in range(3):  # the evaluation point is inside its mask
        x, y = coords[i, 0].long().tolist()
        assert gt[i, y, x]
    assert out["prompts"]["click_labels"].shape == (3, 4)  # point, pad, 2 clicks


def test_tie_query_key_init():
    tied, untied = tiny_sam(tie_query_key_init=True), tiny_sam()
    names = [n for n, _ in tied.mask_decoder.transformer.named_modules() if n.endswith("_proj")]
    attn = {n.rsplit(".", 1)[0] for n in names}
    assert len(attn) == 3 + 1  # depth 1: self, token->image, image->token; final
    for name in sorted(attn):
        module = tied.mask_decoder.transformer.get_submodule(name)
        same = torch.equal(module.k_proj.weight, module.q_proj.weight)
        assert same == (not name.endswith("self_attn")), name
        assert torch.equal(module.k_proj.bias, module.q_proj.bias) == same
        other = untied.mask_decoder.transformer.get_submodule(name)
        assert torch.equal(module.q_proj.weight, other.q_proj.weight)  # same draws otherwise
        assert not torch.equal(other.k_proj.weight, other.q_proj.weight)


def test_sam_lr_decay_layers():
    assert vit_layer_id("image_encoder.pos_embed", 12) == 0
    assert vit_layer_id("image_encoder.patch_embed.proj.weight", 12) == 0
    assert vit_layer_id("image_encoder.blocks.3.attn.qkv.weight", 12) == 4
    assert vit_layer_id("image_encoder.neck.0.weight", 12) == 13
    assert vit_layer_id("mask_decoder.iou_token.weight", 12) == 13


def test_sam_checkpoint_into_trainable_sam(tmp_path):
    source = tiny_sam()
    path = tmp_path / "sam_tiny.pth"
    torch.save(source.state_dict(), path)  # the release's layout (a plain state dict)
    target = tiny_sam()
    for p in target.parameters():
        p.data.zero_()
    report = load_checkpoint(target, str(path))
    assert report.source_format == "own" and not report.new
    for k, v in source.state_dict().items():
        assert torch.equal(v, target.state_dict()[k])


def test_mapper_keeps_annotations_at_test_time(tmp_path):
    import cv2

    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.zeros((20, 30, 3), np.uint8))
    seg = [[2.0, 2.0, 12.0, 2.0, 12.0, 10.0, 2.0, 10.0]]
    record = {
        "file_name": str(path),
        "height": 20,
        "width": 30,
        "annotations": [
            {"bbox": [2, 2, 10, 8], "bbox_mode": 1, "category_id": 0, "segmentation": seg}
        ],
    }
    kw = dict(augmentations=[], image_format="RGB", use_instance_mask=True)
    assert "instances" not in DetectionMapper(False, **kw)(record)
    kept = DetectionMapper(False, keep_annotations=True, instance_mask_format="bitmask", **kw)(
        record
    )
    assert kept["instances"].gt_masks.tensor.shape == (1, 20, 30)
