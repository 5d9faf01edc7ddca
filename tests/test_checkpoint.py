"""Checkpoint reading, conversion and strict loading: every format, on tiny models and key lists."""

import argparse
import os
import pickle
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from detectron2.checkpoint import Checkpointer
from detectron2.config import LazyConfig, instantiate

from vitdet.checkpoint import (
    DETECTOR_HEAD_KEYS,
    VITDET_VIT_PREFIX,
    CheckpointError,
    convert_checkpoint,
    load_checkpoint,
    prepare_state_dict,
    read_checkpoint,
    read_run_state,
    resample_pos_embed,
    resample_rel_pos,
    resize_patch_kernel,
)
from vitdet.modeling.pos_embed import rel_pos_table, resample_abs_pos

from helpers import KEYS_DIR, REPO

MODEL_CONFIG = REPO / "configs" / "common" / "models" / "mask_rcnn_vitdet.py"
# A tiny detector with the released names: ViT 32-d, 2 blocks (window 2, then global), 4x4
# pretraining grid (pos_embed (1, 17, 32)), small heads.
TINY = [
    "model.backbone.net.img_size=64",
    "model.backbone.net.pretrain_img_size=64",
    "model.backbone.net.embed_dim=32",
    "model.backbone.net.depth=2",
    "model.backbone.net.num_heads=2",
    "model.backbone.net.window_size=2",
    "model.backbone.net.global_attn_indexes=[1]",
    "model.proposal_generator.head.conv_dims=[8]",
    "model.roi_heads.box_head.conv_dims=[8]",
    "model.roi_heads.mask_head.conv_dims=[8,8]",
    "model.roi_heads.num_classes=3",
]
DIM = 32
P = VITDET_VIT_PREFIX


def tiny_detector(*extra: str, seed: int = 0) -> nn.Module:
    cfg = LazyConfig.apply_overrides(LazyConfig.load(str(MODEL_CONFIG)), [*TINY, *extra])
    torch.manual_seed(seed)
    model = instantiate(cfg.model)
    with torch.no_grad():  # rel-pos tables and LN are constant at init: make every entry distinct
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    return model


