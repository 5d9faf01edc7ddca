"""Several processes on the CPU (torch.distributed, gloo): tools/train_net.py started by its own
launcher (``--num-gpus 2``) and by torchrun trains, evaluates, checkpoints and resumes as one
process does, and an error in one process stops the job with one line.

The multi-process runs are subprocesses of the tiny detector (2-block ViT of width 32 at 128 px,
8 training images, 4 steps of 4 images, one thread per process); the 1-process references run
in this process. The launcher's environment parsing and the sampler's sharding are checked
without processes.
"""

import argparse
import gc
import itertools
import json
import multiprocessing as mp
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
import weakref
from pathlib import Path

import pycocotools.mask as mask_util
import pytest
import torch
import torch.distributed as dist
from detectron2.data.samplers import TrainingSampler
from detectron2.engine.launch import _find_free_port
from detectron2.utils import comm

from vitdet.config import ConfigError
from vitdet.data import loader as loader_module
from vitdet.data.loader import PositionedSampler
from vitdet.engine import launcher
from vitdet.engine.launcher import DistributedEnv, distributed_env, first_slurm_host, launch_main

from helpers import (
    REPO,
    SYNTHETIC_CONFIG,
    assert_same_run_state,
    load_tool,
    tiny_overrides,
    tiny_synthetic,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="gloo on Linux / macOS")

CONFIG = str(SYNTHETIC_CONFIG)
TRAIN_NET = str(REPO / "tools" / "train_net.py")
TOTAL_BATCH = 4  # 2 processes x 2 images, or 1 process x 2 micro-batches of 2
MAX_ITER = 4
TIMEOUT = 180  # seconds: a hung job fails the test instead of blocking the suite

# The equivalence tolerance. 2 processes x 1 micro-batch and 1 process x 2 micro-batches see
# the same images per micro-batch (the loader deals each rank a consecutive chunk of the
# iteration's sample positions) and draw the same random numbers (the trainer seeds each
# micro-batch from (seed, iteration, micro-batch index), not from the rank), so the one
# difference left is the order of float32 additions: DDP all-reduces the two micro-batches'
# gradients where one process accumulates them in .grad, an absolute error of ~1e-7 of the
# summed terms. Where a gradient element is a small sum of larger cancelling terms, that error
# is large relative to the element, and AdamW divides the element by its own running size: the
# update error is then a sizeable part of lr, not ~1e-7 of it. Measured: one element of the RPN
# head's conv 2.4e-6 apart after 4 steps (every other weight within 2e-7), once drop path was
# off in the config. The tolerance is 1e-5, and a weight moves by ~lr per step whatever its
# gradient's size (Adam), so a different batch or RoI sample on either side
# changes weights by far more: asserted, the last two steps move a weight > 20x the tolerance.
# Logged losses: float64 means of float32 values, compared to 1e-6 relative.
WEIGHT_ATOL = 1e-5
LOSS_RTOL = 1e-6

train_net = load_tool("train_net")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_synthetic(tmp_path_factory.mktemp("synthetic"))


def arguments(
    data, output_dir, *, flags=(), overrides=(), train_dir: str | None = None
) -> list[str]:
    """tools/train_net.py's arguments for the tiny detector on ``data`` (registered under fresh
    names: the catalog is per process), 4 steps of 4 images, fp32; ``flags`` before, extra
    ``overrides`` after the common ones."""
    tag = uuid.uuid4().hex[:8]
    train_name, val_name = f"dist_train_{tag}", f"dist_val_{tag}"
    train_json, image_dir = data["train"]
    return [
        "--config-file",
        CONFIG,
        *flags,
        *("--register-coco", train_name, train_json, train_dir or image_dir),
        *("--register-coco", val_name, *data["val"]),
        *tiny_overrides(output_dir, train_name, val_name, max_iter=MAX_ITER),
        "train.amp.enabled=False",  # fp32: the tolerance above is float32 rounding
        f"dataloader.train.total_batch_size={TOTAL_BATCH}",
        *overrides,
    ]


