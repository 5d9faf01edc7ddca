"""Weights across the two families: a SAM checkpoint initialises a ViTDet backbone (format
"sam"), and its encoder's trunk computes what SAM's does."""

import pytest
import torch
from detectron2.config import instantiate

from vitdet.checkpoint import detect_format, load_checkpoint, read_checkpoint
from vitdet.config import load_config
from vitdet.modeling import ViT
from vitdet.sam import build_sam

from helpers import COCO_CONFIG, REPO, TINY_DETECTOR

# The tiny detector with the tiny SAM's encoder: width 32, 2 heads, window 4, block 1 global.
SAM_LIKE = [
    *TINY_DETECTOR,
    "model.backbone.net.embed_dim=32",
    "model.backbone.net.window_size=4",
]
SAM_LAYOUT = [
    "model.backbone.net.pretrain_img_size=128",
    "model.backbone.net.pretrain_use_cls_token=False",
]


@pytest.fixture(scope="module")
def sam_file(tmp_path_factory):
    torch.manual_seed(0)
    sam = build_sam("vit_tiny")
    with torch.no_grad():
        for p in sam.parameters():
            p.normal_(0, 0.2)
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    torch.save(sam.state_dict(), path)
    return sam, path


def trunk(sam, x):
    """SAM's encoder before its neck: (B, C, H / 16, W / 16)."""
    seen = {}
    handle = sam.image_encoder.neck.register_forward_hook(lambda m, i, o: seen.update(x=i[0]))
    sam.image_encoder(x)
    handle.remove()
    return seen["x"]


def test_detect_format(sam_file):
    assert read_checkpoint(str(sam_file[1])).source_format == "sam"
    assert detect_format({"mask_decoder.iou_token.weight": torch.zeros(1)}) == "sam"


def test_sam_encoder_initialises_a_detector(sam_file, one_thread):
    sam, path = sam_file
    detector = instantiate(load_config(COCO_CONFIG, [*SAM_LIKE, *SAM_LAYOUT]).model).eval()
    report = load_checkpoint(detector, str(path))
    assert report.source_format == "sam" and not report.resampled and not report.refused
    assert {k for k in detector.state_dict() if k.startswith("backbone.net.")} == set(report.loaded)
    assert report.new and all(
        k.startswith(("backbone.simfp", "proposal_generator.", "roi_heads.")) for k in report.new
    )
    assert set(report.dropped) == {
        k
        for k in sam.state_dict()
        if k.startswith(("image_encoder.neck.", "prompt_encoder.", "mask_decoder."))
    }
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        ours = detector.backbone.net(x)["last_feat"]
        torch.testing.assert_close(ours, trunk(sam, x), atol=1e-5, rtol=1e-5)


def test_default_layout_resamples_positions(sam_file):
    _, path = sam_file
    detector = instantiate(load_config(COCO_CONFIG, SAM_LIKE).model)  # pretraining grid 224, cls
    report = load_checkpoint(detector, str(path))
    assert report.resampled == ("backbone.net.pos_embed",)
    assert "checkpoint format sam" in report.summary()


def test_bare_vit(sam_file):
    sam, path = sam_file
    vit = ViT(
        img_size=128,
        embed_dim=32,
        depth=2,
        num_heads=2,
        window_size=4,
        global_attn_indexes=(1,),
        pretrain_img_size=128,
        pretrain_use_cls_token=False,
    ).eval()
    report = load_checkpoint(vit, str(path))
    assert not report.new and len(report.loaded) == len(vit.state_dict())
    x = torch.randn(1, 3, 96, 128)  # a non-square input: both resample the positions alike
    with torch.no_grad():
        torch.testing.assert_close(vit(x)["last_feat"], trunk(sam, x), atol=1e-5, rtol=1e-5)


def test_sam_init_config():
    cfg = load_config(REPO / "configs" / "SAM" / "mask_rcnn_vitdet_b_sam_init.py")
    net = cfg.model.backbone.net
    sam = load_config(REPO / "configs" / "SAM" / "sam_vit_b.py").model.image_encoder
    assert net.pretrain_img_size == sam.img_size and not net.pretrain_use_cls_token
    for key in ("embed_dim", "depth", "num_heads", "window_size", "patch_size"):
        assert net[key] == sam[key], key
    assert tuple(net.global_attn_indexes) == tuple(sam.global_attn_indexes)
    assert cfg.train.init_checkpoint.startswith("sam_vit_b")
