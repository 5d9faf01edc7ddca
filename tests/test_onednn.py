"""The oneDNN linear fast path: same numbers as ``F.linear``, a switch that switches, a fallback.

Tolerances, float32 on the CPU: |oneDNN - F.linear| < 1e-5 forward, < 1e-4 for the gradients
(the two GEMMs sum in different orders).
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vitdet.modeling import onednn
from vitdet.modeling.vit import Mlp

FORWARD_TOL = 1e-5
BACKWARD_TOL = 1e-4

needs_onednn = pytest.mark.skipif(not onednn.is_available(), reason="torch without oneDNN linear")


@pytest.fixture(autouse=True)
def _enabled():
    """Every test starts with the path on and leaves it on."""
    onednn.set_enabled(True)
    yield
    onednn.set_enabled(True)


@pytest.fixture
def op_calls(monkeypatch) -> list[str]:
    """Records each call of the private op (its ``attr``: "none" / "gelu")."""
    calls = []
    op = onednn._linear_op

    def spy(x, weight, bias, attr="none", algorithm=""):
        calls.append(attr)
        return op(x, weight, bias, attr, algorithm)

    monkeypatch.setattr(onednn, "_linear_op", spy)
    return calls


def reference(x: torch.Tensor, layer: nn.Linear, gelu: str | None) -> torch.Tensor:
    out = F.linear(x, layer.weight, layer.bias)
    return out if gelu is None else F.gelu(out, approximate=gelu)


def assert_same_outputs_and_gradients(out, expected, inputs) -> None:
    """out == expected within FORWARD_TOL; their gradients w.r.t. ``inputs`` for one random
    output gradient within BACKWARD_TOL."""
    assert (out - expected).abs().max() < FORWARD_TOL
    grad = torch.randn_like(out)
    for g, w in zip(
        torch.autograd.grad(out, inputs, grad),
        torch.autograd.grad(expected, inputs, grad),
        strict=True,
    ):
        assert (g - w).abs().max() < BACKWARD_TOL


def assert_matches_reference(layer: nn.Linear, gelu: str | None) -> None:
    """``linear`` vs ``F.linear`` (+ GELU): forward with and without autograd, and backward."""
    x = torch.randn(2, 3, 5, layer.in_features, requires_grad=True)
    expected = reference(x, layer, gelu)
    params = [x, *layer.parameters()]  # weight [, bias]
    assert_same_outputs_and_gradients(onednn.linear(x, layer, gelu=gelu), expected, params)
    with torch.no_grad():
        assert (onednn.linear(x, layer, gelu=gelu) - expected).abs().max() < FORWARD_TOL


@needs_onednn
@pytest.mark.parametrize("trains_on_onednn", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("gelu", [None, "none", "tanh"])
def test_linear_matches_torch_forward_and_backward(
    gelu, bias, trains_on_onednn, op_calls, monkeypatch
):
    monkeypatch.setattr(onednn, "trains_on_onednn", lambda: trains_on_onednn)
    torch.manual_seed(0)
    assert_matches_reference(nn.Linear(16, 24, bias=bias), gelu)
    # on oneDNN: the forward and the two backward GEMMs when it trains, then the fused no-grad
    # call
    expected_attr = "none" if gelu is None else "gelu"
    assert op_calls == ["none", "none", "none"] * trains_on_onednn + [expected_attr]


@pytest.mark.parametrize(
    "vendor, expected", [("GenuineIntel", False), ("AuthenticAMD", True), ("", True)]
)
def test_training_gemms_leave_onednn_on_intel_only(monkeypatch, vendor, expected):
    monkeypatch.setattr(onednn, "cpu_vendor", lambda: vendor)
    assert onednn.trains_on_onednn.__wrapped__() is expected


@needs_onednn
def test_switch_turns_the_op_off_and_on(op_calls, monkeypatch):
    monkeypatch.setattr(onednn, "trains_on_onednn", lambda: True)  # the layer needs gradients
    layer = nn.Linear(8, 4)
    x = torch.randn(3, 8)
    onednn.linear(x, layer)
    assert len(op_calls) == 1
    with onednn.disabled():
        assert not onednn.is_enabled()
        torch.testing.assert_close(onednn.linear(x, layer), layer(x))
        onednn.linear(x.requires_grad_(), layer).sum().backward()
    onednn.set_enabled(False)
    onednn.linear(x, layer, gelu="tanh")
    assert len(op_calls) == 1  # nothing while off
    onednn.set_enabled(True)
    onednn.linear(x.double(), layer.double())  # float64: never on oneDNN
    assert len(op_calls) == 1
    onednn.linear(x.float(), layer.float())
    assert len(op_calls) == 2


@pytest.mark.parametrize("initial", [True, False])
def test_disabled_restores_the_state_after_an_exception(initial):
    onednn.set_enabled(initial)
    with pytest.raises(RuntimeError, match="inside"):
        with onednn.disabled():
            assert not onednn.is_enabled()
            raise RuntimeError("inside")
    assert onednn.is_enabled() is initial
    with onednn.disabled(), onednn.disabled():  # nested
        pass
    assert onednn.is_enabled() is initial


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("gelu", [None, "tanh"])
def test_falls_back_to_torch_without_onednn(monkeypatch, op_calls, gelu, bias):
    monkeypatch.setattr(onednn, "is_available", lambda: False)
    torch.manual_seed(0)
    assert_matches_reference(nn.Linear(16, 24, bias=bias), gelu)
    assert op_calls == []


def test_mlp_traces_with_onednn_disabled():
    torch.manual_seed(0)
    mlp = Mlp(dim=16, hidden_dim=32, act_layer=nn.GELU).eval()
    x = torch.randn(2, 3, 4, 16)
    with onednn.disabled(), torch.no_grad():
        traced = torch.jit.trace(mlp, (x,))
    assert "mkldnn" not in str(traced.graph)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), mlp(x), atol=FORWARD_TOL, rtol=0)
        torch.testing.assert_close(traced(2 * x), mlp(2 * x), atol=FORWARD_TOL, rtol=0)


@needs_onednn
def test_matmul_is_x_times_weight_transposed():
    torch.manual_seed(0)
    x, weight = torch.randn(7, 16), torch.randn(24, 16)
    assert (onednn.matmul(x, weight) - x @ weight.T).abs().max() < FORWARD_TOL


def plain_mlp(x, fc1, fc2, approximate):
    return reference(reference(x, fc1, approximate), fc2, None)


def saved_numel(fn) -> tuple[torch.Tensor, int]:
    """fn()'s output and the number of elements autograd saved for its backward."""
    numel = []

    def pack(t):
        numel.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(numel)


