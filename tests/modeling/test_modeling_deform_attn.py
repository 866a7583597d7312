"""Multi-scale deformable attention against a per-sample loop with hand-written bilinear sampling."""

import math

import pytest
import torch

from seg_suite.modeling.ms_deform_attn import MSDeformAttn, ms_deform_attn_core


def naive_ms_deform_attn(value, shapes, locations, weights):
    """Loop oracle: bilinear read with zero padding, pixel centres at (i + 0.5) / size."""
    n, _, heads, dim = value.shape
    _, n_queries, _, n_levels, n_points, _ = locations.shape
    out = torch.zeros(n, n_queries, heads * dim, dtype=value.dtype)
    starts = [0]
    for h, w in shapes[:-1]:
        starts.append(starts[-1] + h * w)
    for b in range(n):
        for q in range(n_queries):
            for m in range(heads):
                acc = torch.zeros(dim, dtype=value.dtype)
                for lvl, (h, w) in enumerate(shapes):
                    for p in range(n_points):
                        x = locations[b, q, m, lvl, p, 0].item() * w - 0.5
                        y = locations[b, q, m, lvl, p, 1].item() * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        sample = torch.zeros(dim, dtype=value.dtype)
                        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                            for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                                if 0 <= yy < h and 0 <= xx < w:
                                    sample += wy * wx * value[b, starts[lvl] + yy * w + xx, m]
                        acc += weights[b, q, m, lvl, p] * sample
                out[b, q, m * dim:(m + 1) * dim] = acc
    return out


def _random_inputs(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (2, 2), (1, 3)]
    n, heads, dim, n_queries, n_points = 2, 2, 3, 5, 2
    value = torch.randn(n, sum(h * w for h, w in shapes), heads, dim, generator=g, dtype=dtype)
    # Points spill outside [0, 1] to exercise the zero padding.
    locations = torch.rand(n, n_queries, heads, len(shapes), n_points, 2, generator=g, dtype=dtype) * 1.4 - 0.2
    weights = torch.rand(n, n_queries, heads, len(shapes), n_points, generator=g, dtype=dtype)
    weights = weights / weights.flatten(3).sum(-1)[..., None, None]
    return value, shapes, locations, weights


def test_core_matches_naive_loop():
    value, shapes, locations, weights = _random_inputs()
    fast = ms_deform_attn_core(value, shapes, locations, weights)
    slow = naive_ms_deform_attn(value, shapes, locations, weights)
    assert fast.shape == (2, 5, 6)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-10)


def test_core_accepts_tensor_shapes():
    value, shapes, locations, weights = _random_inputs(torch.float32, seed=1)
    a = ms_deform_attn_core(value, torch.tensor(shapes), locations, weights)
    b = ms_deform_attn_core(value, shapes, locations, weights)
    assert torch.equal(a, b)


def test_core_gradcheck():
    value, shapes, locations, weights = _random_inputs(seed=2)
    # Keep points away from pixel-centre lines, where bilinear sampling has kinks.
    inputs = (value.requires_grad_(), locations.requires_grad_(), weights.requires_grad_())
    assert torch.autograd.gradcheck(
        lambda v, loc, w: ms_deform_attn_core(v, shapes, loc, w), inputs, eps=1e-6, atol=1e-5)


def test_module_matches_naive_with_reference_points():
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=8, n_levels=2, n_heads=2, n_points=3).double()
    with torch.no_grad():  # non-zero offsets and attention logits
        attn.sampling_offsets.weight.normal_(0, 0.5)
        attn.attention_weights.weight.normal_(0, 0.5)
    shapes = [(4, 5), (2, 3)]
    s = sum(h * w for h, w in shapes)
    query = torch.randn(2, 7, 8, dtype=torch.float64)
    src = torch.randn(2, s, 8, dtype=torch.float64)
    ref = torch.rand(2, 7, 2, 2, dtype=torch.float64)
    out = attn(query, ref, src, torch.tensor(shapes))
    # Independent recomputation of the module's maths with the loop oracle.
    value = attn.value_proj(src).view(2, s, 2, 4)
    offsets = attn.sampling_offsets(query).view(2, 7, 2, 2, 3, 2)
    weights = attn.attention_weights(query).view(2, 7, 2, 6).softmax(-1).view(2, 7, 2, 2, 3)
    norm = torch.tensor([[5.0, 4.0], [3.0, 2.0]], dtype=torch.float64)  # (W, H) per level
    loc = ref[:, :, None, :, None, :] + offsets / norm[None, None, None, :, None, :]
    expected = attn.output_proj(naive_ms_deform_attn(value, shapes, loc, weights))
    assert out.shape == (2, 7, 8)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


def test_module_rejects_wrong_shapes():
    attn = MSDeformAttn(d_model=8, n_levels=1, n_heads=2, n_points=1)
    with pytest.raises(ValueError, match="do not cover"):
        attn(torch.zeros(1, 2, 8), torch.zeros(1, 2, 1, 2), torch.zeros(1, 5, 8), [(2, 3)])


def test_initial_offsets_follow_deformable_detr():
    attn = MSDeformAttn(d_model=16, n_levels=2, n_heads=4, n_points=2)
    bias = attn.sampling_offsets.bias.view(4, 2, 2, 2)
    # Head 0 looks right (+x), head 1 down (+y); point p sits at distance p + 1.
    torch.testing.assert_close(bias[0, 0], torch.tensor([[1.0, 0.0], [2.0, 0.0]]))
    torch.testing.assert_close(bias[1, 1], torch.tensor([[0.0, 1.0], [0.0, 2.0]]), atol=1e-6, rtol=0)


def test_core_gradients_when_only_some_inputs_need_them():
    # The backward re-reads the samples; it must also work when the locations are constants.
    value, shapes, locations, weights = _random_inputs(seed=3)
    value.requires_grad_()
    weights.requires_grad_()
    out = ms_deform_attn_core(value, shapes, locations, weights)
    grad_out = torch.randn_like(out)
    got = torch.autograd.grad(out, (value, weights), grad_out)
    want = torch.autograd.grad(naive_ms_deform_attn(value, shapes, locations, weights), (value, weights), grad_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)
    # Nothing needs a gradient: a plain forward, no graph.
    with torch.no_grad():
        assert not ms_deform_attn_core(value, shapes, locations, weights).requires_grad
