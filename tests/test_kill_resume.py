"""Killed for real: a small training run gets SIGKILL (once in the middle of a step, once in
the middle of a checkpoint write), then ``--resume`` finishes it; the final weights and
optimizer state must be bit-identical to an uninterrupted run's (CPU, one thread).

Each run is a subprocess of tools/train_net.py through a small launcher that arms the kill at
an exact point (``KILL_AT``), so the interruption is a real SIGKILL at a reproducible place.
"""

import os
import subprocess
import sys
import uuid

import pytest
import torch

from vitdet.data.synthetic import generate

from helpers import REPO, SYNTHETIC_CONFIG, assert_same_run_state, tiny_overrides

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")

MAX_ITER = 5
LAUNCHER = """
import os, runpy, signal, sys
from vitdet.engine import run_state, trainer

kill_at = os.environ.get("KILL_AT")
if kill_at == "step":  # iteration 3: after the backward pass, before the optimizer step
    after_backward = trainer.Trainer.after_backward

    def killing_after_backward(self):
        if self.iter == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        after_backward(self)

    trainer.Trainer.after_backward = killing_after_backward
elif kill_at == "write":  # half-way through writing the checkpoint of iteration 3
    write_atomically = run_state.write_atomically

    def killing_write(path, write):
        if not path.endswith("model_0000003.pth"):
            return write_atomically(path, write)

        def half_then_kill(f):
            f.write(b"half of a checkpoint")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        return write_atomically(path, half_then_kill)

    run_state.write_atomically = killing_write
sys.argv = ["train_net.py", *sys.argv[1:]]
runpy.run_path(os.path.join(sys.argv.pop(1)), run_name="__main__")
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    splits = generate(root, num_train=6, num_val=2, image_size=128, seed=0)
    return {name.split("_")[1]: (str(j), str(d)) for name, (j, d) in splits.items()}


def train(data, output_dir, *extra: str, kill_at: str | None = None) -> int:
    tag = uuid.uuid4().hex[:8]
    train_name, val_name = f"kill_train_{tag}", f"kill_val_{tag}"
    register = ["--register-coco", train_name, *data["train"]]
    register += ["--register-coco", val_name, *data["val"]]
    overrides = tiny_overrides(output_dir, train_name, val_name, max_iter=MAX_ITER)
    overrides += ["train.log_period=20"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KILL_AT": kill_at or ""}
    config = str(SYNTHETIC_CONFIG)
    command = [sys.executable, "-c", LAUNCHER, str(REPO / "tools" / "train_net.py")]
    command += ["--config-file", config, *extra, *register, *overrides]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True).returncode


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    assert train(data, output_dir) == 0
    return torch.load(output_dir / "model_final.pth", weights_only=True)


@pytest.mark.parametrize("kill_at", ["step", "write"])
def test_sigkill_then_resume_is_bit_identical(data, uninterrupted, tmp_path, kill_at):
    assert train(data, tmp_path, kill_at=kill_at) == -9  # killed by SIGKILL
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    if kill_at == "write":
        assert (tmp_path / "model_0000003.pth.tmp").is_file()  # the half-written file
    assert train(data, tmp_path, "--resume") == 0
    assert not list(tmp_path.glob("*.tmp"))
    resumed = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert resumed["iteration"] == uninterrupted["iteration"] == MAX_ITER - 1
    assert_same_run_state(resumed, uninterrupted)
