"""SAM on our ViT: the release's state-dict layout for B / L / H, config invariants, fast paths
against the reference paths, and strict, safe checkpoint loading."""

import numpy as np
import pytest
import torch
from detectron2.config import instantiate
from pycocotools import mask as mask_utils

from vitdet.checkpoint import CheckpointError
from vitdet.config import load_config
from vitdet.modeling import onednn
from vitdet.modeling.sam import LinMlp
from vitdet.modeling.sam.transformer import Attention, fused_attn_applies
from vitdet.modeling.vit import Block
from vitdet.sam import build_sam, sam_model_registry
from vitdet.sam.masks import masks_to_rle, rle_area, rle_to_coco, rle_to_mask

from helpers import REPO

KEYS_DIR = REPO / "tests" / "data" / "sam_keys"
CONFIG_DIR = REPO / "configs" / "SAM"
# Millions of parameters (from the release's key lists, SAM_FACTS.md).
PARAMS = {"vit_b": 93.7, "vit_l": 312.3, "vit_h": 641.1}


def read_keys(name: str) -> dict[str, tuple[int, ...]]:
    keys = {}
    for line in (KEYS_DIR / f"sam_{name}.txt").read_text().splitlines():
        key, shape = line.split(" ", 1)
        keys[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return keys


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
def test_state_dict_is_the_release_layout(name):
    with torch.device("meta"):
        model = build_sam(name)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == read_keys(name)
    assert round(sum(v.numel() for v in model.state_dict().values()) / 1e6, 1) == PARAMS[name]
    assert all(
        isinstance(b, Block) and isinstance(b.mlp, LinMlp) for b in model.image_encoder.blocks
    )


def test_registry_and_configs_agree():
    assert set(sam_model_registry) == {"default", "vit_b", "vit_l", "vit_h", "vit_tiny"}
    for path in sorted(CONFIG_DIR.glob("sam_vit_*.py")):
        m = load_config(path).model
        enc, pe = m.image_encoder, m.prompt_encoder
        grid = enc.img_size // enc.patch_size
        assert tuple(pe.image_embedding_size) == (grid, grid), path.name
        assert tuple(pe.input_image_size) == (enc.img_size, enc.img_size), path.name
        assert max(enc.global_attn_indexes) == enc.depth - 1, path.name
        assert pe.embed_dim == m.mask_decoder.transformer_dim == enc.out_chans, path.name


def test_fast_paths_match_reference_paths():
    torch.manual_seed(0)
    fast = build_sam("vit_tiny")
    plain = build_sam(
        "vit_tiny",
        overrides=[
            "model.image_encoder.use_fused_attn=False",
        ],
    )
    plain.load_state_dict(fast.state_dict())
    for m in plain.mask_decoder.modules():
        if hasattr(m, "use_fused_attn"):
            m.use_fused_attn = False
    image = torch.rand(1, 3, 128, 96) * 255
    points = (torch.tensor([[[20.0, 30.0], [60.0, 90.0]]]), torch.tensor([[1, 0]]))
    with torch.no_grad():
        emb_fast = fast.image_encoder(fast.preprocess(image))
        with onednn.disabled():
            emb_plain = plain.image_encoder(plain.preprocess(image))
        torch.testing.assert_close(emb_fast, emb_plain, atol=1e-5, rtol=1e-5)
        outs = []
        for model in (fast, plain):
            sparse, dense = model.prompt_encoder(points, None, None)
            outs.append(
                model.mask_decoder.predict_masks(
                    emb_plain, model.prompt_encoder.get_dense_pe(), sparse, dense
                )
            )
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)


def test_decoder_attention_takes_the_plain_path_in_low_precision_on_the_cpu():
    torch.manual_seed(0)
    attn = Attention(embedding_dim=32, num_heads=4, downsample_rate=2)
    q, kv = torch.randn(3, 7, 32), torch.randn(3, 50, 32)
    assert fused_attn_applies(q) and not fused_attn_applies(q.bfloat16())
    with torch.no_grad():
        reference = attn(q, kv, kv)
        attn.use_fused_attn = False
        torch.testing.assert_close(attn(q, kv, kv), reference, atol=1e-6, rtol=1e-5)
        attn.use_fused_attn = True
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = attn(q, kv, kv)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), reference, atol=3e-2, rtol=3e-2)


def test_checkpoint_loads_strictly_and_safely(tmp_path, caplog):
    torch.manual_seed(0)
    src = build_sam("vit_tiny")
    path = tmp_path / "sam_vit_tiny.pth"
    torch.save(src.state_dict(), path)  # a release file is a plain state dict
    with caplog.at_level("INFO", logger="vitdet.checkpoint"):
        model = build_sam("vit_tiny", checkpoint=path)
    assert not model.training
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert (
        "checkpoint format own" in caplog.text
        and f"loaded {len(src.state_dict())}\n" in caplog.text
    )

    bad = dict(src.state_dict())
    bad.pop("mask_decoder.iou_token.weight")
    bad["mask_decoder.extra"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="iou_token.weight: missing"):
        build_sam("vit_tiny", checkpoint=tmp_path / "bad.pth")

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"model": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="weights_only"):
        build_sam("vit_tiny", checkpoint=tmp_path / "evil.pth")


def test_unknown_model_type():
    with pytest.raises(ValueError, match="vit_b"):
        build_sam("vit_x")


def test_instantiate_from_config_is_build_sam():
    torch.manual_seed(0)
    a = instantiate(load_config(CONFIG_DIR / "sam_vit_tiny.py").model)
    assert set(a.state_dict()) == set(build_sam("vit_tiny").state_dict())


def test_rle_round_trip():
    rng = torch.Generator().manual_seed(0)
    masks = torch.rand(5, 13, 7, generator=rng) > 0.5
    masks[0] = False
    masks[1] = True
    for mask, rle in zip(masks, masks_to_rle(masks), strict=True):
        assert np.array_equal(rle_to_mask(rle), mask.numpy())
        assert rle_area(rle) == int(mask.sum())
        expected = mask_utils.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
        assert rle_to_coco(rle)["counts"] == expected["counts"].decode()
