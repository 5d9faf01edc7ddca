"""Every tool that takes weights refuses a corrupt or unsafe file with one line on stderr and
exit status 2, before it builds or runs anything heavy (tiny models; in-process)."""

import logging
import pickle
import re

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import COCO_CONFIG, REPO, TINY_DETECTOR, load_tool, scene

GLOG = re.compile(r"[IWE]\d{4} \d\d:\d\d:\d\d")
MAE_CONFIG = REPO / "configs" / "MAE" / "mae_vit_tiny_synthetic.py"
MAE_TINY = [
    f"model.{k}={v}"
    for k, v in dict(
        img_size=64, embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=16, decoder_depth=1
    ).items()
]


class ZeroStrides:
    """Pickles as ``numpy.ndarray((10^6, 10^6), float64, 8 bytes, 0, (0, 0))``: 8 TB declared."""

    def __reduce__(self):
        return np.ndarray, ((10**6, 10**6), np.dtype("float64"), b"\0" * 8, 0, (0, 0))


def write_corrupt(kind: str, folder) -> str:
    if kind == "truncated.pth":
        torch.save({"model": {"backbone.net.pos_embed": torch.zeros(1, 17, 32)}}, folder / kind)
        data = (folder / kind).read_bytes()
        (folder / kind).write_bytes(data[: len(data) // 2])
    elif kind == "zero_strides.pkl":
        (folder / kind).write_bytes(pickle.dumps({"model": {"backbone.x": ZeroStrides()}}))
    else:  # expanded.pth: one float16 stored, 10^12 declared
        huge = torch.zeros(1, dtype=torch.float16).expand(10**6, 10**6)
        torch.save({"model": {"backbone.net.pos_embed": huge}}, folder / kind)
    return str(folder / kind)


def convert_pretrained(weights, tmp_path):
    tool = load_tool("convert_pretrained")
    return tool.main([weights, str(tmp_path / "out.pth")])


def export(weights, tmp_path):
    tool = load_tool("export")
    argv = ["--config-file", str(COCO_CONFIG), "--weights", weights, "--format", "torchscript"]
    return tool.main([*argv, "--output", str(tmp_path / "model.pt"), *TINY_DETECTOR])


def demo(weights, tmp_path):
    Image.fromarray(scene(32, 32)).save(tmp_path / "scene.png")
    tool = load_tool("demo")
    argv = ["--config-file", str(COCO_CONFIG), "--weights", weights]
    argv += ["--input", str(tmp_path / "scene.png"), "--output", str(tmp_path / "out")]
    return tool.main([*argv, "--", *TINY_DETECTOR])


def train_net_eval_only(weights, tmp_path):
    tool = load_tool("train_net")
    argv = ["--config-file", str(COCO_CONFIG), "--eval-only", *TINY_DETECTOR]
    return tool.cli([*argv, f"train.init_checkpoint={weights}", f"train.output_dir={tmp_path}"])


def pretrain_mae(weights, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(scene(64, 64, seed=i)).save(folder / f"{i}.png")
    tool = load_tool("pretrain_mae")
    argv = ["--config-file", str(MAE_CONFIG), *MAE_TINY, f"train.output_dir={tmp_path / 'out'}"]
    argv += [f"dataloader.train.dataset.root={folder}", f"dataloader.test.root={folder}"]
    argv += ["dataloader.train.num_workers=0", "train.max_iter=1"]
    return tool.cli([*argv, f"train.init_checkpoint={weights}"])


TOOLS = [convert_pretrained, export, demo, train_net_eval_only, pretrain_mae]


@pytest.fixture
def own_log_handlers():
    """Drop the log handlers a tool adds (detectron2's ``setup_logger`` binds them to this
    test's captured streams, closed once it ends)."""

    def loggers():
        return [logging.getLogger(), *map(logging.getLogger, logging.root.manager.loggerDict)]

    before = {logger: list(logger.handlers) for logger in loggers()}
    yield
    for logger in loggers():
        for handler in logger.handlers[:]:
            if handler not in before.get(logger, []):
                logger.removeHandler(handler)


@pytest.mark.parametrize("kind", ["truncated.pth", "zero_strides.pkl", "expanded.pth"])
@pytest.mark.parametrize("tool", TOOLS, ids=lambda f: f.__name__)
def test_corrupt_weights_one_line_exit_2(
    tool, kind, tmp_path, capsys, one_thread, own_log_handlers
):
    weights = write_corrupt(kind, tmp_path)
    assert tool(weights, tmp_path) == 2
    # torch's own one-time import notices (glog style, "W1129 10:02:02.156000 ...") aside
    err = [line for line in capsys.readouterr().err.splitlines() if not GLOG.match(line)]
    assert len(err) == 1, err
    assert "error" in err[0] and kind in err[0]


def demo_into(weights, output):
    picture = output.parent.parent / "scene.png"
    Image.fromarray(scene(32, 32)).save(picture)
    argv = ["--config-file", str(COCO_CONFIG), "--weights", weights]
    argv += ["--input", str(picture), "--output", str(output)]
    return load_tool("demo").main(argv)


@pytest.mark.parametrize(
    "tool",
    [
        lambda weights, blocker: convert_pretrained(weights, blocker),
        lambda weights, blocker: export(weights, blocker),
        lambda weights, blocker: demo_into(weights, blocker / "out"),
    ],
    ids=["convert_pretrained", "export", "demo"],
)
def test_unwritable_output_one_line_exit_2(tool, tmp_path, capsys, one_thread):
    """An output under a regular file cannot be created: one line, exit 2, before any work."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    weights = write_corrupt("truncated.pth", tmp_path)  # never read: the output is checked first
    assert tool(weights, blocker) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not GLOG.match(line)]
    assert len(err) == 1 and "cannot create" in err[0], err


@pytest.mark.parametrize("folder", ["existing", "new/"])
def test_export_output_that_is_a_folder_is_refused(folder, tmp_path, capsys):
    """--output names a file; a folder (an existing one, or a path ending in /) is a usage
    error before any work, not torch's "invalid file name" after the trace."""
    (tmp_path / "existing").mkdir()
    weights = write_corrupt("truncated.pth", tmp_path)  # never read
    tool = load_tool("export")
    argv = ["--config-file", str(COCO_CONFIG), "--weights", weights, "--format", "torchscript"]
    with pytest.raises(SystemExit) as exit_info:
        tool.main([*argv, "--output", f"{tmp_path}/{folder}"])
    assert exit_info.value.code == 2
    assert "--output names the file to write" in capsys.readouterr().err
