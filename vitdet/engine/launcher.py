"""Command-line entry of the training tools: one code path for every way of starting processes,
and one clear line when a process fails.

How the processes are started, in the order checked:

- ``torchrun`` (one or several machines): it starts the processes and sets ``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``.
- SLURM, an ``srun`` step with one task per process (``SLURM_STEP_NUM_TASKS`` > 1):
  ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS``, ``SLURM_LOCALID``, ``SLURM_STEP_TASKS_PER_NODE``
  (``"4(x2)"``); the rendezvous is the first host of ``SLURM_STEP_NODELIST`` (parsed here:
  ``scontrol`` need not exist) unless ``MASTER_ADDR`` is set, on ``MASTER_PORT`` or a port
  derived from ``SLURM_JOB_ID``. The batch script itself (``SLURM_NTASKS`` but no step) is one
  process: there ``--num-gpus`` decides.
- Otherwise detectron2's ``launch``: ``--num-gpus`` processes on this machine (gloo on a CPU-only
  machine, NCCL with GPUs), ``--num-machines`` / ``--machine-rank`` / ``--dist-url`` for several.

In the first two cases this process joins the process group itself (``env://``), with the
backend and the per-machine group detectron2's ``launch`` would have made, so ``comm`` reports
the same ranks and sizes whatever started the process.

Errors: a user error (``user_errors``: a bad config, a bad dataset) or running out of memory in
any process becomes one line on stderr and exit status 2. Under ``--num-gpus`` the processes
report it to the launching process, which stops the others and prints the first report once.
Under torchrun or SLURM the failing process prints it (with its rank) and exits; with gloo the
others then lose their peer at the next collective and stop with a one-line note instead of a
traceback, and torchrun stops them too.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import os
import re
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch
from detectron2.engine.launch import DEFAULT_TIMEOUT
from detectron2.utils import comm
from torch.multiprocessing.spawn import ProcessException

from vitdet.config import ConfigError, one_line

__all__ = ["DistributedEnv", "distributed_env", "first_slurm_host", "launch_main"]

EXIT_USER_ERROR = 2
OUT_OF_MEMORY = (torch.OutOfMemoryError, MemoryError)
OUT_OF_MEMORY_HINT = (
    "fewer images per process: a smaller dataloader.train.total_batch_size, a larger "
    "train.grad_accum_steps, or more processes"
)


@dataclass(frozen=True)
class DistributedEnv:
    """This process's place in a job started by torchrun or SLURM."""

    launcher: str  # "torchrun" or "slurm"
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``"gpu[003-010,012],cpu1"`` -> ``"gpu003"``,
    ``"a,b"`` -> ``"a"`` (what ``scontrol show hostnames`` would list first)."""
    first = re.match(r"([^,\[]*)(?:\[([^\]]*)\])?", nodelist.strip())
    prefix, ranges = first.group(1), first.group(2)
    if not prefix and not ranges:
        raise ConfigError(f"SLURM_NODELIST={nodelist!r}: no host name")
    if ranges is None:
        return prefix
    return prefix + re.split(r"[-,]", ranges, maxsplit=1)[0]  # keeps zero padding: 003


def _tasks_per_node(value: str) -> int:
    """``SLURM_TASKS_PER_NODE`` ``"4(x2)"`` / ``"4"`` -> 4; unequal nodes (``"4,2"``) cannot
    form detectron2's per-machine groups."""
    counts = {int(part.split("(")[0]) for part in value.split(",")}
    if len(counts) != 1:
        raise ConfigError(
            f"SLURM tasks per node {value!r}: every node needs the same number of processes"
        )
    return counts.pop()