def tiny_vit(seed: int = 0) -> nn.Module:
    return tiny_detector(seed=seed).backbone.net


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def mae_state(detector_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An MAE pretraining state dict (encoder + decoder) with the ViT of a detector state."""
    state = {
        k[len(P) :]: v.clone()
        for k, v in detector_state.items()
        if k.startswith(P) and "rel_pos" not in k
    }
    state.update(
        {
            "cls_token": torch.randn(1, 1, DIM),
            "mask_token": torch.randn(1, 1, DIM),
            "norm.weight": torch.randn(DIM),
            "norm.bias": torch.randn(DIM),
            "decoder_embed.weight": torch.randn(16, DIM),
            "decoder_pos_embed": torch.randn(1, 17, 16),
            "decoder_blocks.0.norm1.weight": torch.randn(16),
            "decoder_norm.weight": torch.randn(16),
            "decoder_pred.weight": torch.randn(768, 16),
        }
    )
    return state


def assert_vit_loaded(model_state, source, *, prefix=P):
    for name, value in source.items():
        if not name.startswith(("cls_token", "mask_token", "norm.", "decoder_", "head.")):
            torch.testing.assert_close(model_state[prefix + name], value, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# Every format round-trips into a model.


def test_own_checkpointer_file_loads_exactly(tmp_path):
    src = tiny_detector(seed=1)
    optimizer = torch.optim.AdamW(src.parameters(), lr=1e-4)
    Checkpointer(src, str(tmp_path), optimizer=optimizer).save("model_0000003", iteration=3)
    dst = tiny_detector(seed=2)
    report = load_checkpoint(nn.DataParallel(dst), str(tmp_path / "model_0000003.pth"))
    assert report.source_format == "vitdet"
    assert report.new == report.dropped == report.refused == report.resampled == ()
    assert set(report.loaded) == set(src.state_dict())
    for k, v in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[k], v, rtol=0, atol=0)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_model_zoo_pickle_float64_loads_as_float32(tmp_path, protocol):
    src = tiny_detector(seed=1)
    arrays = {k: v.numpy().astype(np.float64) for k, v in src.state_dict().items()}
    path = tmp_path / "model_final_abc.pkl"
    payload = {"model": arrays, "__author__": "zoo", "matching_heuristics": True}
    path.write_bytes(pickle.dumps(payload, protocol=protocol))
    dst = tiny_detector(seed=2)
    report = load_checkpoint(dst, str(path))
    assert report.source_format == "vitdet-pkl"
    assert len(report.loaded) == len(arrays) and not report.new
    for k, v in src.state_dict().items():  # float32 -> float64 -> float32 is exact
        assert dst.state_dict()[k].dtype == torch.float32
        torch.testing.assert_close(dst.state_dict()[k], v, rtol=0, atol=0)


def test_mae_into_detector_reports_new_and_dropped(tmp_path):
    source = mae_state(tiny_detector(seed=1).state_dict())
    torch.save({"model": source}, tmp_path / "mae_pretrain.pth")
    dst = tiny_detector(seed=2)
    before = snapshot(dst)
    report = load_checkpoint(dst, str(tmp_path / "mae_pretrain.pth"))
    assert report.source_format == "mae"
    after = dst.state_dict()
    assert_vit_loaded(after, source)
    # Newly initialised: rel-pos tables and everything outside the ViT, left as they were.
    assert set(report.new) == {k for k in after if not k.startswith(P) or "rel_pos" in k}
    assert sum("rel_pos" in k for k in report.new) == 4  # 2 blocks x (h, w)
    for k in report.new:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0)
    assert set(report.dropped) == {k for k in source if not k.startswith(("blocks", "p"))}
    lines = report.summary().splitlines()
    assert len(lines) == 4 and all(len(line) < 300 for line in lines)
    assert "roi_heads.* (" in lines[2] and "decoder_* (5)" in lines[3]


@pytest.mark.parametrize("split_qv_bias", [False, True])
def test_timm_state_dict(tmp_path, split_qv_bias):
    source = mae_state(tiny_detector(seed=1).state_dict())
    source = {k: v for k, v in source.items() if not k.startswith(("decoder_", "mask_token"))}
    source.update({"head.weight": torch.randn(1000, DIM), "head.bias": torch.randn(1000)})
    expected_qkv_bias = {}
    if split_qv_bias:  # BEiT-style: q and v biases, no k bias
        for i in range(2):
            q, _, v = source.pop(f"blocks.{i}.attn.qkv.bias").chunk(3)
            source[f"blocks.{i}.attn.q_bias"], source[f"blocks.{i}.attn.v_bias"] = q, v
            expected_qkv_bias[f"{P}blocks.{i}.attn.qkv.bias"] = torch.cat([q, 0 * q, v])
    torch.save(source, tmp_path / "vit_tiny_patch16.pth")  # a bare state dict
    dst = tiny_detector(seed=2)
    report = load_checkpoint(dst, str(tmp_path / "vit_tiny_patch16.pth"))
    assert report.source_format == "timm"
    assert {"head.weight", "cls_token", "norm.weight"} <= set(report.dropped)
    after = dst.state_dict()
    assert_vit_loaded(after, {k: v for k, v in source.items() if "_bias" not in k})
    for k, v in expected_qkv_bias.items():
        torch.testing.assert_close(after[k], v, rtol=0, atol=0)


def test_bare_vit_target_uses_empty_prefix(tmp_path):
    detector = tiny_detector(seed=1)
    torch.save({"model": mae_state(detector.state_dict())}, tmp_path / "mae.pth")
    vit = tiny_vit(seed=2)
    report = load_checkpoint(vit, str(tmp_path / "mae.pth"))
    assert sorted(report.new) == [f"blocks.{i}.attn.rel_pos_{a}" for i in (0, 1) for a in "hw"]
    # A detector checkpoint into a bare ViT: the ViT part moves, the heads are dropped.
    torch.save({"model": detector.state_dict()}, tmp_path / "det.pth")
    report = load_checkpoint(vit, str(tmp_path / "det.pth"))
    assert not report.new and report.dropped
    assert all(k.startswith(tuple(g[:-1] for g in DETECTOR_HEAD_KEYS)) for k in report.dropped)
    for k, v in detector.backbone.net.state_dict().items():
        torch.testing.assert_close(vit.state_dict()[k], v, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# Resampling to the target's geometry.


def test_pos_embed_resampled_to_target_grid(tmp_path):
    source = mae_state(tiny_detector(seed=1).state_dict())
    source["pos_embed"] = torch.randn(1, 1 + 6 * 6, DIM)  # a 6x6 pretraining grid
    torch.save({"model": source}, tmp_path / "mae.pth")
    dst = tiny_detector(seed=2)  # 4x4 grid
    report = load_checkpoint(dst, str(tmp_path / "mae.pth"))
    assert report.resampled == (f"{P}pos_embed",)
    loaded = dst.state_dict()[f"{P}pos_embed"]
    assert loaded.shape == (1, 17, DIM)
    torch.testing.assert_close(loaded[:, 0], source["pos_embed"][:, 0])  # cls slot kept
    grid = resample_abs_pos(source["pos_embed"], True, (4, 4))
    torch.testing.assert_close(loaded[:, 1:], grid.reshape(1, 16, DIM))
    # A constant embedding stays constant; the cls slot is added / dropped as the target asks.
    flat = torch.full((1, 64, 3), 0.5)
    torch.testing.assert_close(resample_pos_embed(flat, 1 + 25)[:, 1:], torch.full((1, 25, 3), 0.5))
    assert resample_pos_embed(flat, 1 + 25)[:, 0].abs().sum() == 0


def test_patch_kernel_14_to_16_preserves_tokens():
    weight = torch.randn(5, 3, 14, 14)
    resized = resize_patch_kernel(weight, (16, 16))
    assert resized.shape == (5, 3, 16, 16)
    patches = torch.cat([torch.randn(4, 3, 14, 14), torch.ones(1, 3, 14, 14)])  # last: constant
    upsampled = F.interpolate(patches, size=(16, 16), mode="bicubic", align_corners=False)
    tokens = torch.einsum("nchw,ochw->no", patches, weight)
    torch.testing.assert_close(
        torch.einsum("nchw,ochw->no", upsampled, resized), tokens, rtol=1e-4, atol=1e-4
    )
    # A plain interpolation of the kernel does not keep them (scales by ~(16/14)^2).
    naive = F.interpolate(weight, size=(16, 16), mode="bicubic", align_corners=False)
    naive_tokens = torch.einsum("nchw,ochw->no", upsampled, naive)
    assert not torch.allclose(naive_tokens[-1], tokens[-1], rtol=0.05)


def test_mae_vit_h_style_patch14_loads_into_patch16(tmp_path):
    source = mae_state(tiny_detector(seed=1).state_dict())
    source["patch_embed.proj.weight"] = torch.randn(DIM, 3, 14, 14)
    source["pos_embed"] = torch.randn(1, 1 + 5 * 5, DIM)  # its own grid (224 / 14 = 16 for H)
    torch.save({"model": source}, tmp_path / "mae_h.pth")
    dst = tiny_detector(seed=2)
    report = load_checkpoint(dst, str(tmp_path / "mae_h.pth"))
    assert set(report.resampled) == {f"{P}patch_embed.proj.weight", f"{P}pos_embed"}
    torch.testing.assert_close(
        dst.state_dict()[f"{P}patch_embed.proj.weight"],
        resize_patch_kernel(source["patch_embed.proj.weight"], (16, 16)),
    )


def test_rel_pos_resampled_for_another_input_size(tmp_path):
    src = tiny_detector(seed=1)  # img 64: global block tables (2 * 4 - 1, 16)
    torch.save({"model": src.state_dict()}, tmp_path / "det.pth")
    dst = tiny_detector("model.backbone.net.img_size=32", seed=2)  # (2 * 2 - 1, 16)
    report = load_checkpoint(dst, str(tmp_path / "det.pth"))
    assert set(report.resampled) == {f"{P}blocks.1.attn.rel_pos_h", f"{P}blocks.1.attn.rel_pos_w"}
    table = src.state_dict()[f"{P}blocks.1.attn.rel_pos_h"]
    loaded = dst.state_dict()[f"{P}blocks.1.attn.rel_pos_h"]
    torch.testing.assert_close(loaded, resample_rel_pos(table, 3))
    # Same relative-position terms as the run-time interpolation of the original table.
    torch.testing.assert_close(rel_pos_table(2, 2, loaded), rel_pos_table(2, 2, table))


# ---------------------------------------------------------------------------------------------
# Strictness.


def refused(model, state, tmp_path, match):
    torch.save({"model": state}, tmp_path / "bad.pth")
    before = snapshot(model)
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(model, str(tmp_path / "bad.pth"))
    for k, v in model.state_dict().items():  # untouched
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    return info.value


def test_unknown_key_refused_by_name(tmp_path):
    state = tiny_detector(seed=1).state_dict()
    state[f"{P}blocks.0.attn.gamma"] = torch.ones(DIM)
    error = refused(tiny_detector(seed=2), state, tmp_path, r"blocks\.0\.attn\.gamma: not in")
    assert len(error.report.refused) == 1


def test_timm_layer_scale_refused_by_name(tmp_path):
    state = mae_state(tiny_detector(seed=1).state_dict())
    state["blocks.0.ls1.gamma"] = torch.ones(DIM)
    refused(tiny_detector(seed=2), state, tmp_path, r"backbone\.net\.blocks\.0\.ls1\.gamma")


def test_shape_mismatch_refused_by_name(tmp_path):
    state = tiny_detector("model.roi_heads.num_classes=5", seed=1).state_dict()
    error = refused(tiny_detector(seed=2), state, tmp_path, r"cls_score\.weight: checkpoint")
    assert any("(6, 1024) vs model (4, 1024)" in r for r in error.report.refused)


def test_missing_key_outside_expected_list_refused(tmp_path):
    state = tiny_detector(seed=1).state_dict()
    del state["roi_heads.box_head.fc1.weight"]
    refused(tiny_detector(seed=2), state, tmp_path, r"fc1\.weight: missing from the checkpoint")


# ---------------------------------------------------------------------------------------------
# Safety: a checkpoint is data, not code.


class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"model": {"w": np.zeros(2), "x": Exploit(marker)}})
    (tmp_path / "evil.pkl").write_bytes(payload)
    with pytest.raises(CheckpointError, match=r"posix\.system|os\.system"):
        read_checkpoint(str(tmp_path / "evil.pkl"))
    assert not marker.exists()
    pickle.loads(payload)  # control: the payload is live under a plain unpickler
    assert marker.exists()


def test_pickle_with_object_array_refused(tmp_path):
    array = np.array([1, "two"], dtype=object)
    (tmp_path / "obj.pkl").write_bytes(pickle.dumps({"model": {"backbone.x": array}}))
    with pytest.raises(CheckpointError, match=r"backbone\.x \(dtype object is not numeric\)"):
        read_checkpoint(str(tmp_path / "obj.pkl"))


def test_pth_with_objects_refused(tmp_path):
    state = {"backbone.x": torch.zeros(2)}
    torch.save({"model": state, "args": argparse.Namespace(lr=1.0)}, tmp_path / "args.pth")
    with pytest.raises(CheckpointError, match=r"weights_only"):
        read_checkpoint(str(tmp_path / "args.pth"))
    marker = tmp_path / "pwned"
    torch.save({"model": state, "x": Exploit(marker)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=r"weights_only"):
        read_checkpoint(str(tmp_path / "evil.pth"))
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# The released key lists map name for name (no model built: zero-stride tensors of each shape).


def released_shapes(name: str) -> dict[str, tuple[int, ...]]:
    lines = (KEYS_DIR / f"{name}.txt").read_text().splitlines()
    pairs = (line.split("\t") for line in lines)  # name<TAB>(d0, d1, ...)
    return {k: tuple(int(d) for d in s.strip("()").split(",") if d.strip()) for k, s in pairs}


RELEASED = [p.stem for p in sorted(KEYS_DIR.glob("*.txt"))]


@pytest.mark.parametrize("name", RELEASED)
def test_released_key_lists_map_name_for_name(name):
    shapes = released_shapes(name)
    zeros = {k: torch.zeros(()).expand(s) for k, s in shapes.items()}
    _, report = prepare_state_dict(zeros, "vitdet-pkl", shapes, prefix=P)
    assert set(report.loaded) == set(shapes) and not (report.new or report.refused)

    # The MAE release of the same ViT: no rel-pos, plus cls token and final norm.
    dim = shapes[f"{P}pos_embed"][-1]
    mae = {k[len(P) :]: v for k, v in zeros.items() if k.startswith(P) and "rel_pos" not in k}
    mae.update(cls_token=torch.zeros(1, 1, dim), **{"norm.weight": torch.zeros(dim)})
    if "vitdet_h" in name:  # MAE ViT-H: patch 14, a 16x16 grid at 224
        mae["patch_embed.proj.weight"] = torch.zeros(dim, 3, 14, 14)
        mae["pos_embed"] = torch.zeros(1, 257, dim)
    converted, report = prepare_state_dict(mae, "mae", shapes, prefix=P)
    assert not report.refused
    assert set(report.loaded) == {k for k in shapes if k.startswith(P) and "rel_pos" not in k}
    assert set(report.new) == set(shapes) - set(report.loaded)
    assert set(report.dropped) == {"cls_token", "norm.weight"}
    assert all(tuple(converted[k].shape) == shapes[k] for k in report.loaded)
    if "vitdet_h" in name:
        assert set(report.resampled) == {f"{P}patch_embed.proj.weight", f"{P}pos_embed"}


# ---------------------------------------------------------------------------------------------
# The CLI, end to end.


def test_cli_converts_mae_for_a_config(tmp_path):
    source = mae_state(tiny_detector(seed=1).state_dict())
    source["patch_embed.proj.weight"] = torch.randn(DIM, 3, 14, 14)
    torch.save({"model": source}, tmp_path / "mae.pth")
    out = tmp_path / "converted.pth"
    cmd = [sys.executable, str(REPO / "tools" / "convert_pretrained.py"), str(tmp_path / "mae.pth")]
    cmd += [str(out), "--config-file", str(MODEL_CONFIG), *TINY]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "newly initialised" in result.stderr and "patch_embed.proj.weight" in result.stderr

    direct, via_file = tiny_detector(seed=2), tiny_detector(seed=2)
    expected = load_checkpoint(direct, str(tmp_path / "mae.pth"), log=False)
    report = load_checkpoint(via_file, str(out), log=False)
    assert report.source_format == "vitdet (converted from mae)"
    assert report.new == expected.new and not report.resampled
    for k, v in direct.state_dict().items():
        torch.testing.assert_close(via_file.state_dict()[k], v, rtol=0, atol=0)


def test_convert_without_target_renames_only(tmp_path):
    source = mae_state(tiny_detector(seed=1).state_dict())
    torch.save({"model": source}, tmp_path / "mae.pth")
    report = convert_checkpoint(str(tmp_path / "mae.pth"), str(tmp_path / "out.pth"))
    saved = torch.load(tmp_path / "out.pth", weights_only=True)
    assert saved["converted_from"] == "mae" and not report.resampled
    assert set(saved["model"]) == {P + k for k in source if k.startswith(("blocks", "p"))}


# ---------------------------------------------------------------------------------------------
# Safety: a few bytes cannot ask for terabytes. Arrays and tensors whose declared shape the
# file's bytes do not back are refused by entry name before anything is copied.

HUGE = (10**6, 10**6)  # 10^12 elements: 4-8 TB if anything allocated them


class Declared:
    """Pickles as whatever ``__reduce__`` tuple it is given (numpy's own globals)."""

    def __init__(self, *reduce) -> None:
        self.reduce = reduce

    def __reduce__(self):
        return self.reduce


F8 = np.dtype("float64")
RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's _reconstruct(ndarray, shape, dtype)
CRAFTED_ARRAYS = {  # entry -> (reduce tuple, reason in the message)
    "zero_strides": ((np.ndarray, (HUGE, F8, b"\0" * 8, 0, (0, 0))), "reuses its elements"),
    "overlapping_strides": ((np.ndarray, (HUGE, F8, b"\0" * 64, 0, (8, 8))), "reuses its"),
    "small_buffer": ((np.ndarray, ((1000, 1000), F8, b"\0" * 64)), "its storage holds 64"),
    "no_buffer": ((np.ndarray, (HUGE, F8)), "without a buffer: uninitialised memory"),
    "reconstruct_shape": ((RECONSTRUCT, (np.ndarray, HUGE, b"b")), "uninitialised memory"),
    "state_short": (
        (RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, HUGE, F8, False, b"\0" * 8)),
        "the file holds 8",
    ),
    "object_dtype": ((np.ndarray, ((2,), np.dtype(object), b"\0" * 16)), "not numeric"),
}


@pytest.mark.parametrize("kind", sorted(CRAFTED_ARRAYS))
def test_pickle_array_not_backed_by_the_file_refused_by_name(tmp_path, kind):
    reduce, reason = CRAFTED_ARRAYS[kind]
    state = {"backbone.net.pos_embed": np.zeros((1, 5, 4)), f"backbone.{kind}": Declared(*reduce)}
    path = tmp_path / "crafted.pkl"
    path.write_bytes(pickle.dumps({"model": state}, protocol=2))
    assert path.stat().st_size < 1000
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=rf"backbone\.{kind} \(.*{reason}") as error:
            read_checkpoint(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, peak  # numpy's allocations are traced: nothing near the declared size
    assert "\n" not in str(error.value)  # one line for the tools


def test_pickle_array_over_the_files_bytes_is_read(tmp_path):
    """The same constructor with a buffer that backs the shape is an ordinary array."""
    data = np.arange(6, dtype=np.float64)
    array = Declared(np.ndarray, ((2, 3), F8, data.tobytes(), 0, (8, 16)))
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps({"model": {"backbone.x": array}}))
    got = read_checkpoint(str(tmp_path / "ok.pkl")).state_dict["backbone.x"]
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, torch.tensor(data.reshape(3, 2).T, dtype=torch.float32))


