"""What several test files share: paths, the tool loader, the tiny detector's overrides and
test pictures. Fixtures built from these live in conftest.py. Importable as ``helpers`` in
any pytest import mode (``pythonpath = ["tests"]`` in pyproject.toml)."""

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from vitdet.data.synthetic import generate
from vitdet.modeling.vit import ViT

REPO = Path(__file__).resolve().parents[1]
KEYS_DIR = REPO / "tests" / "data" / "vitdet_keys"

COCO_CONFIG = REPO / "configs" / "COCO" / "mask_rcnn_vitdet_b_100ep.py"
SYNTHETIC_CONFIG = REPO / "configs" / "Synthetic" / "mask_rcnn_vitdet_tiny.py"  # make demo's
TEST_SIZE = 128  # == ViT img_size == square_pad (follows img_size) == test resize
# A tiny ViTDet from the COCO recipe: 2 blocks of width 64 at 128 px, slim box / mask heads,
# few proposals and detections; a zero score threshold in the box predictor so that random
# weights still detect (scores ~ 1 / 81).
TINY_DETECTOR = [
    "model.backbone.net.embed_dim=64",
    "model.backbone.net.depth=2",
    "model.backbone.net.num_heads=2",
    "model.backbone.net.global_attn_indexes=[1]",
    f"model.backbone.net.img_size={TEST_SIZE}",
    f"dataloader.test.mapper.augmentations.0.short_edge_length={TEST_SIZE}",
    f"dataloader.test.mapper.augmentations.0.max_size={TEST_SIZE}",
    "model.roi_heads.box_head.conv_dims=[64]",
    "model.roi_heads.mask_head.conv_dims=[64,64]",  # one conv, then the upsampling deconv
    "model.proposal_generator.pre_nms_topk.1=100",
    "model.proposal_generator.post_nms_topk.1=20",
    "model.roi_heads.box_predictor.test_score_thresh=0.0",
    "model.roi_heads.box_predictor.test_topk_per_image=4",
]


def load_tool(path: str) -> ModuleType:
    """A script under tools/ (``"train_net"``, ``"benchmarks/speed"``) as a module."""
    name = path.replace("/", "_")
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{path}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Coloured rectangles on a gray background, (H, W, 3) uint8 RGB."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 120, np.uint8)
    for _ in range(4):
        y, x = rng.integers(0, height - 10), rng.integers(0, width - 10)
        h, w = rng.integers(8, height // 2), rng.integers(8, width // 2)
        image[y : y + h, x : x + w] = rng.integers(0, 256, 3)
    return image


def tiny_vit(**overrides) -> ViT:
    """A ViTDet backbone small enough for any test: 128 px (8 x 8 tokens), width 64, 4 blocks,
    windows of 3 (a partial window at the border), blocks 1 and 3 global, a 4 x 4 pretraining
    grid (so the position table is resampled), non-zero rel-pos tables."""
    args = dict(
        img_size=128,
        patch_size=16,
        embed_dim=64,
        depth=4,
        num_heads=4,
        window_size=3,
        global_attn_indexes=(1, 3),
        pretrain_img_size=64,
        rel_pos_zero_init=False,  # non-zero rel-pos so that the bias term is exercised
    )
    return ViT(**{**args, **overrides})


def tiny_overrides(output_dir, train_name: str, val_name: str, max_iter: int = 4) -> list[str]:
    """The Synthetic recipe at toy size: 128 px, a 2-block ViT, few RoIs, 2 images a step."""
    return [
        f"train.output_dir={output_dir}",
        f"dataloader.train.dataset.names={train_name}",
        f"dataloader.test.dataset.names={val_name}",
        f"train.max_iter={max_iter}",
        "train.checkpointer.period=2",
        "train.eval_period=0",
        "train.log_period=1",
        "model.backbone.net.img_size=128",
        "model.backbone.net.pretrain_img_size=128",
        "model.backbone.net.embed_dim=32",
        "model.backbone.net.depth=2",
        "model.backbone.net.num_heads=2",
        "model.backbone.net.window_size=4",
        "model.backbone.net.global_attn_indexes=[1]",
        "optimizer.params.num_layers=2",
        "model.backbone.out_channels=32",
        "model.proposal_generator.head.in_channels=32",
        "model.proposal_generator.pre_nms_topk=[100,100]",
        "model.proposal_generator.post_nms_topk=[50,50]",
        "model.roi_heads.batch_size_per_image=16",
        "model.roi_heads.box_head.input_shape.channels=32",
        "model.roi_heads.box_head.fc_dims=[32]",
        "model.roi_heads.box_predictor.input_shape.channels=32",
        "model.roi_heads.mask_head.input_shape.channels=32",
        "model.roi_heads.mask_head.conv_dims=[32,32]",
        "dataloader.train.mapper.augmentations.1.target_height=128",
        "dataloader.train.mapper.augmentations.1.target_width=128",
        "dataloader.train.mapper.augmentations.2.crop_size=[128,128]",
        "dataloader.test.mapper.augmentations.0.short_edge_length=128",
        "dataloader.test.mapper.augmentations.0.max_size=128",
        "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0",
    ]


def tiny_synthetic(root: Path) -> dict[str, tuple[str, str]]:
    """8 train / 4 val synthetic images of 128 px under ``root``: {"train": (json, dir),
    "val": (json, dir)}, the data of the tiny training runs."""
    splits = generate(root, num_train=8, num_val=4, image_size=128, seed=0)
    return {name.split("_")[1]: (str(j), str(d)) for name, (j, d) in splits.items()}


def assert_same_run_state(got: dict, expected: dict) -> None:
    """Two training checkpoints hold bit-identical weights and optimizer state."""
    for key, value in expected["model"].items():
        assert torch.equal(got["model"][key], value), key
    wanted = expected["trainer"]["optimizer"]["state"]
    for index, state in got["trainer"]["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, wanted[index][name]), (index, name)
