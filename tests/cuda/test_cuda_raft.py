"""RAFT optical flow (torchvision raft_small, random weights) on CUDA, against the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seg_suite.pseudo.motion.flow import RAFTFlow, build_flow

pytestmark = pytest.mark.cuda


def frames(h: int = 100, w: int = 140) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    big = rng.integers(0, 255, (h + 8, w + 8, 3), dtype=np.uint8)
    return big[4:4 + h, 4:4 + w], big[2:2 + h, 1:1 + w]  # content moves by (+3, +2)


def test_raft_on_cuda_equals_the_cpu_flow():
    a, b = frames()
    torch.manual_seed(0)
    cpu = RAFTFlow("raft_small", random_init=True, num_flow_updates=3)
    torch.manual_seed(0)
    gpu = RAFTFlow("raft_small", device="cuda", random_init=True, num_flow_updates=3)
    assert next(gpu.model.parameters()).is_cuda
    assert all(torch.equal(p.cpu(), q) for p, q in zip(gpu.model.parameters(), cpu.model.parameters()))
    f_cpu, f_gpu = cpu(a, b), gpu(a, b)
    assert f_gpu.shape == (100, 140, 2) and f_gpu.dtype == np.float32 and np.isfinite(f_gpu).all()
    scale = max(float(np.abs(f_cpu).max()), 1e-3)
    assert float(np.abs(f_gpu - f_cpu).max()) < 1e-3 * scale + 1e-4


def test_build_flow_puts_raft_on_the_device():
    flow = build_flow("raft_small", device="cuda", random_init=True)
    assert flow.device.type == "cuda" and next(flow.model.parameters()).is_cuda