def run_job(launcher: list[str], argv: list[str]) -> subprocess.CompletedProcess:
    """``launcher tools/train_net.py argv`` with one thread per process, outside any job."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(name, None)
    env["OMP_NUM_THREADS"] = "1"
    command = [*launcher, TRAIN_NET, *argv]
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )


SPAWN = [sys.executable]  # + "--num-gpus 2 --dist-url auto": detectron2's launcher, gloo
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
TWO_PROCESSES = ["--num-gpus", "2", "--dist-url", "auto"]  # auto: a free port


def read_metrics(output_dir) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines()]


def load_pth(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def two_processes(data, tmp_path_factory):
    """2 processes x 2 images per step (--num-gpus 2): checkpoints after steps 2 and 4."""
    output_dir = tmp_path_factory.mktemp("two_processes")
    job = run_job(SPAWN, arguments(data, output_dir, flags=TWO_PROCESSES))
    assert job.returncode == 0, job.stderr[-3000:]
    return output_dir


@pytest.fixture(scope="module")
def one_process(data, tmp_path_factory, one_thread):
    """1 process x 2 micro-batches of 2 images per step, in this process."""
    output_dir = tmp_path_factory.mktemp("one_process")
    assert train_net.cli(arguments(data, output_dir, overrides=["train.grad_accum_steps=2"])) == 0
    return output_dir


def test_two_processes_train_as_one_process_with_two_micro_batches(two_processes, one_process):
    rows = {
        name: [r for r in read_metrics(d) if "total_loss" in r]
        for name, d in (("two", two_processes), ("one", one_process))
    }
    assert [r["iteration"] for r in rows["two"]] == list(range(MAX_ITER))  # each row once
    for two, one in zip(rows["two"], rows["one"], strict=True):
        for key in ("total_loss", "loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls"):
            assert two[key] == pytest.approx(one[key], rel=LOSS_RTOL, abs=0), (key, two, one)

    final = load_pth(two_processes / "model_final.pth")["model"]
    reference = load_pth(one_process / "model_final.pth")["model"]
    halfway = load_pth(two_processes / "model_0000001.pth")["model"]
    moved = max((final[k] - halfway[k]).abs().max().item() for k in final)
    assert moved > 20 * WEIGHT_ATOL  # the tolerance tells trained weights apart
    for key, value in reference.items():
        torch.testing.assert_close(final[key], value, rtol=0, atol=WEIGHT_ATOL, msg=key)


def test_log_states_world_size_backend_and_images_per_process(two_processes):
    log = (two_processes / "log.txt").read_text()
    assert "World size: 2" in log and "World size: 1" not in log
    assert "2 process(es), backend gloo: 2 images per process per step in 1 micro-batch" in log
    assert (
        "Rank of current process: 1. World size: 2" in (two_processes / "log.txt.rank1").read_text()
    )


def test_rank_0_alone_writes_checkpoints_metrics_and_events(two_processes):
    names = sorted(p.name for p in two_processes.iterdir() if p.is_file())
    assert [n for n in names if n.endswith(".pth")] == [
        "model_0000001.pth",
        "model_0000003.pth",
        "model_final.pth",
    ]
    assert len([n for n in names if n.startswith("events.out.tfevents")]) == 1
    assert not [n for n in names if n.endswith(".tmp")]
    assert "Saving checkpoint" not in (two_processes / "log.txt.rank1").read_text()
    evaluations = [r for r in read_metrics(two_processes) if "bbox/AP" in r]
    assert len(evaluations) == 1


def test_evaluation_gathers_every_prediction_once(two_processes, data, tmp_path, one_thread):
    """The 2-process evaluation (each rank infers half the images, rank 0 gathers) equals the
    1-process evaluation of the same checkpoint, detection for detection: the same detections
    per image and category, scores and boxes within float rounding (on some CPUs, e.g. an Intel
    Xeon with AMX, the two runs' kernels differ in the last bits: 7.6e-6 measured), masks alike."""
    weights = f"train.init_checkpoint={two_processes / 'model_final.pth'}"
    assert train_net.cli(arguments(data, tmp_path, flags=["--eval-only"], overrides=[weights])) == 0
    results = [json.loads((d / "eval_results.json").read_text()) for d in (tmp_path, two_processes)]
    assert results[0].keys() == results[1].keys()
    for task in results[0]:
        for metric, value in results[0][task].items():
            assert value == pytest.approx(results[1][task][metric], abs=1e-6, nan_ok=True)

    def detections(output_dir) -> dict:
        """(image_id, category_id) -> that pair's detections."""
        path = output_dir / "inference" / "coco_instances_results.json"
        groups = {}
        for d in json.loads(path.read_text()):
            groups.setdefault((d["image_id"], d["category_id"]), []).append(d)
        return groups

    gathered, alone = detections(two_processes), detections(tmp_path)
    assert gathered and gathered.keys() == alone.keys()  # none lost, none twice
    for key, group in gathered.items():
        assert len(group) == len(alone[key])
        unmatched = list(alone[key])
        for ours in group:  # its nearest unmatched twin (near-equal scores may swap places)
            theirs = min(unmatched, key=lambda d: _distance(ours, d))
            unmatched.remove(theirs)
            assert ours["score"] == pytest.approx(theirs["score"], abs=1e-4)
            assert ours["bbox"] == pytest.approx(theirs["bbox"], abs=1e-3)
            masks = [ours["segmentation"], theirs["segmentation"]]
            if masks[0] != masks[1]:  # else: equal, also when empty (IoU 0)
                assert mask_util.iou(masks[:1], masks[1:], [False])[0, 0] > 0.99
    val_images = {image["id"] for image in json.loads(open(data["val"][0]).read())["images"]}
    assert {image_id for image_id, _ in gathered} <= val_images


def _distance(a: dict, b: dict) -> float:
    """How far two detections' scores and boxes are apart."""
    return abs(a["score"] - b["score"]) + sum(
        abs(x - y) for x, y in zip(a["bbox"], b["bbox"], strict=True)
    )


def test_torchrun_resume_continues_exactly(two_processes, data, tmp_path):
    """torchrun is detected from its environment (world size 2, not two runs of size 1), and
    --resume from the checkpoint after step 2 ends bit-identical to the uninterrupted run."""
    shutil.copy(two_processes / "model_0000001.pth", tmp_path)
    (tmp_path / "last_checkpoint").write_text("model_0000001.pth")
    job = run_job(TORCHRUN, arguments(data, tmp_path, flags=["--resume"]))
    assert job.returncode == 0, job.stderr[-3000:]

    assert "World size: 2" in (tmp_path / "log.txt").read_text()
    rows = [r for r in read_metrics(tmp_path) if "total_loss" in r]
    assert [r["iteration"] for r in rows] == [2, 3]  # continued, each row once
    resumed = load_pth(tmp_path / "model_final.pth")
    assert_same_run_state(resumed, load_pth(two_processes / "model_final.pth"))


def test_bad_image_in_one_rank_stops_the_job_with_one_line(data, tmp_path):
    """Rank 1 reads a truncated image in the first step while rank 0 waits for it in the
    gradient all-reduce: the job stops (no 30-minute gloo timeout), exit status 2, one line."""
    train_json, image_dir = data["train"]
    broken_dir = tmp_path / "train"
    shutil.copytree(image_dir, broken_dir)
    # the stream's positions 2 and 3 are rank 1's images of step 0 (2 images per rank)
    stream = list(itertools.islice(TrainingSampler(8, seed=0)._infinite_indices(), 4))
    images = sorted(json.loads(open(train_json).read())["images"], key=lambda i: i["id"])
    broken = broken_dir / images[stream[2]]["file_name"]  # detectron2 orders records by id
    broken.write_bytes(broken.read_bytes()[:200])

    strict = ["dataloader.train.max_unreadable_fraction=0"]
    argv = arguments(
        data, tmp_path / "out", flags=TWO_PROCESSES, overrides=strict, train_dir=str(broken_dir)
    )
    job = run_job(SPAWN, argv)
    assert job.returncode == 2, job.stderr[-3000:]
    errors = [line for line in job.stderr.splitlines() if "error" in line.lower()]
    assert errors == [
        "train_net.py: error: 1 of 8 training images could not be used (more than 0.0%): see "
        "the warnings naming them (rank 1 of 2; its log: log.txt.rank1 in train.output_dir)"
    ], job.stderr[-3000:]
    assert "Traceback" not in job.stderr
    assert broken.name in (tmp_path / "out" / "log.txt.rank1").read_text()
    assert not list((tmp_path / "out").glob("*.pth"))


def _children(pid: int) -> set[int]:
    """The pids whose parent is ``pid`` (Linux /proc)."""
    children = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        children.update(int(c) for c in (task / "children").read_text().split())
    return children


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl: Linux only")
def test_killing_the_launcher_ends_its_workers(data, tmp_path):
    """``kill -9`` of a --num-gpus launcher started in the background from a shell (its parent
    gone, as under ``nohup ... &``), once both workers train: they end within seconds. Before
    PR_SET_PDEATHSIG they went on training as orphans."""
    output_dir = tmp_path / "out"
    argv = arguments(data, output_dir, flags=TWO_PROCESSES, overrides=["train.max_iter=100000"])
    command = shlex.join([sys.executable, TRAIN_NET, *argv])
    started = subprocess.run(
        ["bash", "-c", f"{command} > {tmp_path / 'job.log'} 2>&1 & echo $!"],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
    )
    job = int(started.stdout)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + TIMEOUT
        log = output_dir / "log.txt"
        while not (log.is_file() and "Starting training" in log.read_text()):
            assert _alive(job) and time.monotonic() < deadline, "the job did not start"
            time.sleep(0.5)
        # the spawned ranks, not multiprocessing's resource tracker
        workers = {
            pid
            for pid in _children(job)
            if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()
        }
        assert len(workers) == 2, workers
        os.kill(job, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(map(_alive, workers))
    finally:
        for pid in (job, *workers):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("world_size, grad_accum_steps", [(2, 1), (2, 2), (3, 1)])
def test_ranks_share_every_epoch_and_iteration_in_stream_order(
    monkeypatch, world_size, grad_accum_steps
):
    """Rank r's images of an iteration are the r-th consecutive chunk of its positions: every
    image once per epoch over the ranks, and iteration i is positions [i T, (i + 1) T)."""
    per_rank = 2 * grad_accum_steps
    total = per_rank * world_size
    num_images = 3 * total  # three iterations make an epoch
    shares = {}
    for rank in range(world_size):
        monkeypatch.setattr(loader_module.comm, "get_rank", lambda r=rank: r)
        monkeypatch.setattr(loader_module.comm, "get_world_size", lambda: world_size)
        sampler = PositionedSampler(TrainingSampler(num_images, seed=5), chunk=per_rank)
        shares[rank] = list(itertools.islice(sampler, 3 * per_rank))
        sampler.start = 1 * total  # start_at(1): the rank's share from iteration 1 on
        assert list(itertools.islice(sampler, 2 * per_rank)) == shares[rank][per_rank:]
    stream = list(itertools.islice(TrainingSampler(num_images, seed=5)._infinite_indices(), 99))
    for iteration in range(3):
        dealt = [p for r in range(world_size) for p in shares[r][iteration * per_rank :][:per_rank]]
        assert [p for p, _ in dealt] == list(range(iteration * total, (iteration + 1) * total))
    epoch = [index for share in shares.values() for _, index in share]
    assert sorted(epoch) == list(range(num_images))  # each image once across the ranks
    assert all(stream[p] == index for share in shares.values() for p, index in share)


def test_torchrun_and_slurm_variables_are_read():
    torchrun = {
        "RANK": "5",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "4",
        "MASTER_ADDR": "node-a",
        "MASTER_PORT": "29400",
    }
    assert distributed_env(torchrun) == DistributedEnv("torchrun", 5, 8, 1, 4, "node-a", 29400)
    slurm = {
        "SLURM_PROCID": "3",
        "SLURM_NTASKS": "4",
        "SLURM_STEP_NUM_TASKS": "4",
        "SLURM_LOCALID": "1",
        "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
        "SLURM_STEP_NODELIST": "gpu[007-008]",
        "SLURM_JOB_ID": "4242",
    }
    assert distributed_env(slurm) == DistributedEnv("slurm", 3, 4, 1, 2, "gpu007", 19242)
    own_master = distributed_env({**slurm, "MASTER_ADDR": "h", "MASTER_PORT": "1234"})
    assert (own_master.master_addr, own_master.master_port) == ("h", 1234)
    # the batch script of a 4-task allocation is one process, not rank 0 of 4
    batch_script = {"SLURM_NTASKS": "4", "SLURM_PROCID": "0", "SLURM_NODELIST": "gpu007"}
    assert distributed_env(batch_script) is None
    assert distributed_env({}) is None
    with pytest.raises(ConfigError, match="same number of processes"):
        distributed_env({**slurm, "SLURM_STEP_TASKS_PER_NODE": "3,1"})


@pytest.mark.parametrize(
    "nodelist, host",
    [
        ("localhost", "localhost"),
        ("node-a,node-b", "node-a"),
        ("gpu[003-010,012],cpu1", "gpu003"),
        ("gpu[12,14]", "gpu12"),
        ("rack1-n[1-4]", "rack1-n1"),
    ],
)
def test_first_slurm_host(nodelist, host):
    assert first_slurm_host(nodelist) == host


def test_out_of_memory_is_one_line_with_what_to_change(monkeypatch, capsys):
    for name in ("RANK", "WORLD_SIZE", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(name, raising=False)

    def main(args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    args = argparse.Namespace(num_gpus=1, num_machines=1, machine_rank=0, dist_url="auto")
    assert launch_main(main, args, prog="train_net.py", user_errors=(ConfigError,)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "out of memory" in err
    assert "train.grad_accum_steps" in err and comm.get_world_size() == 1


def test_a_finished_rank_frees_its_ddp_model_before_leaving_the_group(monkeypatch):
    """The trainer leaves the DDP model in reference cycles; a torchrun / SLURM rank collects
    them while the process group exists (freed later, the reducer aborted the process at exit
    now and then). Deterministic: the automatic collector is off."""
    job = DistributedEnv("torchrun", 0, 1, 0, 1, "127.0.0.1", _find_free_port())
    for name in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.setenv(name, "")  # the rank sets them; restored after the test
    monkeypatch.setattr(comm, "_LOCAL_PROCESS_GROUP", None)
    model_ref, alive_at_destroy = [], []

    def main(args):
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))
        cycle = {"model": model}
        cycle["self"] = cycle
        model_ref.append(weakref.ref(model))

    destroy = dist.destroy_process_group

    def spy():
        alive_at_destroy.append(model_ref[0]() is not None)
        destroy()

    monkeypatch.setattr(dist, "destroy_process_group", spy)
    gc.disable()
    try:
        assert launcher._launched_rank(main, None, job, prog="t", user_errors=()) == 0
    finally:
        gc.enable()
    assert alive_at_destroy == [False] and not dist.is_initialized()


def test_a_spawned_rank_leaves_the_group_detectron2_joined(monkeypatch):
    """``--num-gpus``: detectron2's launch joins the group before main and never leaves it; the
    rank frees its DDP model and destroys the group, after a finished run and after an error."""
    monkeypatch.setattr(comm, "_LOCAL_PROCESS_GROUP", None)
    monkeypatch.setattr(launcher, "_end_with_launcher", lambda pid: None)  # this is pytest
    reports = mp.get_context("spawn").SimpleQueue()

    def main(args):  # what detectron2's _distributed_worker does before calling main, then a run
        url = f"tcp://127.0.0.1:{_find_free_port()}"
        dist.init_process_group("gloo", init_method=url, rank=0, world_size=1)
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))
        cycle = {"model": model}
        cycle["self"] = cycle
        if args == "fail":
            raise ConfigError("bad key")

    launcher._spawned_rank(main, (ConfigError,), reports, 0, "finish")
    assert not dist.is_initialized()
    with pytest.raises(SystemExit):
        launcher._spawned_rank(main, (ConfigError,), reports, 0, "fail")
    assert not dist.is_initialized() and reports.get()[0] == 2


def test_num_gpus_under_torchrun_is_a_user_error(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    args = argparse.Namespace(num_gpus=2, num_machines=1, machine_rank=0, dist_url="auto")
    assert launch_main(print, args, prog="train_net.py", user_errors=()) == 2
    assert "started by torchrun (2 processes): drop --num-gpus" in capsys.readouterr().err


SAM_CONFIG = str(REPO / "configs" / "SAM" / "sam_vit_tiny_synthetic.py")


def test_sam_two_processes_train_and_evaluate_every_image(data, tmp_path, one_thread):
    """SAM through the same launcher: 2 processes train (steps with no box prompt at all, so the
    box-corner embeddings get no loss) and the evaluation gathers both processes' images: its
    mIoU equals a 1-process evaluation of the saved weights. (It did not while each process kept
    the Fourier position features it drew under its own seed: a buffer, which DDP leaves alone.)"""
    tag = uuid.uuid4().hex[:8]
    names = {split: f"sam_dist_{split}_{tag}" for split in ("train", "val")}
    register = [
        a for split in ("train", "val") for a in ("--register-coco", names[split], *data[split])
    ]
    flags = ["--config-file", SAM_CONFIG, *register]
    common = [
        f"dataloader.train.dataset.names={names['train']}",
        f"dataloader.test.dataset.names={names['val']}",
        "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
        "train.amp.enabled=False", "model.num_correction_points=1",
    ]  # fmt: skip
    out = tmp_path / "two"
    job = run_job(
        SPAWN,
        [*TWO_PROCESSES, *flags, *common, f"train.output_dir={out}", "train.max_iter=2",
         "train.eval_period=2", "train.log_period=1", "dataloader.train.total_batch_size=4",
         "model.box_probability=0.0"],
    )  # fmt: skip
    assert job.returncode == 0, job.stderr[-3000:]
    assert [r["iteration"] for r in read_metrics(out) if "total_loss" in r] == [0, 1]
    two = json.loads((out / "eval_results.json").read_text())["sam"]
    single = tmp_path / "one"
    weights = f"train.init_checkpoint={out / 'model_final.pth'}"
    argv = [*flags, "--eval-only", *common, weights, f"train.output_dir={single}"]
    assert train_net.cli(argv) == 0
    one = json.loads((single / "eval_results.json").read_text())["sam"]
    assert set(two) == set(one) == {"box_mIoU", "point_mIoU", "click1_mIoU", "click3_mIoU",
                                    "click5_mIoU"}  # fmt: skip
    for key, value in one.items():
        assert two[key] == pytest.approx(value, abs=1e-6), key