@pytest.mark.parametrize("trains_on_onednn", [True, False])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("bias", [True, False])
def test_gelu_mlp_matches_torch_and_does_not_store_gelus_output(
    trains_on_onednn, approximate, bias, monkeypatch
):
    monkeypatch.setattr(onednn, "trains_on_onednn", lambda: trains_on_onednn)
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(16, 64, bias=bias), nn.Linear(64, 16, bias=bias)
    x = torch.randn(2, 3, 5, 16, requires_grad=True)
    out, stored = saved_numel(lambda: onednn.gelu_mlp(x, fc1, fc2, approximate=approximate))
    expected, stored_plain = saved_numel(lambda: plain_mlp(x, fc1, fc2, approximate))
    # the plain composition also keeps GELU's output, 2 * 3 * 5 * 64 floats, for fc2
    assert stored_plain - stored == 2 * 3 * 5 * 64
    params = [x, *fc1.parameters(), *fc2.parameters()]
    assert_same_outputs_and_gradients(out, expected, params)
    with torch.no_grad():
        got = onednn.gelu_mlp(x, fc1, fc2, approximate=approximate)
        assert (got - expected).abs().max() < FORWARD_TOL


def test_gelu_mlp_under_autocast_is_the_plain_composition():
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(16, 64), nn.Linear(64, 16)
    x = torch.randn(4, 16, requires_grad=True)
    with torch.autocast("cpu", torch.bfloat16):
        out = onednn.gelu_mlp(x, fc1, fc2, approximate="none")
        expected = onednn.linear(onednn.linear(x, fc1, gelu="none"), fc2)
    assert out.dtype == torch.bfloat16 and torch.equal(out, expected)
