"""Shared test settings (CPU, seeded, few threads) and fixtures; plain helpers are in
helpers.py."""

import logging
import os
import random

import numpy as np
import pytest
import torch
from detectron2.config import instantiate
from detectron2.utils.logger import setup_logger

from vitdet.config import load_config

from helpers import COCO_CONFIG, TINY_DETECTOR

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _fresh_loggers():
    """Tools run in-process call detectron2's ``setup_logger``, which caches handlers on the
    stream pytest captured for that test and closes afterwards: drop them after each test."""
    yield
    setup_logger.cache_clear()
    for name in ("vitdet", "detectron2", "d2", "fvcore"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread is faster, and much faster on a busy shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_detector_weights(tmp_path_factory):
    """Random weights of the tiny detector (``helpers.TINY_DETECTOR`` on the COCO recipe),
    saved as the trainer saves them."""
    torch.manual_seed(0)
    model = instantiate(load_config(COCO_CONFIG, TINY_DETECTOR).model)
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    torch.save({"model": model.state_dict()}, path)
    return path
