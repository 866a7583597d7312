"""The oneDNN route of seg_suite.modeling.linear against F.linear."""

import os
import subprocess
import sys

import pytest
import torch
from torch.nn import functional as F

from seg_suite.modeling import linear as linear_mod
from seg_suite.modeling.linear import MIN_ELEMENTS, Linear, linear, set_onednn_linear


@pytest.fixture
def onednn():
    previous = set_onednn_linear(True)
    yield
    set_onednn_linear(previous)


def _grads(fn, x, weight, bias, grad_out):
    inputs = [t.detach().clone().requires_grad_() for t in (x, weight, bias) if t is not None]
    out = fn(*inputs) if bias is not None else fn(inputs[0], inputs[1], None)
    return out, torch.autograd.grad(out, inputs, grad_out)


@pytest.mark.parametrize("shape,bias", [((2, 700, 64), True), ((1500, 48), True), ((3, 400, 40), False)])
def test_matches_f_linear_with_gradients(onednn, shape, bias):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g)
    assert x.numel() >= MIN_ELEMENTS  # the oneDNN route is taken
    weight = torch.randn(96, shape[-1], generator=g) / shape[-1] ** 0.5
    b = torch.randn(96, generator=g) if bias else None
    grad_out = torch.randn(*shape[:-1], 96, generator=g)
    got, got_grads = _grads(linear, x, weight, b, grad_out)
    want, want_grads = _grads(F.linear, x, weight, b, grad_out)
    assert got.shape == want.shape
    # Same float32 products, summed in another order.
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, w in zip(got_grads, want_grads):
        torch.testing.assert_close(a, w, rtol=1e-4, atol=1e-4)


def test_route_choice(onednn, monkeypatch):
    calls = []
    real_conv = F.conv2d
    monkeypatch.setattr(linear_mod.F, "conv2d", lambda *a, **k: calls.append(1) or real_conv(*a, **k))
    weight = torch.randn(8, 64)
    big = torch.randn(MIN_ELEMENTS // 64, 64)
    linear(big, weight)
    assert len(calls) == 1
    # Small, float64 and non-contiguous-but-small inputs go to F.linear, bit for bit.
    small = torch.randn(10, 64)
    assert torch.equal(linear(small, weight), F.linear(small, weight))
    x64 = big.double()
    assert torch.equal(linear(x64, weight.double()), F.linear(x64, weight.double()))
    set_onednn_linear(False)
    assert torch.equal(linear(big, weight), F.linear(big, weight))
    assert len(calls) == 1


def test_non_contiguous_input(onednn):
    x = torch.randn(64, 2, 600).transpose(0, 2)  # (600, 2, 64), not contiguous
    weight = torch.randn(32, 64)
    torch.testing.assert_close(linear(x, weight), F.linear(x, weight), rtol=1e-5, atol=1e-5)


def test_module_keeps_nn_linear_state_dict():
    layer = Linear(16, 4)
    assert isinstance(layer, torch.nn.Linear)
    assert set(layer.state_dict()) == {"weight", "bias"}
    plain = torch.nn.Linear(16, 4)
    layer.load_state_dict(plain.state_dict())
    x = torch.randn(5, 16)
    assert torch.equal(layer(x), plain(x))  # small input: F.linear itself


def test_environment_switch():
    code = "import seg_suite.modeling.linear as m; print(m.onednn_linear_enabled())"
    for value, expected in (("aten", "False"), ("ONEDNN", "True"), ("bogus", "True")):
        env = dict(os.environ, SEG_SUITE_CPU_LINEAR=value)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        assert proc.stdout.strip().splitlines()[-1] == expected
        # A wrong value is a warning naming the choices, not a traceback.
        assert ("is not one of onednn, aten" in proc.stderr) == (value == "bogus")
