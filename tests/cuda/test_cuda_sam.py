"""Segment Anything generation and refinement on CUDA (a tiny random-init SAM), against the CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from seg_suite.io.masks import mask_to_rle
from seg_suite.pseudo.inputs import discover_inputs
from seg_suite.pseudo.runner import run_job
from seg_suite.pseudo.sam import SamArch, SamGeneratorParams, generate_masks, load_sam, make_generator
from seg_suite.pseudo.sam_jobs import SamMasksJob, SamRefineJob
from seg_suite.pseudo.sam_refine import RefineParams, refine_masks

pytestmark = pytest.mark.cuda

# segment-anything's own blocks at toy sizes (64-pixel input), as tests/pseudo/test_sam.py builds them.
TINY = SamArch("tiny-cuda", encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
               encoder_global_attn_indexes=(1,), image_size=64, patch_size=8, window_size=4, prompt_embed_dim=32,
               mask_in_chans=4, decoder_depth=1, decoder_mlp_dim=64, decoder_num_heads=2, iou_head_hidden_dim=32)
OPEN = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)  # random SAM's IoUs are near 0: keep every mask


def scene(index: int, h: int = 48, w: int = 64) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(index)
    image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    masks = []
    for y, x, mh, mw in [(4 + index, 4, 16, 22), (24, 30 + index, 18, 26)]:
        image[y:y + mh, x:x + mw] = (200, 120 + 10 * index, 40)
        m = np.zeros((h, w), bool)
        m[y:y + mh, x:x + mw] = True
        masks.append(m)
    return image, masks


def _models():
    return load_sam(TINY, random_init=True, seed=3), load_sam(TINY, device="cuda", random_init=True, seed=3)


def _iou(a, b) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_image_embedding_on_cuda_equals_the_cpu():
    from segment_anything import SamPredictor

    cpu, gpu = _models()
    image, _ = scene(0)
    embeddings = []
    for model in (cpu, gpu):
        predictor = SamPredictor(model)
        predictor.set_image(image, image_format="RGB")
        embeddings.append(predictor.get_image_embedding().cpu())
    torch.testing.assert_close(embeddings[1], embeddings[0], rtol=1e-4, atol=1e-4)


def test_generation_on_cuda_finds_the_cpu_masks():
    cpu, gpu = _models()
    params = SamGeneratorParams(points_per_side=4, **OPEN)
    for index in range(2):
        image, _ = scene(index)
        on_cpu = generate_masks(make_generator(cpu, params), image)
        on_gpu = generate_masks(make_generator(gpu, params), image)
        assert len(on_gpu) == len(on_cpu) > 0
        for g in on_gpu:
            assert g.mask.shape == image.shape[:2]
            assert max(_iou(g.mask, c.mask) for c in on_cpu) > 0.95


def test_refinement_on_cuda_equals_the_cpu():
    from segment_anything import SamPredictor

    cpu, gpu = _models()
    image, masks = scene(1)
    results = [refine_masks(SamPredictor(m), image, masks, RefineParams(iou_thresh=0.0)) for m in (cpu, gpu)]
    for c, g in zip(*results):
        assert g.mask.shape == image.shape[:2] and g.refined_by == c.refined_by == "sam"
        assert _iou(g.mask, c.mask) > 0.95
        assert g.refine_iou == pytest.approx(c.refine_iou, abs=0.02)
        assert g.sam_score == pytest.approx(c.sam_score, abs=1e-3)


def test_sam_jobs_run_on_cuda(tmp_path, write_image):
    ckpt = tmp_path / "tiny.pth"
    torch.save(load_sam(TINY, random_init=True, seed=3).state_dict(), ckpt)
    coarse = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "object"}]}
    for i in range(2):
        image, masks = scene(i)
        write_image(tmp_path / "images" / f"{i}.png", image)
        coarse["images"].append({"id": i + 1, "file_name": f"{i}.png", "height": 48, "width": 64})
        for m in masks:
            coarse["annotations"].append({"id": len(coarse["annotations"]) + 1, "image_id": i + 1, "category_id": 1,
                                          "segmentation": mask_to_rle(m), "area": int(m.sum()), "iscrowd": 0,
                                          "bbox": [0, 0, 1, 1], "score": 1.0})
    (tmp_path / "coarse.json").write_text(json.dumps(coarse))
    items = discover_inputs(tmp_path / "images")
    masks_job = SamMasksJob(SamGeneratorParams(points_per_side=4, **OPEN), sam_type=TINY, checkpoint=ckpt,
                            device="cuda")
    summary = run_job(masks_job, items, tmp_path / "sam.json", progress=False)
    assert summary.num_failed == 0
    assert len(json.loads((tmp_path / "sam.json").read_text())["annotations"]) > 0
    refine_job = SamRefineJob(tmp_path / "coarse.json", RefineParams(), sam_type=TINY, checkpoint=ckpt,
                              device="cuda")
    summary = run_job(refine_job, refine_job.items(tmp_path / "images"), tmp_path / "refined.json", progress=False)
    assert summary.num_failed == 0
    assert len(json.loads((tmp_path / "refined.json").read_text())["annotations"]) == 4
