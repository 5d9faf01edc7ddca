"""MAE pretraining: masking, visible-only encoding, the masked-patch loss and its norm-pix target,
the unlabeled-image folder, tools/pretrain_mae.py (run, resume, reconstruction picture) and the
round trip of its checkpoint into a ViTDet model (tiny, CPU, seeded)."""

import fnmatch
import inspect
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from PIL import Image

from vitdet.checkpoint import MAE_DROPPED_KEYS, load_checkpoint, read_checkpoint
from vitdet.config import load_config
from vitdet.data import DatasetError
from vitdet.data.unlabeled import (
    UnlabeledImages,
    build_unlabeled_train_loader,
    list_images,
    load_eval_images,
    train_transform,
)
from vitdet.modeling.mae import (
    MaskedAutoencoderViT,
    normalize_patches,
    patchify,
    pixel_mask,
    random_masking,
    unpatchify,
)
from vitdet.modeling.stems import ConvStem
from vitdet.modeling.vit import ViT

from helpers import REPO, load_tool
from helpers import SYNTHETIC_CONFIG as SYNTHETIC_PATH

SYNTHETIC_CONFIG = str(SYNTHETIC_PATH)
MAE_CONFIG = str(REPO / "configs" / "MAE" / "mae_vit_tiny_synthetic.py")
MAE_B_CONFIG = str(REPO / "configs" / "MAE" / "mae_vit_b.py")
COCO_B_CONFIG = str(REPO / "configs" / "COCO" / "mask_rcnn_vitdet_b_100ep.py")

# 64 px = 4 x 4 patches of 16: 12 masked, 4 visible.
TINY = dict(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2)
TINY_DECODER = dict(decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_mae(**kwargs) -> MaskedAutoencoderViT:
    return MaskedAutoencoderViT(**TINY, **TINY_DECODER, **kwargs)


def images(batch: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 3, size, size)).float()


# --- patches and masking --------------------------------------------------------------------


def test_patchify_layout_and_inverse():
    imgs = torch.randn(2, 3, 32, 48)
    patches = patchify(imgs, 16)
    assert patches.shape == (2, 2 * 3, 16 * 16 * 3)
    # patch (row 1, column 2) = token 1 * 3 + 2, pixels in (row, column, channel) order
    expected = imgs[:, :, 16:32, 32:48].permute(0, 2, 3, 1).reshape(2, -1)
    assert torch.equal(patches[:, 5], expected)
    assert torch.equal(unpatchify(patches, 16, (2, 3)), imgs)
    with pytest.raises(ValueError, match="not a multiple"):
        patchify(torch.randn(1, 3, 40, 48), 16)


@pytest.mark.parametrize("grid,ratio", [((4, 4), 0.75), ((14, 14), 0.75), ((3, 5), 0.6)])
def test_random_masking_is_exact_per_image(grid, ratio):
    num_tokens = grid[0] * grid[1]
    masking = random_masking(5, grid, ratio)
    num_masked = round(num_tokens * ratio)
    assert masking.mask.shape == (5, num_tokens)
    assert masking.mask.sum(dim=1).tolist() == [num_masked] * 5  # the same count in each image
    assert masking.ids_keep.shape == (5, num_tokens - num_masked)
    # the kept tokens are exactly the unmasked ones, and ids_restore inverts the shuffle
    assert torch.all(masking.mask.gather(1, masking.ids_keep) == 0)
    for b in range(5):
        assert set(masking.ids_keep[b].tolist()) == set(
            torch.where(masking.mask[b] == 0)[0].tolist()
        )
    assert torch.equal(
        masking.ids_restore.sort(dim=1).values, torch.arange(num_tokens).expand(5, -1)
    )
    # different images, different masks
    assert not torch.equal(masking.mask[0], masking.mask[1])
    assert pixel_mask(masking, 16).shape == (5, 1, grid[0] * 16, grid[1] * 16)


def test_model_masks_75_percent_of_each_image():
    model = tiny_mae()
    _, masking = model.forward_encoder(model.normalize(images(batch=3)))
    assert masking.mask.sum(dim=1).tolist() == [12.0, 12.0, 12.0]  # 75% of 16 patches


# --- encoder and decoder --------------------------------------------------------------------