def test_pth_expanded_tensor_refused_by_name(tmp_path):
    # torch.save writes the one-element storage with size (10^6, 10^6) and strides (0, 0):
    # float16 -> float32 would allocate 4 TB.
    huge = torch.zeros(1, dtype=torch.float16).expand(*HUGE)
    torch.save({"model": {"backbone.net.pos_embed": huge}}, tmp_path / "expanded.pth")
    assert (tmp_path / "expanded.pth").stat().st_size < 2000
    with pytest.raises(CheckpointError, match=r"backbone\.net\.pos_embed \(shape .* reuses"):
        read_checkpoint(str(tmp_path / "expanded.pth"))


def test_pth_entries_over_the_same_bytes_refused_tied_ones_read(tmp_path):
    base = torch.arange(20, dtype=torch.float16)
    torch.save({"model": {"a": base[:10], "b": base[5:15]}}, tmp_path / "overlap.pth")
    with pytest.raises(CheckpointError, match=r"b \(overlaps a\)"):
        read_checkpoint(str(tmp_path / "overlap.pth"), "vitdet")
    torch.save({"model": {"backbone.a": base, "backbone.b": base}}, tmp_path / "tied.pth")
    state = read_checkpoint(str(tmp_path / "tied.pth")).state_dict
    assert torch.equal(state["backbone.a"], state["backbone.b"])


