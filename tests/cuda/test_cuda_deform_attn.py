"""Multi-scale deformable attention on CUDA: forward and backward against the CPU, float64."""

from __future__ import annotations

import pytest
import torch

from seg_suite.modeling.ms_deform_attn import MSDeformAttn, ms_deform_attn_core

pytestmark = pytest.mark.cuda

SHAPES = [(12, 16), (6, 8), (3, 4)]


def inputs(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    n, heads, dim, queries, points = 2, 4, 8, 30, 4
    value = torch.randn(n, sum(h * w for h, w in SHAPES), heads, dim, generator=g, dtype=dtype)
    # Points spill outside [0, 1]: the zero padding is exercised too.
    locations = torch.rand(n, queries, heads, len(SHAPES), points, 2, generator=g, dtype=dtype) * 1.4 - 0.2
    weights = torch.rand(n, queries, heads, len(SHAPES), points, generator=g, dtype=dtype).softmax(-1)
    return value, locations, weights


def _forward_backward(device, dtype=torch.float64):
    value, locations, weights = (t.to(device).requires_grad_() for t in inputs(dtype))
    out = ms_deform_attn_core(value, SHAPES, locations, weights)
    grad_out = torch.linspace(-1, 1, out.numel(), dtype=dtype, device=device).view_as(out)
    grads = torch.autograd.grad(out, (value, locations, weights), grad_out)
    return out, grads


def test_core_forward_and_backward_on_cuda_equal_the_cpu():
    out_cpu, grads_cpu = _forward_backward("cpu")
    out_gpu, grads_gpu = _forward_backward("cuda")
    assert out_gpu.is_cuda
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, rtol=1e-9, atol=1e-9)
    for g, c in zip(grads_gpu, grads_cpu):
        torch.testing.assert_close(g.cpu(), c, rtol=1e-7, atol=1e-7)


def test_module_forward_and_backward_on_cuda_equal_the_cpu():
    """The module as the pixel decoder runs it (float32 even under AMP; float64 here for exactness)."""
    torch.manual_seed(0)
    cpu = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=4).double()
    with torch.no_grad():  # non-zero offsets and attention logits
        cpu.sampling_offsets.weight.normal_(0, 0.5)
        cpu.attention_weights.weight.normal_(0, 0.5)
    gpu = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=4).double().cuda()
    gpu.load_state_dict(cpu.state_dict())
    g = torch.Generator().manual_seed(1)
    s = sum(h * w for h, w in SHAPES)
    query, src = torch.randn(2, 30, 32, generator=g, dtype=torch.float64), torch.randn(2, s, 32, generator=g, dtype=torch.float64)
    ref = torch.rand(2, 30, 3, 2, generator=g, dtype=torch.float64)
    outs = []
    for model, device in ((cpu, "cpu"), (gpu, "cuda")):
        q, x = query.to(device).requires_grad_(), src.to(device).requires_grad_()
        out = model(q, ref.to(device), x, torch.tensor(SHAPES, device=device))
        out.square().sum().backward()
        outs.append((out, q.grad, x.grad, {k: p.grad for k, p in model.named_parameters()}))
    (out_c, q_c, x_c, p_c), (out_g, q_g, x_g, p_g) = outs
    assert out_g.is_cuda and out_g.shape == (2, 30, 32)
    for got, want in ((out_g, out_c), (q_g, q_c), (x_g, x_c)):
        torch.testing.assert_close(got.cpu(), want, rtol=1e-7, atol=1e-7)
    for name, want in p_c.items():
        torch.testing.assert_close(p_g[name].cpu(), want, rtol=1e-7, atol=1e-7)