def distributed_env(environ: dict[str, str] | None = None) -> DistributedEnv | None:
    """The job this process belongs to, from torchrun's or SLURM's variables; None when this
    process is alone (or one SLURM task) and ``--num-gpus`` decides."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env and "RANK" in env:  # torchrun (or any env:// launcher)
        world_size = int(env["WORLD_SIZE"])
        return DistributedEnv(
            launcher="torchrun",
            rank=int(env["RANK"]),
            world_size=world_size,
            local_rank=int(env.get("LOCAL_RANK", 0)),
            local_world_size=int(env.get("LOCAL_WORLD_SIZE", world_size)),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", 29500)),
        )
    # an srun step; not the batch script or an salloc shell, which see SLURM_NTASKS too
    if int(env.get("SLURM_STEP_NUM_TASKS", 1)) > 1:
        per_node = env.get("SLURM_STEP_TASKS_PER_NODE") or env["SLURM_TASKS_PER_NODE"]
        nodelist = env.get("SLURM_STEP_NODELIST") or env["SLURM_NODELIST"]
        # every task of the job derives the same port
        default_port = 15000 + int(env.get("SLURM_JOB_ID", 0)) % 20000
        return DistributedEnv(
            launcher="slurm",
            rank=int(env["SLURM_PROCID"]),
            world_size=int(env["SLURM_STEP_NUM_TASKS"]),
            local_rank=int(env["SLURM_LOCALID"]),
            local_world_size=_tasks_per_node(per_node),
            master_addr=env.get("MASTER_ADDR") or first_slurm_host(nodelist),
            master_port=int(env.get("MASTER_PORT", default_port)),
        )
    return None


def _backend() -> str:
    """detectron2's choice: NCCL with GPUs, gloo on a CPU-only machine."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def _join_process_group(job: DistributedEnv) -> None:
    """What detectron2's ``launch`` does in each of its workers, for a process someone else
    started: the global group (env://), the per-machine group, the GPU, a first barrier."""
    if job.world_size % job.local_world_size or job.local_rank >= job.local_world_size:
        raise ConfigError(
            f"{job.launcher}: {job.world_size} processes cannot be split into machines of "
            f"{job.local_world_size} (local rank {job.local_rank})"
        )
    os.environ.update(
        MASTER_ADDR=job.master_addr,
        MASTER_PORT=str(job.master_port),
        RANK=str(job.rank),
        WORLD_SIZE=str(job.world_size),
        LOCAL_RANK=str(job.local_rank),
    )
    dist.init_process_group(backend=_backend(), init_method="env://", timeout=DEFAULT_TIMEOUT)
    comm.create_local_process_group(job.local_world_size)
    if torch.cuda.is_available():
        torch.cuda.set_device(job.local_rank)
    comm.synchronize()


def _clear_error(error: BaseException, user_errors: tuple[type[Exception], ...]) -> str | None:
    """The one line for an error that needs no traceback (None: a bug, keep the traceback)."""
    if isinstance(error, user_errors):
        return one_line(error)
    if isinstance(error, OUT_OF_MEMORY):
        return f"out of memory ({one_line(error) or type(error).__name__}); {OUT_OF_MEMORY_HINT}"
    return None


def _lost_peer(error: BaseException) -> bool:
    """A collective failed because another process of the job exited (gloo says "Connection
    closed by peer"; newer errors are ``DistError``s)."""
    if isinstance(error, dist.DistError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        words in text for words in ("closed by peer", "reset by peer", "Broken pipe")
    )


def _lost_peer_line(rank: int, error: BaseException) -> str:
    first_sentence = str(error).split(". ")[0]
    return (
        f"rank {rank} stopped: another process of the job failed; its error is above or in its "
        f"log ({first_sentence})"
    )


