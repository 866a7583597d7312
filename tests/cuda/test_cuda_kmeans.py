"""k-means on CUDA (the torch backend of MaskClusterer), against the same fit on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

from seg_suite.pseudo.kmeans import MaskClusterer

pytestmark = pytest.mark.cuda


def blobs(n_per: int = 800, k: int = 6, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``k`` well-separated Gaussian blobs; returns the rows and their true blob index."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 10
    truth = np.repeat(np.arange(k), n_per)
    return (centres[truth] + rng.normal(size=(len(truth), dim))).astype(np.float32), truth


def test_kmeans_on_cuda_equals_the_cpu_fit(tmp_path):
    x, truth = blobs()
    path = tmp_path / "features.npy"
    np.save(path, x)
    mm = np.load(path, mmap_mode="r")  # memory-mapped, as `seg-suite cluster` reads its features
    cpu = MaskClusterer(6, random_state=0, batch_size=512, device="cpu").fit(x)
    gpu = MaskClusterer(6, random_state=0, batch_size=512, device="cuda").fit(mm)
    assert gpu.cluster_centers_.shape == (6, 32) and gpu.cluster_centers_.dtype == np.float32
    # Same seed, so the same k-means++ rows and mini-batches: the centres agree up to float rounding
    # (and a stop one batch apart, were two smoothed inertias within rounding of each other).
    np.testing.assert_allclose(gpu.cluster_centers_, cpu.cluster_centers_, atol=0.05)
    labels = gpu.predict(mm, chunk=1000)
    np.testing.assert_array_equal(labels, cpu.predict(x))
    # every blob is one cluster
    assert all(len(np.unique(labels[truth == b])) == 1 for b in range(6))
    assert len(np.unique(labels)) == 6