@pytest.mark.parametrize("stem", ["patchify", "conv"])
def test_encoder_sees_only_the_visible_tokens(stem):
    extra = {"patch_embed_layer": ConvStem} if stem == "conv" else {}
    model = tiny_mae(**extra).eval()
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda _, args: seen.append(args[0].shape))
    with torch.no_grad():
        model.mask_token.fill_(float("nan"))  # a mask token in the encoder would poison it
        imgs = model.normalize(images())
        generator = torch.Generator().manual_seed(1)
        latent, masking = model.forward_encoder(imgs, generator=generator)
        assert latent.shape == (2, 1 + 4, 32)  # cls + the 4 visible tokens
        assert seen == [torch.Size([2, 1, 1 + 4, 32])]  # the blocks' (B, 1, N, C) token map
        assert torch.isfinite(latent).all()
        # Masked pixels do not reach the encoder (the conv stem's borders included).
        noise = torch.randn_like(imgs) * pixel_mask(masking, 16)
        again, _ = model.forward_encoder(imgs + noise, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(again, latent)
        # ... while visible pixels do.
        changed, _ = model.forward_encoder(
            imgs - noise.abs().max() * (1 - pixel_mask(masking, 16)),
            generator=torch.Generator().manual_seed(1),
        )
        assert not torch.allclose(changed, latent)


def test_decoder_puts_mask_tokens_at_the_masked_positions():
    model = tiny_mae().eval()
    inputs = []
    model.decoder_blocks[0].register_forward_pre_hook(lambda _, args: inputs.append(args[0]))
    with torch.no_grad():
        latent, masking = model.forward_encoder(model.normalize(images()))
        pred = model.forward_decoder(latent, masking)
    assert pred.shape == (2, 16, 16 * 16 * 3)
    tokens = inputs[0][:, 0, 1:] - model.decoder_pos_embed[:, 1:]  # (B, N, C_d), grid order
    embedded = model.decoder_embed(latent)[:, 1:]  # visible tokens, in shuffled order
    for b in range(2):
        masked = masking.mask[b].bool()
        torch.testing.assert_close(tokens[b, masked], model.mask_token[0].expand(12, -1))
        torch.testing.assert_close(tokens[b, masking.ids_keep[b]], embedded[b])


# --- loss -----------------------------------------------------------------------------------


def test_loss_is_the_mse_of_the_masked_patches_only():
    model = tiny_mae()
    imgs = model.normalize(images())
    masking = random_masking(2, (4, 4), 0.75)
    pred = torch.randn(2, 16, 16 * 16 * 3)
    loss = model.loss(imgs, pred, masking.mask)
    target = normalize_patches(patchify(imgs, 16))
    masked = masking.mask.bool()
    assert loss.item() == pytest.approx(((pred - target) ** 2)[masked].mean().item(), rel=1e-6)
    # Visible-patch predictions do not count ...
    visible_changed = torch.where(masked[..., None], pred, pred + 100.0)
    assert model.loss(imgs, visible_changed, masking.mask).item() == pytest.approx(loss.item())
    # ... masked ones do.
    masked_changed = torch.where(masked[..., None], pred + 1.0, pred)
    assert model.loss(imgs, masked_changed, masking.mask).item() > loss.item() + 0.5


def test_norm_pix_target():
    imgs = torch.rand(2, 3, 64, 64) * 5 + 3
    target = tiny_mae(norm_pix_loss=True).target(imgs)
    assert target.shape == (2, 16, 768)
    torch.testing.assert_close(target.mean(dim=-1), torch.zeros(2, 16), atol=1e-5, rtol=0)
    torch.testing.assert_close(target.var(dim=-1), torch.ones(2, 16), atol=1e-4, rtol=0)
    assert torch.equal(tiny_mae(norm_pix_loss=False).target(imgs), patchify(imgs, 16))


def test_training_step_trains_encoder_and_decoder_not_positions():
    model = tiny_mae()
    out = model(images())
    assert set(out) == {"loss_mae"} and out["loss_mae"].ndim == 0
    out["loss_mae"].backward()
    grads = {
        n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0
    }
    assert {
        "cls_token",
        "mask_token",
        "patch_embed.proj.weight",
        "blocks.1.mlp.fc2.weight",
    } <= grads
    assert {"decoder_embed.weight", "decoder_pred.weight", "norm.weight"} <= grads
    assert not {"pos_embed", "decoder_pos_embed"} & {n for n, _ in model.named_parameters()}
    state = model.state_dict()
    assert {"pos_embed", "decoder_pos_embed"} <= set(state)  # fixed sin-cos, kept in checkpoints
    assert not {"pixel_mean", "pixel_std"} & set(state)


def test_reconstruction_keeps_visible_patches():
    model = tiny_mae()
    imgs = model.normalize(images())
    masking = random_masking(2, (4, 4), 0.75)
    pred = normalize_patches(torch.randn(2, 16, 768))  # a norm-pix prediction
    recon = model.reconstruction(imgs, pred, masking)
    visible = 1 - pixel_mask(masking, 16)
    torch.testing.assert_close(recon * visible, imgs * visible)
    # masked patches: the prediction shown with the true patch's mean and variance
    patches = patchify(recon, 16)[masking.mask.bool()]
    truth = patchify(imgs, 16)[masking.mask.bool()]
    torch.testing.assert_close(patches.mean(-1), truth.mean(-1), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(patches.std(-1), truth.std(-1), atol=1e-3, rtol=1e-3)
    assert not torch.allclose(patches, truth)


# --- checkpoint into ViTDet -----------------------------------------------------------------


def tiny_vitdet():
    """configs/Synthetic's detector with the tiny MAE's ViT (64 px, width 32, 2 blocks)."""
    cfg = LazyConfig.load(SYNTHETIC_CONFIG)
    net = cfg.model.backbone.net
    net.update(img_size=64, pretrain_img_size=64, embed_dim=32, depth=2, num_heads=2)
    net.update(window_size=2, global_attn_indexes=[1])
    return instantiate(cfg.model).eval()


def assert_loads_into_vitdet(path: str, mae_state: dict) -> None:
    detector = tiny_vitdet()
    report = load_checkpoint(detector, path, log=False)
    assert report.source_format == "mae" and not report.refused
    dropped = set(report.dropped)
    assert {"cls_token", "mask_token", "norm.weight", "decoder_pred.weight"} <= dropped
    assert all(any(fnmatch.fnmatch(k, g) for g in MAE_DROPPED_KEYS) for k in dropped)
    assert {k for k in report.new if "rel_pos" in k} == {
        f"backbone.net.blocks.{i}.attn.rel_pos_{a}" for i in range(2) for a in "hw"
    }
    vit = detector.backbone.net.state_dict()
    for name, value in mae_state.items():
        if name in vit:
            torch.testing.assert_close(vit[name], value, msg=name)
    assert {k for k in vit if k not in mae_state} == {k for k in vit if "rel_pos" in k}


def test_mae_state_dict_round_trips_into_vitdet(tmp_path):
    mae = tiny_mae()
    path = str(tmp_path / "mae.pth")
    torch.save({"model": mae.state_dict()}, path)
    assert_loads_into_vitdet(path, mae.state_dict())


# --- the image folder -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """7 images of various sizes and modes (one in a subfolder), 2 unreadable files and a text
    file that is not listed."""
    root = tmp_path_factory.mktemp("unlabeled")
    rng = np.random.default_rng(0)
    sizes = [(64, 64), (40, 90), (120, 80), (64, 100), (70, 70), (90, 64)]
    for i, (h, w) in enumerate(sizes):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"img{i}.{'png' if i % 2 else 'jpg'}")
    (root / "sub").mkdir()
    Image.fromarray(rng.integers(0, 256, (80, 80), dtype=np.uint8)).save(root / "sub" / "gray.PNG")
    (root / "broken.jpg").write_text("not a picture")
    (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("ignored")
    return root


def test_folder_listing_and_unreadable_files(image_folder):
    paths = list_images(image_folder)
    assert len(paths) == 9 and not any(p.suffix == ".txt" for p in paths)
    dataset = UnlabeledImages(image_folder, transform=train_transform(32))
    samples = [dataset[i] for i in range(len(dataset))]
    assert sum(s is None for s in samples) == 2
    for sample in samples:
        if sample is not None:
            assert sample.shape == (3, 32, 32) and sample.dtype == torch.uint8
    assert dataset[paths.index(image_folder / "broken.jpg")] is None
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(image_folder / "missing")


def test_folder_without_images_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("no pictures here")
    with pytest.raises(FileNotFoundError, match="no image files"):
        UnlabeledImages(tmp_path, transform=train_transform(32))


def test_loader_skips_unreadable_and_resumes(image_folder):
    def batches(start_iter: int, count: int, workers: int = 0) -> list[torch.Tensor]:
        dataset = UnlabeledImages(image_folder, transform=train_transform(32))
        loader = build_unlabeled_train_loader(
            dataset, total_batch_size=4, seed=3, num_workers=workers, max_unreadable_fraction=0.5
        )
        loader.start_at(start_iter)
        out = [batch for batch, _ in zip(loader, range(count), strict=False)]
        counts.append(loader.num_skipped)
        return out

    counts = []
    first = batches(0, 5, workers=1)
    assert all(b.shape == (4, 3, 32, 32) and b.dtype == torch.uint8 for b in first)
    assert counts == [2]  # both bad files met in the worker process, counted in this one
    resumed = batches(3, 2)
    assert torch.equal(resumed[0], first[3]) and torch.equal(resumed[1], first[4])
    eval_images = load_eval_images(image_folder, image_size=32, num_images=3)
    assert eval_images.shape == (3, 3, 32, 32)
    # img0.jpg is 64 x 64: half of its side at 32 px is its centre, pixel for pixel
    centre = load_eval_images(image_folder, image_size=32, num_images=1, crop_fraction=0.5)
    pixels = torch.tensor(np.asarray(Image.open(image_folder / "img0.jpg")))
    assert torch.equal(centre[0], pixels[16:48, 16:48].permute(2, 0, 1))


# --- tools/pretrain_mae.py ------------------------------------------------------------------


def tool_args(folder: Path, output_dir: Path, max_iter: int) -> list[str]:
    return [
        "--config-file",
        MAE_CONFIG,
        f"train.output_dir={output_dir}",
        f"train.max_iter={max_iter}",
        f"dataloader.train.dataset.root={folder}",
        f"dataloader.test.root={folder}",
        "dataloader.test.num_images=2",
        "dataloader.train.total_batch_size=4",
        "dataloader.train.num_workers=0",
        "dataloader.train.max_unreadable_fraction=0.5",  # 2 of the 9 files are broken
        "train.eval_period=2",
        "train.checkpointer.period=1",
        "train.log_period=1",
        *[f"model.{k}={v}" for k, v in {**TINY, **TINY_DECODER}.items()],
    ]


def test_pretrain_tool_runs_resumes_and_feeds_vitdet(image_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # keeps the tool at one thread (toy model)
    tool = load_tool("pretrain_mae")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert tool.cli(tool_args(image_folder, straight, max_iter=3)) == 0
    # An interruption after 2 iterations: the run directory as it was then.
    shutil.copytree(straight, resumed)
    (resumed / "model_final.pth").unlink()
    (resumed / "model_0000002.pth").unlink()
    (resumed / "last_checkpoint").write_text("model_0000001.pth")
    num_rows = len((resumed / "metrics.json").read_text().splitlines())
    assert tool.cli(["--resume", *tool_args(image_folder, resumed, max_iter=3)]) == 0
    new_rows = (resumed / "metrics.json").read_text().splitlines()[num_rows:]
    assert [json.loads(r)["iteration"] for r in new_rows if "total_loss" in r] == [2]

    # Resuming at iteration 2 gives the weights of the uninterrupted run.
    final = read_checkpoint(str(straight / "model_final.pth"), "mae").state_dict
    again = read_checkpoint(str(resumed / "model_final.pth"), "mae").state_dict
    assert final.keys() == again.keys()
    for name in final:
        torch.testing.assert_close(again[name], final[name], msg=name)

    # A reconstruction picture at each evaluation (period 2, and the end).
    pictures = sorted(p.name for p in (straight / "reconstructions").iterdir())
    assert pictures == ["iter_0000002.png", "iter_0000003.png"]
    with Image.open(straight / "reconstructions" / "iter_0000003.png") as picture:
        assert picture.format == "PNG" and picture.width >= 3 * 64 and picture.height >= 2 * 64

    rows = [json.loads(line) for line in (straight / "metrics.json").read_text().splitlines()]
    assert [r["iteration"] for r in rows if "total_loss" in r] == [0, 1, 2]  # == loss_mae
    assert [r["data/unreadable_images"] for r in rows if "total_loss" in r] == [2, 2, 2]
    assert [r["iteration"] for r in rows if "mae_eval/loss" in r] == [1, 3]

    mae = tiny_mae()
    mae.load_state_dict(final, strict=True)  # the MAE layout, decoder included
    assert_loads_into_vitdet(str(straight / "model_final.pth"), final)


def test_pretrain_tool_reports_a_missing_folder(tmp_path, capsys):
    tool = load_tool("pretrain_mae")
    args = tool_args(tmp_path / "nothing", tmp_path / "out", max_iter=1)
    assert tool.cli(args) == 2
    assert "does not exist" in capsys.readouterr().err


# --- configs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mae_config,vitdet_config,same_grid",
    [(MAE_CONFIG, SYNTHETIC_CONFIG, False), (MAE_B_CONFIG, COCO_B_CONFIG, True)],
)
def test_mae_encoder_matches_the_vitdet_backbone(mae_config, vitdet_config, same_grid):
    """The checkpoint fits the detector's ViT; only the position grid may be resized (the tiny
    one pretrains on 128 px crops, 8 x 8 tokens, for a 16 x 16 detector grid)."""
    mae, det = load_config(mae_config).model, LazyConfig.load(vitdet_config).model
    net = det.backbone.net
    for key in ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio"):
        assert mae[key] == net[key], key
    default = inspect.signature(ViT).parameters["pretrain_img_size"].default
    assert (mae.img_size == net.get("pretrain_img_size", default)) == same_grid
    assert list(mae.pixel_mean) == list(det.pixel_mean)
    assert list(mae.pixel_std) == list(det.pixel_std)


def test_too_many_unreadable_files_stop_with_a_dataset_error(image_folder):
    dataset = UnlabeledImages(image_folder, transform=train_transform(32))
    loader = build_unlabeled_train_loader(dataset, total_batch_size=9, seed=0)  # 1 of 9 > 1%
    with pytest.raises(DatasetError, match="1 of 9 training images could not be used"):
        next(iter(loader))
