"""The CPU GEMM fast path: the ViT's linear layers on oneDNN instead of MKL.

Why it exists: torch's default fp32 CPU GEMM is MKL's, which takes its AVX2 path on AMD CPUs;
there oneDNN's brgemm kernel runs up to twice as fast. In inference oneDNN also fuses the bias
and the GELU into the GEMM's epilogue. On Intel CPUs the forward GEMMs of the two are on par,
but MKL computes the two backward GEMMs faster, with the transposed operands as they are
(ViT-B at 1024 px, 4096 tokens, Intel Xeon with AMX, 2 threads: the weight gradient of a
768 -> 3072 layer 58 ms against 98 for oneDNN with the copies it needs, the input gradient
53 against 63), so there layers that need gradients stay on ``F.linear`` (MKL) altogether.
The MLP built on these layers, :func:`gelu_mlp`, lives here too: in training it recomputes
GELU's output for the second layer's backward instead of storing it.

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

__all__ = [
    "disabled",
    "gelu_mlp",
    "is_available",
    "is_enabled",
    "linear",
    "matmul",
    "set_enabled",
    "trains_on_onednn",
]

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


def _linear_backward(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    *,
    needs_x: bool,
    needs_weight: bool,
    needs_bias: bool,
    on_onednn: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """The gradients of y = x W^T + b, each None unless needed: dx = dy W (..., in) and
    dW = dy^T x (out, in), on oneDNN or with torch's GEMM (MKL on the CPU), and db = sum dy."""
    grad_x = grad_weight = None
    grad_y2d, x2d = grad_y.reshape(-1, grad_y.shape[-1]), x.reshape(-1, x.shape[-1])
    if on_onednn:
        # dx: a linear with weight W^T (in, out); dW: a linear of dy^T (out, N) with weight
        # x^T (in, N); the op wants both operands contiguous
        if needs_x:
            grad_x = _linear_op(grad_y, weight.t().contiguous(), None)
        if needs_weight:
            grad_weight = _linear_op(grad_y2d.t().contiguous(), x2d.t().contiguous(), None)
    else:
        if needs_x:
            grad_x = grad_y @ weight
        if needs_weight:
            grad_weight = grad_y2d.t() @ x2d
    grad_bias = grad_y2d.sum(0) if needs_bias else None
    return grad_x, grad_weight, grad_bias


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
        needs_x, needs_weight, needs_bias = ctx.needs_input_grad
        return _linear_backward(
            grad_y,
            x,
            weight,
            needs_x=needs_x,
            needs_weight=needs_weight,
            needs_bias=ctx.has_bias and needs_bias,
            on_onednn=True,
        )


class _GeluLinear(torch.autograd.Function):
    """``F.linear(F.gelu(h), weight, bias)`` storing ``h`` only: GELU's output, the linear
    layer's input, is recomputed in the backward (one elementwise pass) instead of kept from
    the forward. The MLP's largest activation: ViT-B at 1024 px, 50 MB per block."""

    @staticmethod
    def forward(ctx, h, weight, bias, approximate, on_onednn):
        ctx.save_for_backward(h, weight)
        ctx.has_bias = bias is not None
        ctx.approximate, ctx.on_onednn = approximate, on_onednn
        a = F.gelu(h, approximate=approximate)
        return _linear_op(a, weight, bias) if on_onednn else F.linear(a, weight, bias)

    @staticmethod
    def backward(ctx, grad_y):
        h, weight = ctx.saved_tensors
        needs_h, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        a = F.gelu(h, approximate=ctx.approximate)
        grad_a, grad_weight, grad_bias = _linear_backward(
            grad_y,
            a,
            weight,
            needs_x=needs_h,
            needs_weight=needs_weight,
            needs_bias=ctx.has_bias and needs_bias,
            on_onednn=ctx.on_onednn,
        )
        del a
        grad_h = None
        if needs_h:
            grad_h = torch.ops.aten.gelu_backward(grad_a, h, approximate=ctx.approximate)
        return grad_h, grad_weight, grad_bias, None, None


def _takes_onednn(x: torch.Tensor, layer: nn.Linear) -> bool:
    """Whether ``layer(x)`` may run on oneDNN: available, enabled, float32 CPU tensors outside
    autocast, not under ``torch.compile``."""
    return (
        not torch.compiler.is_compiling()
        and is_available()
        and _enabled
        and x.device.type == "cpu"
        and x.dtype == layer.weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
    )


def _needs_grad(x: torch.Tensor, *layers: nn.Linear) -> bool:
    parameters = (p for layer in layers for p in layer.parameters())
    return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in parameters))


def linear(x: torch.Tensor, layer: nn.Linear, *, gelu: str | None = None) -> torch.Tensor:
    """``layer(x)``, then GELU when ``gelu`` names its ``approximate`` mode ("none" / "tanh").

    On oneDNN when it is available and enabled, for float32 CPU tensors outside autocast (bias
    and GELU fused when no gradient is needed; with gradients only where
    :func:`trains_on_onednn`); ``F.linear`` otherwise, and under ``torch.compile`` (inductor
    lowers it to oneDNN itself when the weights are frozen).
    """
    on_onednn = _takes_onednn(x, layer)
    needs_grad = _needs_grad(x, layer)
    if on_onednn and not needs_grad:
        attr = "none" if gelu is None else "gelu"
        return _linear_op(x, layer.weight, layer.bias, attr, gelu or "")
    if on_onednn and trains_on_onednn():
        x = _OneDNNLinear.apply(x, layer.weight, layer.bias)
    else:
        x = F.linear(x, layer.weight, layer.bias)
    return x if gelu is None else F.gelu(x, approximate=gelu)


def gelu_mlp(x: torch.Tensor, fc1: nn.Linear, fc2: nn.Linear, *, approximate: str) -> torch.Tensor:
    """``fc2(gelu(fc1(x)))``, GELU's ``approximate`` mode "none" / "tanh".

    Without gradients: fc1 and GELU as one call (:func:`linear`). With gradients, outside
    autocast: GELU's output is not stored for fc2's backward but recomputed there from fc1's
    (ViT-B training at 1024 px: peak memory 4.0 instead of 4.5 GB, for one elementwise pass per
    block); fc2's GEMMs on oneDNN where :func:`linear`'s would be. Under autocast as
    ``linear(linear(x, fc1, gelu=...), fc2)`` (its activations are half the size there)."""
    same_dtype = x.dtype == fc1.weight.dtype == fc2.weight.dtype
    autocast = torch.is_autocast_enabled(x.device.type)
    if not _needs_grad(x, fc1, fc2) or autocast or not same_dtype:
        return linear(linear(x, fc1, gelu=approximate), fc2)
    h = linear(x, fc1)
    on_onednn = _takes_onednn(h, fc2) and trains_on_onednn()
    return _GeluLinear.apply(h, fc2.weight, fc2.bias, approximate, on_onednn)