def test_truncated_pth_is_a_checkpoint_error(tmp_path):
    torch.save({"model": tiny_vit(seed=0).state_dict()}, tmp_path / "whole.pth")
    data = (tmp_path / "whole.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pth: not a readable checkpoint") as error:
        read_checkpoint(str(tmp_path / "cut.pth"))
    assert "\n" not in str(error.value)


def test_run_state_tensors_checked_before_resume_copies(tmp_path):
    model = tiny_vit(seed=0)
    optimizer_state = {"state": {0: {"exp_avg": torch.zeros(1, dtype=torch.float16).expand(*HUGE)}}}
    torch.save({"model": model.state_dict(), "optimizer": optimizer_state}, tmp_path / "run.pth")
    with pytest.raises(CheckpointError, match=r"optimizer\.state\.0\.exp_avg \(shape"):
        read_run_state(str(tmp_path / "run.pth"))


def test_entry_larger_than_any_model_tensor_refused_before_resampling():
    shapes = released_shapes("mask_rcnn_vitdet_b_100ep")
    # a (768, 3, 700, 700) patch kernel would need a 490000^2 float64 matrix to resample
    source = {"patch_embed.proj.weight": torch.zeros(()).expand(768, 3, 700, 700)}
    with pytest.raises(CheckpointError, match=r"patch_embed\.proj\.weight \(768, 3, 700, 700\)"):
        prepare_state_dict(source, "mae", shapes, prefix=P)
