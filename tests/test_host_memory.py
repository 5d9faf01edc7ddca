"""vitdet.device.keep_freed_memory: glibc keeps freed memory for reuse, so the large
temporaries of the next step are not page-faulted in again; train.keep_freed_memory wires it."""

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from vitdet import device
from vitdet.engine import runner

from helpers import REPO

pytestmark = pytest.mark.skipif(not device._is_glibc(), reason="glibc only")

# A child process runs a "step" of 64 MB temporaries (above glibc's largest mmap threshold, as a
# ViT-B's activations at 1024 px) ten times and prints the page faults of the last five.
CHILD = """
import resource, sys, torch
from vitdet.device import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def step():
    a = torch.ones(16 * 2**20)
    return ((a * 2 + 1).exp() - a).sum()
for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES = 5 * 64 * 2**20 // 4096  # one 64 MB tensor a step, in 4 KB pages


def _run_child(script: str, *args: str) -> list[str]:
    """The words of the last line ``script`` prints, run in a fresh Python process."""
    child = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=REPO, check=True
    )
    return child.stdout.splitlines()[-1].split()


def _refills_page_faults(mode: str) -> int:
    return int(_run_child(CHILD, mode)[0])


def test_freed_memory_is_reused_without_page_faults():
    # glibc's default unmaps each freed temporary: every step faults all of them in again
    assert _refills_page_faults("default") > 4 * PAGES  # measured: 5 * PAGES
    # kept: none, or now and then one temporary that did not fit a freed hole (measured: 0 or
    # PAGES / 5)
    assert _refills_page_faults("keep") < PAGES // 2


RELEASE = """
import torch
from pathlib import Path
from vitdet.device import keep_freed_memory, release_freed_memory
def rss_mb():
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) // 1024
assert keep_freed_memory()
for _ in range(3):
    x = torch.ones(64 * 2**20)  # 256 MB, kept when freed
    del x
kept = rss_mb()
assert release_freed_memory()
print(kept, rss_mb())
"""


def test_released_memory_goes_back_to_the_kernel():
    kept, released = map(int, _run_child(RELEASE))
    assert kept - released > 200  # MB: the freed 256 MB tensor's pages


@pytest.mark.parametrize("keep", [True, False])
def test_cpu_runs_keep_freed_memory_when_the_config_says_so(monkeypatch, keep):
    calls = []
    monkeypatch.setattr(runner, "keep_freed_memory", lambda: calls.append(1) or True)
    cfg = OmegaConf.create({"train": {"device": "cpu", "keep_freed_memory": keep}})
    runner.resolve_device(cfg)
    assert calls == ([1] if keep else [])