def _where() -> str:
    """Which process: "(rank 1 of 2; its log: log.txt.rank1)"; empty for a single process."""
    rank, world_size = comm.get_rank(), comm.get_world_size()
    if world_size == 1:
        return ""
    log = "" if rank == 0 else f"; its log: log.txt.rank{rank} in train.output_dir"
    return f" (rank {rank} of {world_size}{log})"


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _end_with_launcher(launcher_pid: int) -> None:
    """Linux: this process gets SIGTERM when the launching process dies. A terminal's Ctrl-C
    reaches every process of the group, but ``kill <launcher>`` (or a scheduler signalling the
    pid it started) reaches the launcher alone, and its workers went on training as orphans
    on the cores the next run gets. Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != launcher_pid:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _spawned_rank(
    main: Callable[[argparse.Namespace], None],
    user_errors: tuple[type[Exception], ...],
    reports: mp.SimpleQueue,
    launcher_pid: int,
    args: argparse.Namespace,
) -> None:
    """A ``--num-gpus`` worker: a clear error, or the loss of a process on another machine,
    goes to the launching process as ``(exit status, line)``; it ends if the launcher dies."""
    _end_with_launcher(launcher_pid)
    try:
        main(args)
    except Exception as e:
        message = _clear_error(e, user_errors)
        if message is not None:
            reports.put((EXIT_USER_ERROR, f"error: {message}{_where()}"))
            sys.exit(EXIT_USER_ERROR)
        if _lost_peer(e):
            reports.put((1, _lost_peer_line(comm.get_rank(), e)))
            sys.exit(1)
        raise  # a bug: torch's spawn hands the traceback to the launching process
    finally:
        _leave_process_group()  # detectron2's launch joined it and leaves it to exit


def _launched_rank(
    main: Callable[[argparse.Namespace], None],
    args: argparse.Namespace,
    job: DistributedEnv,
    *,
    prog: str,
    user_errors: tuple[type[Exception], ...],
) -> int:
    """A torchrun / SLURM process: join the group, run, leave it."""
    try:
        _join_process_group(job)
        main(args)
    except Exception as e:
        message = _clear_error(e, user_errors)
        if message is not None:
            print(f"{prog}: error: {message}{_where()}", file=sys.stderr)
            return EXIT_USER_ERROR
        if _lost_peer(e):  # the failed process has reported its own error
            print(f"{prog}: {_lost_peer_line(job.rank, e)}", file=sys.stderr)
            return 1
        raise
    finally:
        _leave_process_group()
    return 0


def _leave_process_group() -> None:
    """Free the DDP model, then destroy the process group. The trainer, its hooks and the
    evaluation closure form reference cycles that keep the DDP model alive after main returns.
    Left to the collector, it was freed at some later point, after the group was destroyed or
    during interpreter exit, where its reducer aborted the process now and then ("terminate
    called without an active exception" after a finished run; tests/test_distributed.py's
    torchrun job)."""
    gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()


def launch_main(
    main: Callable[[argparse.Namespace], None],
    args: argparse.Namespace,
    *,
    prog: str,
    user_errors: tuple[type[Exception], ...],
) -> int:
    """Run ``main(args)`` in every process of the job (see the module docstring for how they
    are started); ``user_errors`` (a bad config, a bad dataset) and running out of memory
    become one line on stderr and exit status 2, without a traceback."""
    job = distributed_env()
    if job is not None:
        if args.num_gpus != 1 or args.num_machines != 1:
            print(
                f"{prog}: error: started by {job.launcher} ({job.world_size} processes): "
                "drop --num-gpus / --num-machines, the launcher sets the processes",
                file=sys.stderr,
            )
            return EXIT_USER_ERROR
        return _launched_rank(main, args, job, prog=prog, user_errors=user_errors)
    if args.num_gpus * args.num_machines == 1:
        try:
            main(args)
        except Exception as e:
            message = _clear_error(e, user_errors)
            if message is None:
                raise
            print(f"{prog}: error: {message}", file=sys.stderr)
            return EXIT_USER_ERROR
        return 0

    reports = mp.get_context("spawn").SimpleQueue()
    try:
        launch(
            functools.partial(_spawned_rank, main, user_errors, reports, os.getpid()),
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except ProcessException:
        if reports.empty():
            raise  # a bug: the failed process's traceback
        status, line = reports.get()  # the first report: the cause, not the peers it stopped
        print(f"{prog}: {line}", file=sys.stderr)
        return status
    return 0
