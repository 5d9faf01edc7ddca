"""Random streams that are functions of (seed, position): what makes a resumed run exact.

Training reseeds python, numpy and torch before every micro-batch from (seed, iteration,
micro-batch index over all processes) and every sample's augmentation from (seed, stream
position). Nothing random then depends on how many iterations ran in this process, or on which
process runs a micro-batch: a run resumed at iteration k draws exactly what an uninterrupted run
draws there, with any number of data-loader workers, and 2 processes draw what 1 process with
twice the micro-batches draws.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

__all__ = ["STEP_STREAM", "SAMPLE_STREAM", "seed_everything", "preserved_rng_state"]

# Stream tags keep the per-iteration and the per-sample seeds apart.
STEP_STREAM = 0
SAMPLE_STREAM = 1


def seed_everything(*key: int) -> None:
    """Seed python's ``random``, numpy's global RNG and torch (all devices) from ``key``."""
    words = np.random.SeedSequence([int(k) for k in key]).generate_state(2, dtype=np.uint32)
    random.seed(int(words[0]))
    np.random.seed(int(words[1]))
    torch.manual_seed((int(words[0]) << 32) | int(words[1]))


@contextmanager
def preserved_rng_state() -> Iterator[None]:
    """Restore the python, numpy and torch CPU RNG states on exit."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
