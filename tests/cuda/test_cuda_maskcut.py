"""Feature extraction and MaskCut on CUDA (batched LOBPCG), against the CPU path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seg_suite.features.factory import build_extractor
from seg_suite.pseudo import ncut
from seg_suite.pseudo.maskcut import MaskCutParams, extract_features, maskcut_batch
from seg_suite.pseudo.maskcut_job import MaskCutJob
from seg_suite.pseudo.runner import run_job
from seg_suite.pseudo.inputs import discover_inputs

pytestmark = pytest.mark.cuda


def objects_image(index: int, size: int = 128) -> np.ndarray:
    """Dark noise with two bright rectangles whose place depends on ``index``."""
    rng = np.random.default_rng(index)
    image = rng.integers(0, 50, (size, size, 3), dtype=np.uint8)
    image[10 + 4 * index:60 + 4 * index, 12:70] = (220, 90, 40)
    image[80:120, 70 + 3 * index:118] = (40, 200, 230)
    return image


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_vit_features_on_cuda_equal_the_cpu_features():
    cpu = build_extractor("dino_vits8", device="cpu", random_init=True, depth=4)
    gpu = build_extractor("dino_vits8", device="cuda", random_init=True, depth=4)
    images = [objects_image(i, 224) for i in range(2)]
    for facet in ("k", "token"):
        a = extract_features(images, cpu, facet)
        b = extract_features(images, gpu, facet)
        assert b.is_cuda and b.shape == a.shape == (2, 28, 28, a.shape[-1])
        cos = torch.nn.functional.cosine_similarity(a.flatten(0, 2), b.cpu().flatten(0, 2), dim=-1)
        assert cos.min() > 0.9999


def test_batched_lobpcg_on_cuda_matches_the_dense_solver():
    g = torch.Generator().manual_seed(0)
    # Two groups of patches (60 and 40) around two directions: a well-separated second eigenvector.
    centres = torch.randn(4, 2, 16, generator=g)
    groups = torch.cat([torch.zeros(60, dtype=torch.long), torch.ones(40, dtype=torch.long)])
    feats = centres[:, groups] + 0.6 * torch.randn(4, 100, 16, generator=g)
    A = torch.stack([ncut.binarized_affinity(f, 0.2) for f in feats]).double()
    vecs, lams = ncut.second_eigenvector(A.cuda().float(), solver="auto")  # auto on CUDA = lobpcg
    ref, ref_lams = ncut.second_eigenvector(A.numpy(), solver="dense")
    for v, r in zip(vecs, ref):
        cos = abs(v @ r) / (np.linalg.norm(v) * np.linalg.norm(r))
        assert cos > 0.999
    np.testing.assert_allclose(lams, ref_lams, rtol=1e-3, atol=1e-4)


def test_maskcut_on_cuda_finds_the_cpu_masks_and_batches_like_single_images():
    params = MaskCutParams(fixed_size=128, crf=False)
    images = [objects_image(i) for i in range(3)]
    cpu = maskcut_batch(images, build_extractor("handcrafted", device="cpu"), params)
    gpu_ext = build_extractor("handcrafted", device="cuda")
    batched = maskcut_batch(images, gpu_ext, params)
    single = [maskcut_batch([im], gpu_ext, params)[0] for im in images]
    for c, b, s in zip(cpu, batched, single):
        assert len(b) == len(c) == len(s) > 0
        for mc, mb, ms in zip(c, b, s):
            assert mb.mask.shape == mc.mask.shape == (128, 128)
            assert _iou(mb.mask, mc.mask) > 0.95  # eigsh on CPU, LOBPCG on CUDA
            assert _iou(mb.mask, ms.mask) > 0.95
            assert mb.score == pytest.approx(mc.score, abs=0.02)


def test_maskcut_job_on_cuda_writes_the_cpu_file(tmp_path, write_image):
    for i in range(3):
        write_image(tmp_path / "images" / f"{i}.png", objects_image(i))
    items = discover_inputs(tmp_path / "images")
    params = MaskCutParams(fixed_size=128, crf=False)
    outputs = {}
    for device in ("cpu", "cuda"):
        job = MaskCutJob(params, backbone="handcrafted", device=device).load()
        run_job(job, items, tmp_path / f"{device}.json", batch_size=3, progress=False)
        outputs[device] = (tmp_path / f"{device}.json").read_text()
    import json

    cpu, gpu = (json.loads(outputs[d]) for d in ("cpu", "cuda"))
    assert cpu["info"] == gpu["info"]  # the device is an execution setting, not a parameter
    assert [a["image_id"] for a in gpu["annotations"]] == [a["image_id"] for a in cpu["annotations"]]
