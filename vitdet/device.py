"""What the machine runs natively: the CPU's model and flags, the mixed-precision dtype that
pays off on a device (``train.amp.dtype="auto"``), and how the C library hands out host memory.

bf16 autocast is only a win where the hardware computes in bf16. On a CPU that is AVX512-BF16 or
AMX-BF16; elsewhere oneDNN emulates bf16 and a linear layer runs ~3x slower than in fp32
(measured on an Intel Xeon with AVX-512F only: 23 vs 72 GFLOP/s), although
``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` answers True there. So the CPU's own flags
decide, not that call. On CUDA, ``torch.cuda.is_bf16_supported()`` (compute capability >= 8.0)
decides between bf16 and fp16 with a gradient scaler.
"""

from __future__ import annotations

import ctypes
import functools
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "BF16_CPU_FLAGS",
    "AmpChoice",
    "cpu_flags",
    "cpu_model",
    "cpu_vendor",
    "keep_freed_memory",
    "release_freed_memory",
    "resolve_amp_dtype",
]

# /proc/cpuinfo flags of CPUs that compute bf16 natively.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's ``key: value`` lines of /proc/cpuinfo (empty where there is none)."""
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return {}
    info = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            break  # the first processor only
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC", "Intel(R) Xeon(R) ...")."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_vendor() -> str:
    """The CPU's vendor id ("GenuineIntel", "AuthenticAMD"; empty where /proc/cpuinfo is not)."""
    return _cpuinfo().get("vendor_id", "")


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    return frozenset(_cpuinfo().get("flags", "").split())


@dataclass(frozen=True)
class AmpChoice:
    """A resolved mixed-precision setting: ``dtype`` (None: fp32, no autocast) and why."""

    dtype: torch.dtype | None
    reason: str

    @property
    def name(self) -> str:
        return "float32" if self.dtype is None else str(self.dtype).removeprefix("torch.")


def resolve_amp_dtype(
    requested: str, device: str | torch.device, *, flags: frozenset[str] | None = None
) -> AmpChoice:
    """The autocast dtype for ``requested`` ("float16", "bfloat16" or "auto") on ``device``.

    "auto": bf16 where the device computes it natively (CPU flags ``BF16_CPU_FLAGS``, CUDA
    capability >= 8.0), fp16 (with a gradient scaler, the caller's part) on older GPUs, fp32 on
    CPUs without native bf16. ``flags`` overrides the CPU's own (tests).
    """
    if requested in AMP_DTYPES:
        return AmpChoice(AMP_DTYPES[requested], f"train.amp.dtype={requested}")
    if requested != "auto":
        raise ValueError(f"amp dtype {requested!r}: use one of {[*AMP_DTYPES, 'auto']}")
    device = torch.device(device)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return AmpChoice(torch.bfloat16, "auto: this GPU computes bf16 natively")
        return AmpChoice(torch.float16, "auto: this GPU has no native bf16, fp16 with a scaler")
    if device.type != "cpu":
        return AmpChoice(None, f"auto: no mixed precision on {device.type}")
    flags = cpu_flags() if flags is None else flags
    native = sorted(set(BF16_CPU_FLAGS) & flags)
    if native:
        return AmpChoice(torch.bfloat16, f"auto: the CPU ({cpu_model()}) has {', '.join(native)}")
    return AmpChoice(
        None,
        f"auto: the CPU ({cpu_model()}) has none of {', '.join(BF16_CPU_FLAGS)}, so bf16 would be "
        "emulated and slower than fp32",
    )


def _is_glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


# glibc's mallopt(3) parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
# Freed memory glibc keeps at the top of its heap before returning it to the kernel (the largest
# value mallopt takes), and the slack it adds when the heap grows.
KEEP_FREED_BYTES = 2**31 - 1
HEAP_GROWTH_PAD_BYTES = 2**30


def keep_freed_memory() -> bool:
    """Have glibc's malloc serve every block from its heap and keep freed memory for reuse, for
    the rest of this process (and the processes it forks later).

    By default glibc maps each large block (above a threshold that adapts between 128 KB and 32
    MB) on its own and unmaps it when freed, so every large tensor of every step is page-faulted
    in again and zero-filled by the kernel, 4 KB at a time. A ViT-B training step at 1024 px
    spent 6.2 of its 26.5 s in the kernel serving 3.7 million page faults on an Intel Xeon (2
    threads; detectron2's reference 33 of 44 s); with freed memory kept, 0.1 s and 130 faults,
    the step 23.0-26.4 s against 26.5-32.2 s (``tools/benchmarks/speed.py``, several runs).

    The price: the process holds on to up to 2 GB of freed memory (plus 1 GB of heap slack), and
    its peak RSS grows more than that, as freed holes of the heap fit the next sizes only in part
    (that step in a fresh process: ours 3.7 -> 5.2 GB, detectron2's reference 9.1 -> 14.7 GB).
    Where the tensors are small it costs time: the Synthetic config's training step (256 px, a
    6-block ViT of width 192) took 8-12% more CPU time with it, in alternated runs.
    :func:`release_freed_memory` hands the kept memory back.

    Returns whether the setting took: False where the C library is not glibc (macOS, Windows,
    musl), which then keeps its own behaviour.
    """
    if not _is_glibc():
        return False
    mallopt = ctypes.CDLL("libc.so.6").mallopt
    settings = (
        (_M_MMAP_MAX, 0),  # no block of its own: all from the heap
        (_M_TRIM_THRESHOLD, KEEP_FREED_BYTES),
        (_M_TOP_PAD, HEAP_GROWTH_PAD_BYTES),
    )
    return all(mallopt(param, value) == 1 for param, value in settings)


def release_freed_memory() -> bool:
    """Return the freed memory glibc kept (:func:`keep_freed_memory`) to the kernel now:
    ``malloc_trim(0)``, before a phase that needs the RAM elsewhere (another process). Returns
    whether any memory was released; False where the C library is not glibc."""
    return _is_glibc() and ctypes.CDLL("libc.so.6").malloc_trim(0) == 1
