"""The CPU GEMM fast path: the ViT's linear layers on oneDNN instead of MKL.

Why it exists: torch's default fp32 CPU GEMM is MKL's, which takes its AVX2 path on AMD CPUs;
there oneDNN's brgemm kernel runs up to twice as fast. In inference oneDNN also fuses the bias
and the GELU into the GEMM's epilogue. On Intel CPUs the forward GEMMs of the two are on par,
but MKL computes the two backward GEMMs faster, with the transposed operands as they are
(ViT-B at 1024 px, 4096 tokens, Intel Xeon with AMX, 2 threads: the weight gradient of a
768 -> 3072 layer 58 ms against 98 for oneDNN with the copies it needs, the input gradient
53 against 63), so there layers that need gradients stay on ``F.linear`` (MKL) altogether.

The kernel is a private op, ``torch.ops.mkldnn._linear_pointwise``: torch is pinned, the op is
called only from this module, only when :func:`is_available` says it exists, and every other
case falls back to ``F.linear``. Tracing (TorchScript, ONNX) rejects the op ("unsupported input
list type: Scalar?"), so export turns the path off with :func:`disabled`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..device import cpu_vendor

__all__ = ["is_available", "is_enabled", "set_enabled", "disabled", "linear", "matmul"]

_enabled = True


@functools.cache
def is_available() -> bool:
    """Whether torch is built with oneDNN (mkldnn) and has the fused linear op."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


@functools.cache
def trains_on_onednn() -> bool:
    """Whether layers that need gradients use oneDNN too: everywhere but on Intel CPUs, where
    MKL's backward GEMMs are faster (module docstring)."""
    return cpu_vendor() != "GenuineIntel"


def is_enabled() -> bool:
    """The switch: whether :func:`linear` may use oneDNN (on by default)."""
    return _enabled


def set_enabled(flag: bool) -> None:
    """Turn the oneDNN path on or off, process-wide."""
    global _enabled
    _enabled = bool(flag)


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """oneDNN off inside the block; the previous state back afterwards, also on an exception."""
    previous = is_enabled()
    set_enabled(False)
    try:
        yield
    finally:
        set_enabled(previous)


def _linear_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    attr: str = "none",
    algorithm: str = "",
) -> torch.Tensor:
    """The private op: x (..., in) @ weight (out, in)^T [+ bias], then ``attr`` ("none" /
    "gelu" with ``algorithm`` "none" / "tanh") -> (..., out), one oneDNN call."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, [], algorithm)


def matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x (..., in) @ weight (out, in)^T on oneDNN, no autograd; needs :func:`is_available`."""
    return _linear_op(x, weight, None)


class _OneDNNLinear(torch.autograd.Function):
    """``F.linear`` with the forward and both backward GEMMs on oneDNN."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _linear_op(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        grad_y2d = grad_y.reshape(-1, grad_y.shape[-1])  # (N, out)
        if ctx.needs_input_grad[0]:
            # dx = dy W, a linear with weight W^T: (in, out)
            grad_x = _linear_op(grad_y, weight.t().contiguous(), None)
        if ctx.needs_input_grad[1]:
            # dW = dy^T x, a linear of dy^T (out, N) with weight x^T (in, N)
            x_t = x.reshape(-1, x.shape[-1]).t().contiguous()
            grad_weight = _linear_op(grad_y2d.t().contiguous(), x_t, None)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_y2d.sum(0)
        return grad_x, grad_weight, grad_bias


def linear(x: torch.Tensor, layer: nn.Linear, *, gelu: str | None = None) -> torch.Tensor:
    """``layer(x)``, then GELU when ``gelu`` names its ``approximate`` mode ("none" / "tanh").

    On oneDNN when it is available and enabled, for float32 CPU tensors outside autocast (bias
    and GELU fused when no gradient is needed; with gradients only where
    :func:`trains_on_onednn`); ``F.linear`` otherwise, and under ``torch.compile`` (inductor
    lowers it to oneDNN itself when the weights are frozen).
    """
    on_onednn = (
        not torch.compiler.is_compiling()
        and is_available()
        and _enabled
        and x.device.type == "cpu"
        and x.dtype == layer.weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
    )
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or layer.weight.requires_grad)
    if on_onednn and not needs_grad:
        attr = "none" if gelu is None else "gelu"
        return _linear_op(x, layer.weight, layer.bias, attr, gelu or "")
    if on_onednn and trains_on_onednn():
        x = _OneDNNLinear.apply(x, layer.weight, layer.bias)
    else:
        x = F.linear(x, layer.weight, layer.bias)
    return x if gelu is None else F.gelu(x, approximate=gelu)
