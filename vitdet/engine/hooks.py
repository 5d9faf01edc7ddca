"""Training hooks beyond detectron2's."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

from detectron2.engine import HookBase, hooks

__all__ = ["PrunedPeriodicCheckpointer", "SkippedRecordsHook", "TimedEvalHook", "evaluation_rows"]

logger = logging.getLogger(__name__)


class PrunedPeriodicCheckpointer(hooks.PeriodicCheckpointer):
    """detectron2's periodic checkpointer whose ``max_to_keep`` also counts the checkpoints of
    the run before a resume (detectron2 only prunes those it wrote itself), and that removes
    ``*.tmp`` files left by a write that was killed. ``model_final.pth`` is never pruned."""

    PERIODIC = re.compile(r"model_(\d{7})\.pth$")

    def before_train(self) -> None:
        super().before_train()
        save_dir = self.checkpointer.save_dir
        if not save_dir or not os.path.isdir(save_dir):
            return
        for name in os.listdir(save_dir):
            if name.endswith(".tmp"):
                logger.warning(f"removing {name}, left by an interrupted checkpoint write")
                os.remove(os.path.join(save_dir, name))
        existing = sorted(n for n in os.listdir(save_dir) if self.PERIODIC.match(n))
        self.recent_checkpoints = [os.path.join(save_dir, n) for n in existing]
        if self.max_to_keep is not None:
            while len(self.recent_checkpoints) > self.max_to_keep:
                os.remove(self.recent_checkpoints.pop(0))


class SkippedRecordsHook(HookBase):
    """Records ``data/unreadable_images``: the training records the loader skipped so far
    because they could not be read (``vitdet.data.loader.ResumableLoader.num_skipped``)."""

    def after_step(self) -> None:
        count = self.trainer.data_loader.num_skipped
        self.trainer.storage.put_scalar("data/unreadable_images", count, smoothing_hint=False)

    def after_train(self) -> None:
        loader = self.trainer.data_loader
        if loader.num_skipped:
            logger.warning(
                f"{loader.num_skipped} of {loader.num_records} training images were unreadable "
                "and skipped"
            )


class _Stopwatch:
    """Seconds of ``clock`` since ``start()``, pauses excluded, plus a carried-over ``offset``."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.offset = 0.0
        self._start = clock()
        self._paused = 0.0

    def start(self) -> None:
        self._start = self._clock()
        self._paused = 0.0

    def seconds(self) -> float:
        return self.offset + self._clock() - self._start - self._paused

    @contextmanager
    def paused(self) -> Iterator[None]:
        start = self._clock()
        try:
            yield
        finally:
            self._paused += self._clock() - start


def evaluation_rows(output_dir: str | os.PathLike, *metrics: str) -> list[dict]:
    """The rows of a run's ``metrics.json`` that hold any of ``metrics`` (an evaluation's keys:
    ``"bbox/AP"``, ``"mae_eval/loss"``, ``"sam/box_mIoU"``), in order, with the training time
    ``TimedEvalHook`` adds; [] before the run has written one."""
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [row for row in rows if any(metric in row for metric in metrics)]


class TimedEvalHook(hooks.EvalHook):
    """``EvalHook`` that also records, in each evaluation's ``metrics.json`` row (hence the
    AP-vs-time curve), training time so far with evaluations excluded, carried over a resume
    (checkpointed hook state):

    - ``train_seconds``: wall clock; ``train_cpu_seconds``: CPU time of this process (all
      threads), less sensitive to other jobs on a shared machine;
    - ``train_iterations``: iterations completed (the row's ``iteration`` is the last
      iteration's index for a periodic evaluation but ``max_iter`` for the final one).
    """

    def __init__(self, eval_period: int, eval_function: Callable[[], dict]) -> None:
        super().__init__(eval_period, eval_function)
        self._stopwatches = {
            "train_seconds": _Stopwatch(time.perf_counter),
            "train_cpu_seconds": _Stopwatch(time.process_time),
        }
        self._iterations_done = 0

    def before_train(self) -> None:
        for stopwatch in self._stopwatches.values():
            stopwatch.start()
        self._iterations_done = self.trainer.start_iter

    def after_step(self) -> None:
        self._iterations_done = self.trainer.iter + 1
        super().after_step()

    def _do_eval(self) -> None:
        with ExitStack() as stack:
            for stopwatch in self._stopwatches.values():
                stack.enter_context(stopwatch.paused())
            self.trainer.storage.put_scalars(
                train_iterations=self._iterations_done, smoothing_hint=False, **self.state_dict()
            )
            super()._do_eval()

    def state_dict(self) -> dict:
        return {name: stopwatch.seconds() for name, stopwatch in self._stopwatches.items()}

    def load_state_dict(self, state_dict: dict) -> None:
        for name, stopwatch in self._stopwatches.items():
            stopwatch.offset = state_dict.get(name, 0.0)
