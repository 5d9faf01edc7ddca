"""The training step: mixed precision of a chosen dtype, gradient accumulation, seeded RNGs."""

from __future__ import annotations

import time
from contextlib import nullcontext

import torch
from detectron2.engine import SimpleTrainer
from detectron2.utils import comm
from torch.nn.parallel import DistributedDataParallel

from vitdet.data.seeding import STEP_STREAM, seed_everything

__all__ = ["Trainer"]


class Trainer(SimpleTrainer):
    """``SimpleTrainer`` whose iteration is one optimizer step over ``grad_accum_steps``
    micro-batches from the loader.

    - ``amp_dtype``: ``None`` (fp32), ``torch.bfloat16`` (autocast, no scaler) or
      ``torch.float16`` (autocast and a ``GradScaler``, whose state is checkpointed).
    - Each micro-batch loss is divided by ``grad_accum_steps``, so the update is the one of the
      mean loss over all images; DDP synchronises gradients on the last micro-batch only.
    - ``clip_grad_norm`` > 0: the gradients (after that synchronisation, unscaled) are scaled
      down to that total L2 norm when above it, and the norm before clipping is logged as
      ``grad_norm``.
    - Before each micro-batch python, numpy and torch are reseeded from (seed, iteration, g),
      g = rank * grad_accum_steps + micro the micro-batch's index among the iteration's
      ``world_size * grad_accum_steps``. The loader gives micro-batch g the images at stream
      positions ``[g * b, (g + 1) * b)`` of the iteration (b images each), so drop-path, anchor
      and RoI sampling depend on the images and the step, not on which process runs them: a
      resumed run draws what the uninterrupted one drew, and 2 processes x 1 micro-batch draw
      what 1 process x 2 micro-batches draws (``tests/test_distributed.py``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        data_loader,
        optimizer: torch.optim.Optimizer,
        *,
        seed: int,
        device_type: str = "cpu",
        amp_dtype: torch.dtype | None = None,
        grad_accum_steps: int = 1,
        clip_grad_norm: float = 0.0,
    ) -> None:
        super().__init__(model, data_loader, optimizer)
        if grad_accum_steps < 1:
            raise ValueError(f"grad_accum_steps must be >= 1, got {grad_accum_steps}")
        self.seed = seed
        self.device_type = device_type
        self.amp_dtype = amp_dtype
        self.grad_accum_steps = grad_accum_steps
        self.clip_grad_norm = clip_grad_norm
        use_scaler = amp_dtype == torch.float16
        self.grad_scaler = torch.amp.GradScaler(device_type) if use_scaler else None

    def run_step(self) -> None:
        assert self.model.training, "[Trainer] model was changed to eval mode!"
        self.optimizer.zero_grad(set_to_none=True)

        data_time = 0.0
        mean_losses: dict[str, torch.Tensor] = {}
        for micro in range(self.grad_accum_steps):
            start = time.perf_counter()
            data = next(self._data_loader_iter)
            data_time += time.perf_counter() - start
            micro_batch_index = comm.get_rank() * self.grad_accum_steps + micro
            seed_everything(self.seed, STEP_STREAM, self.iter, micro_batch_index)

            last = micro == self.grad_accum_steps - 1
            no_sync = isinstance(self.model, DistributedDataParallel) and not last
            with self.model.no_sync() if no_sync else nullcontext():
                with torch.autocast(
                    self.device_type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
                ):
                    loss_dict = self.model(data)
                    loss = sum(loss_dict.values()) / self.grad_accum_steps
                if self.grad_scaler is not None:
                    loss = self.grad_scaler.scale(loss)
                loss.backward()
            for name, value in loss_dict.items():
                share = value.detach() / self.grad_accum_steps
                mean_losses[name] = mean_losses.get(name, 0) + share

        self.after_backward()
        self._write_metrics(mean_losses, data_time)
        if self.clip_grad_norm > 0:
            self._clip_gradients()
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def _clip_gradients(self) -> None:
        if self.grad_scaler is not None:
            self.grad_scaler.unscale_(self.optimizer)  # clip the true gradients
        # parameters without a gradient (frozen, or unused this step) are skipped by torch
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
        self.storage.put_scalar("grad_norm", float(norm))

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["seed"] = self.seed
        if self.grad_scaler is not None:
            state["grad_scaler"] = self.grad_scaler.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.seed = state_dict["seed"]
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
