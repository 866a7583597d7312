"""Segment Anything: loading, automatic masks, refinement, and both jobs through the shared runner.

No SAM weights exist here, so every model is a tiny random-init SAM built from
segment-anything's own blocks (ImageEncoderViT, PromptEncoder, MaskDecoder,
TwoWayTransformer) with 64-pixel inputs; the official sizes are checked on the meta device.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from seg_suite.cli import main as cli_main
from seg_suite.errors import MissingWeightsError, UserError
from seg_suite.io.masks import mask_to_bbox, mask_to_rle, rle_to_mask
from seg_suite.pseudo import sam as sam_mod
from seg_suite.pseudo import sam_refine
from seg_suite.pseudo.inputs import discover_inputs
from seg_suite.pseudo.runner import ShardSpec, merge_outputs, run_job, sidecar_path
from seg_suite.pseudo.sam import SAM_TYPES, SamArch, SamGeneratorParams, build_sam, load_sam, make_generator
from seg_suite.pseudo.sam_jobs import SamMasksJob, SamRefineJob
from seg_suite.pseudo.sam_refine import RefineParams, build_prompts, negative_points, positive_points, refine_masks

TINY = SamArch("tiny-test", encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
               encoder_global_attn_indexes=(1,), image_size=64, patch_size=8, window_size=4, prompt_embed_dim=32,
               mask_in_chans=4, decoder_depth=1, decoder_mlp_dim=64, decoder_num_heads=2, iou_head_hidden_dim=32)
# Random SAM's predicted IoUs are near 0 (measured: -0.2 .. 0.1), so generation keeps every mask.
OPEN = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)
H, W = 48, 64


class NotWeights:
    """An arbitrary object: a checkpoint holding one must be refused by weights_only loading."""


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("sam") / "tiny.pth"
    torch.save(load_sam(TINY, random_init=True, seed=3).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def tiny_model(tiny_ckpt):
    return load_sam(TINY, tiny_ckpt)


def scene(index: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """A textured background with two bright rectangles; returns the image and their masks."""
    rng = np.random.default_rng(index)
    image = rng.integers(0, 60, (H, W, 3), dtype=np.uint8)
    masks = []
    for y, x, h, w in [(4 + index % 3, 4, 16, 22), (24, 30 + index % 4, 18, 26)]:
        image[y : y + h, x : x + w] = (200, 120 + 10 * index, 40)
        m = np.zeros((H, W), bool)
        m[y : y + h, x : x + w] = True
        masks.append(m)
    return image, masks


@pytest.fixture
def scenes(tmp_path, write_image):
    """A folder of 4 scene PNGs (one in sub/) and one corrupt .png; returns (root, {key: masks})."""
    root = tmp_path / "images"
    truth = {}
    for i in range(4):
        key = f"sub/{i}.png" if i == 3 else f"{i}.png"
        image, masks = scene(i)
        write_image(root / key, image)
        truth[key] = masks
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root, truth


# ------------------------------------------------------------------- loading
def test_official_sizes_equal_segment_anything_builders():
    """build_sam(type) has exactly the parameters of sam_model_registry[type] (meta device: no memory)."""
    from segment_anything import sam_model_registry

    for sam_type in SAM_TYPES:
        with torch.device("meta"):
            ours, theirs = build_sam(sam_type).state_dict(), sam_model_registry[sam_type]().state_dict()
        assert list(ours) == list(theirs)
        assert all(ours[k].shape == theirs[k].shape for k in ours)
    assert len(theirs) > 500  # vit_h: really the full model


def test_state_dict_round_trip_is_exact(tiny_ckpt, tiny_model):
    saved = torch.load(tiny_ckpt, weights_only=True)
    loaded = tiny_model.state_dict()
    assert set(saved) == set(loaded)
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    # another seed gives other weights, so the equality above is not trivial
    other = load_sam(TINY, random_init=True, seed=4).state_dict()
    key = "image_encoder.patch_embed.proj.weight"
    assert not torch.equal(other[key], saved[key])
    # DDP-wrapped files load too
    wrapped = tiny_ckpt.with_name("ddp.pth")
    torch.save({"model": {f"module.{k}": v for k, v in saved.items()}}, wrapped)
    key = "mask_decoder.iou_token.weight"
    assert torch.equal(load_sam(TINY, wrapped).state_dict()[key], saved[key])


def test_missing_wrong_and_unsafe_checkpoints_are_clear(tiny_ckpt, tmp_path, monkeypatch):
    monkeypatch.setenv("SEG_SUITE_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MissingWeightsError, match="sam_vit_b_01ec64.pth") as err:
        sam_mod.resolve_sam_checkpoint("vit_b")
    assert "dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth" in str(err.value)
    with pytest.raises(MissingWeightsError, match="sam_vit_h_4b8939.pth"):
        load_sam("vit_h", tmp_path / "nope.pth")
    official = tmp_path / "sam_vit_l_0b3195.pth"
    official.write_bytes(b"x")
    assert sam_mod.resolve_sam_checkpoint("vit_l") == official  # found by its official name
    wider = dataclasses.replace(TINY, encoder_embed_dim=48)
    with pytest.raises(UserError, match="does not fit SAM tiny-test.*--sam-type") as err:
        load_sam(wider, tiny_ckpt)
    assert "\n" not in str(err.value)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"obj": NotWeights()}, unsafe)  # loading it would have to import this module
    with pytest.raises(UserError, match="never unpickled") as err:
        load_sam(TINY, unsafe)
    assert "weights_only" not in str(err.value)  # no advice to load it unsafely


def test_embedding_is_computed_once_per_image(tiny_model, monkeypatch):
    from segment_anything import SamPredictor

    predictor = SamPredictor(tiny_model)
    calls = []
    encoder_forward = tiny_model.image_encoder.forward
    monkeypatch.setattr(tiny_model.image_encoder, "forward", lambda x: calls.append(x.shape) or encoder_forward(x))
    image, masks = scene(0)
    refine_masks(predictor, image, masks * 3, RefineParams(), prompts_per_batch=2)  # 6 prompts in 3 batches
    assert calls == [(1, 3, 64, 64)]


# ---------------------------------------------------------------- generation
def test_generated_masks_equal_the_generator_and_are_valid_coco(tiny_model, tiny_ckpt, scenes):
    root, _ = scenes
    params = SamGeneratorParams(points_per_side=4, **OPEN)
    out = root.parent / "sam.json"
    job = SamMasksJob(params, sam_type=TINY, checkpoint=tiny_ckpt)
    summary = run_job(job, discover_inputs(root), out, progress=False)
    coco = json.loads(out.read_text())
    assert summary.num_failed == 1
    failures = [json.loads(line) for line in sidecar_path(out, "failures").read_text().splitlines()]
    assert [f["key"] for f in failures] == ["broken.png"]
    assert [im["file_name"] for im in coco["images"]] == ["0.png", "1.png", "2.png", "sub/3.png"]
    assert all((im["width"], im["height"]) == (W, H) for im in coco["images"])
    assert coco["categories"] == [{"id": 1, "name": "object"}]
    assert coco["info"]["params"]["generator"]["points_per_side"] == 4
    assert coco["info"]["params"]["sam"]["weights"]["file"] == "tiny.pth"

    generator = make_generator(tiny_model, params)  # the oracle: segment-anything's own generator
    for image_id, key in enumerate(["0.png", "1.png", "2.png", "sub/3.png"], start=1):
        anns = [a for a in coco["annotations"] if a["image_id"] == image_id]
        expected = generator.generate(scene(3 if key == "sub/3.png" else int(key[0]))[0])
        assert len(anns) == len(expected) > 0
        for ann in anns:
            mask = rle_to_mask(ann["segmentation"])
            assert mask.shape == (H, W) and ann["area"] == mask.sum() > 0
            assert ann["bbox"] == mask_to_bbox(mask)
            assert 0.0 <= ann["score"] <= 1.0 and ann["score"] == min(1.0, max(0.0, ann["predicted_iou"]))
            match = [e for e in expected if np.array_equal(e["segmentation"], mask)]
            assert len(match) == 1 and match[0]["predicted_iou"] == pytest.approx(ann["predicted_iou"], abs=1e-6)
        ious = [a["predicted_iou"] for a in anns]
        assert ious == sorted(ious, reverse=True)


class BrightComponentPredictor:
    """A hand-built stand-in for SamPredictor: a point prompt yields the bright connected component
    under it (logits +10 inside, -10 outside), with predicted IoU 0.95. Used only for cross-crop NMS,
    because a random-init SAM yields no object-like masks (measured: one mask per image at most with
    crops), so no duplicates across crops could arise; segment-anything's generator code runs as is."""

    def __init__(self, model):
        from segment_anything.utils.transforms import ResizeLongestSide

        self.model, self.device = model, torch.device("cpu")
        self.transform = ResizeLongestSide(model.image_encoder.img_size)

    def set_image(self, image):
        self.labels = ndimage.label(image.mean(axis=2) > 128)[0]

    def reset_image(self):
        self.labels = None

    def predict_torch(self, points, labels, multimask_output=True, return_logits=True):
        h, w = self.labels.shape
        new_h, new_w = self.transform.get_preprocess_shape(h, w, self.transform.target_length)
        xy = points[:, 0].numpy() * np.array([w / new_w, h / new_h])
        out = []
        for x, y in xy:
            label = self.labels[min(int(y), h - 1), min(int(x), w - 1)]
            out.append(np.where((self.labels == label) & (label > 0), 10.0, -10.0))
        masks = torch.tensor(np.stack(out), dtype=torch.float)[:, None].repeat(1, 3, 1, 1)
        return masks, torch.full(masks.shape[:2], 0.95), None


def test_cross_crop_nms_removes_duplicates(tiny_model):
    """With --crop-n-layers 1 each square is found on the whole image and again in a crop:
    --crop-nms-thresh 1.0 keeps both copies, 0.7 (the default) keeps one."""
    image = np.zeros((96, 128, 3), np.uint8)
    squares = [(10, 10), (12, 90), (60, 20), (62, 96)]  # each inside one 80x64 crop, off its edges
    for y, x in squares:
        image[y : y + 20, x : x + 20] = 255
    found = {}
    for thresh in (1.0, 0.7):
        params = SamGeneratorParams(points_per_side=8, crop_n_layers=1, crop_nms_thresh=thresh)
        generator = make_generator(tiny_model, params)
        generator.predictor = BrightComponentPredictor(tiny_model)
        found[thresh] = [tuple(mask_to_bbox(m.mask)) for m in sam_mod.generate_masks(generator, image)]
    expected = sorted((float(x), float(y), 20.0, 20.0) for y, x in squares)
    assert sorted(set(found[1.0])) == expected and len(found[1.0]) == 2 * len(squares)  # measured: 8
    assert sorted(found[0.7]) == expected


# ------------------------------------------------------------------- prompts
def test_positive_points_are_interior_and_spread():
    mask = np.zeros((40, 60), bool)
    mask[5:17, 5:20] = True  # two equal blobs: one point in each
    mask[22:34, 35:50] = True
    pts = positive_points(mask, 2)
    assert all(mask[int(y), int(x)] for x, y in pts)
    blob = ndimage.label(mask)[0]
    assert {blob[int(y), int(x)] for x, y in pts} == {1, 2}
    depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    assert depth[int(pts[0][1]), int(pts[0][0])] == depth.max()  # the first is the most interior pixel
    edge = np.zeros((30, 30), bool)
    edge[:, :8] = True  # touches the image border: no point on the border
    assert all(0 < x < 7 and 0 < y < 29 for x, y in positive_points(edge, 3))


def test_negative_points_lie_on_a_ring_just_outside():
    mask = np.zeros((120, 120), bool)
    mask[30:90, 30:90] = True  # ring at 3..6 px (0.05 and 0.1 of sqrt(area); above the 2 and 4 px minimums)
    pts = negative_points(mask, 3, inner=0.05, outer=0.10)
    dist = ndimage.distance_transform_edt(~mask)
    scale = np.sqrt(mask.sum())
    assert len(pts) == 3
    for x, y in pts:
        assert not mask[int(y), int(x)] and 0.05 * scale <= dist[int(y), int(x)] <= 0.10 * scale
    assert min(np.hypot(*(a - b)) for i, a in enumerate(pts) for b in pts[i + 1 :]) > 20  # spread out
    assert negative_points(np.ones((10, 10), bool), 2, 0.05, 0.1).shape == (0, 2)


def test_prompts_pad_missing_points_with_not_a_point_labels():
    full = np.ones((20, 20), bool)  # no room outside: no negatives
    part = np.zeros((20, 20), bool)
    part[5:12, 5:12] = True
    boxes, points, labels = build_prompts([full, part], RefineParams(num_positive=2, num_negative=2))
    assert boxes.tolist() == [[0, 0, 20, 20], [5, 5, 12, 12]]
    assert points.shape == (2, 4, 2)
    assert labels.tolist() == [[1, 1, -1, -1], [1, 1, 0, 0]]


def test_prompts_from_a_window_equal_prompts_from_the_full_image():
    """build_prompts samples around each mask's box only (and on a coarser grid for big masks);
    for masks under 128 px across the points are exactly those of the full-image functions."""
    from skimage.draw import ellipse

    rng = np.random.default_rng(0)
    params = RefineParams(num_positive=3, num_negative=3)
    masks = []
    for _ in range(25):
        m = np.zeros((120, 160), bool)
        rr, cc = ellipse(rng.integers(0, 120), rng.integers(0, 160), rng.integers(3, 50), rng.integers(3, 60),
                         shape=m.shape, rotation=rng.uniform(0, 3))
        m[rr, cc] = True
        masks.append(m)
    _, points, labels = build_prompts(masks, params)
    for m, pts, lab in zip(masks, points, labels):
        pos = positive_points(m, 3)
        neg = negative_points(m, 3, params.ring_inner, params.ring_outer, anchor=pos[0])
        assert np.array_equal(pts[lab >= 0], np.concatenate([pos, neg]))
    big = np.zeros((1200, 1600), bool)
    big[200:1000, 300:1300] = True  # 894 px across: a grid of stride 6
    _, points, labels = build_prompts([big], params)
    dist = ndimage.distance_transform_edt(~big) / np.sqrt(big.sum())
    assert labels.tolist() == [[1, 1, 1, 0, 0, 0]]
    assert all(big[int(y), int(x)] for x, y in points[0, :3])
    assert all(0.05 <= dist[int(y), int(x)] <= 0.10 for x, y in points[0, 3:])


# ---------------------------------------------------------------- refinement
def test_batched_prompts_equal_one_at_a_time_predictions(tiny_model):
    """The one batched decoder call gives, per mask, exactly what SamPredictor.predict gives alone."""
    from segment_anything import SamPredictor

    predictor = SamPredictor(tiny_model)
    image, masks = scene(2)
    predictor.set_image(image)
    boxes, points, labels = build_prompts(masks, RefineParams())
    assert (labels >= 0).all()  # no padding, so a lone prompt sees the same tokens
    batched, scores = sam_refine.predict_all_outputs(predictor, boxes, points, labels)
    assert batched.shape == (2, 4, H, W) and scores.shape == (2, 4)
    for i in range(len(masks)):
        single, s_single, _ = predictor.predict(points[i], labels[i], boxes[i], multimask_output=False)
        multi, s_multi, _ = predictor.predict(points[i], labels[i], boxes[i], multimask_output=True)
        assert np.array_equal(batched[i].numpy(), np.concatenate([single, multi]))
        assert np.allclose(scores[i].numpy(), np.concatenate([s_single, s_multi]), atol=1e-5)


def test_keep_rule_with_the_real_model(tiny_model):
    """Each result is SAM's best-matching candidate when its IoU >= threshold, else the coarse mask."""
    from segment_anything import SamPredictor

    predictor = SamPredictor(tiny_model)
    image, masks = scene(0)
    predictor.set_image(image)
    boxes, points, labels = build_prompts(masks, RefineParams())
    candidates = sam_refine.predict_all_outputs(predictor, boxes, points, labels)[0].numpy()
    best_iou = [max(np.logical_and(c, m).sum() / np.logical_or(c, m).sum() for c in cands)
                for cands, m in zip(candidates, masks)]
    always = refine_masks(predictor, image, masks, RefineParams(iou_thresh=0.0))
    never = refine_masks(predictor, image, masks, RefineParams(iou_thresh=1.0))
    middle = refine_masks(predictor, image, masks, RefineParams(iou_thresh=float(np.mean(best_iou))))
    for i, mask in enumerate(masks):
        assert always[i].refined_by == "sam" and always[i].refine_iou == pytest.approx(best_iou[i])
        assert any(np.array_equal(always[i].mask, c) for c in candidates[i])
        assert never[i].refined_by == "coarse" and np.array_equal(never[i].mask, mask)
    assert min(best_iou) < max(best_iou)  # so the middle threshold splits them
    assert [r.refined_by for r in middle] == ["sam" if b >= np.mean(best_iou) else "coarse" for b in best_iou]


def test_keep_rule_takes_sam_when_it_agrees_and_coarse_when_not(monkeypatch, tiny_model):
    """A random SAM cannot be made to agree with a mask on purpose, so SAM's outputs are replaced
    by hand-built candidates here (the only stub in this file): per mask, one close to it (IoU 0.8)
    and one far (IoU 0.2 / 0.1)."""
    from segment_anything import SamPredictor

    image, _ = scene(0)
    coarse = np.zeros((H, W), bool)
    coarse[10:30, 10:30] = True  # 400 px
    close, far, far2 = (np.zeros((H, W), bool) for _ in range(3))
    close[10:30, 10:26] = True  # IoU 320/400 = 0.8
    far[10:14, 10:30] = True  # IoU 80/400 = 0.2
    far2[10:12, 10:30] = True  # IoU 40/400 = 0.1

    def stub(predictor, boxes, points, labels):
        assert len(boxes) == 2  # both masks in one call
        cands = torch.tensor(np.stack([[far, close, far, far], [far, far2, far2, far2]]))
        return cands, torch.tensor([[0.1, 0.9, 0.3, 0.2], [0.5, 0.4, 0.3, 0.2]])

    monkeypatch.setattr(sam_refine, "predict_all_outputs", stub)
    agree, disagree = refine_masks(SamPredictor(tiny_model), image, [coarse, coarse], RefineParams())
    assert agree.refined_by == "sam" and np.array_equal(agree.mask, close)
    assert agree.refine_iou == pytest.approx(0.8) and agree.sam_score == pytest.approx(0.9)
    assert disagree.refined_by == "coarse" and np.array_equal(disagree.mask, coarse)
    assert disagree.refine_iou == pytest.approx(0.2) and disagree.sam_score == pytest.approx(0.5)


def write_coarse_file(root, truth, path, swap_sizes=False):
    """A MaskCut-like input: RLE masks, one polygon, an empty mask, ids that do not start at 1."""
    images, anns = [], []
    for n, key in enumerate(sorted(truth)):
        w, h = (H, W) if swap_sizes else (W, H)
        images.append({"id": 100 + n, "file_name": key, "width": w, "height": h, "extra": n})
        for m in truth[key]:
            anns.append({"id": 500 + len(anns), "image_id": 100 + n, "category_id": 1, "iscrowd": 0,
                         "segmentation": mask_to_rle(m), "area": int(m.sum()), "bbox": mask_to_bbox(m), "score": 0.5})
    anns[0]["segmentation"] = [[4.0, 4.0, 26.0, 4.0, 26.0, 20.0, 4.0, 20.0]]  # polygons are accepted
    anns.append({"id": 999, "image_id": 100, "category_id": 1, "segmentation": mask_to_rle(np.zeros((H, W), bool))})
    images.append({"id": 7, "file_name": "broken.png", "width": W, "height": H})
    coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "fg"}]}
    path.write_text(json.dumps(coco))
    return coco


def refine_job(inp, ckpt, **kw):
    return SamRefineJob(inp, RefineParams(), sam_type=TINY, checkpoint=ckpt, **kw)


def test_refine_job_output_keeps_ids_fields_and_records_the_choice(scenes, tiny_ckpt):
    root, truth = scenes
    inp = root.parent / "coarse.json"
    coco = write_coarse_file(root, truth, inp, swap_sizes=True)
    out = root.parent / "refined.json"
    job = refine_job(inp, tiny_ckpt)
    summary = run_job(job, job.items(root), out, progress=False)
    result = json.loads(out.read_text())
    assert summary.num_failed == 1
    assert [json.loads(x)["key"] for x in sidecar_path(out, "failures").read_text().splitlines()] == ["broken.png"]
    assert result["categories"] == [{"id": 1, "name": "fg"}]
    assert [im["id"] for im in result["images"]] == [100, 101, 102, 103]
    assert all((im["width"], im["height"]) == (W, H) for im in result["images"])  # swapped sizes corrected
    assert [im["extra"] for im in result["images"]] == [0, 1, 2, 3]
    by_id = {a["id"]: a for a in coco["annotations"]}
    assert sorted(a["id"] for a in result["annotations"]) == sorted(i for i, a in by_id.items() if a["image_id"] != 7)
    kinds = {"sam": 0, "coarse": 0}
    for ann in result["annotations"]:
        mask = rle_to_mask(ann["segmentation"])
        assert mask.shape == (H, W) and ann["area"] == mask.sum() and ann["bbox"] == mask_to_bbox(mask)
        assert ann.get("score") == by_id[ann["id"]].get("score") and ann["image_id"] == by_id[ann["id"]]["image_id"]
        kinds[ann["refined_by"]] += 1
        coarse = rle_to_mask(by_id[ann["id"]]["segmentation"], H, W)
        if ann["id"] == 999:
            assert ann["refined_by"] == "coarse" and ann["refine_iou"] is None and not mask.any()
        elif ann["refined_by"] == "coarse":
            assert np.array_equal(mask, coarse) and ann["refine_iou"] < 0.5
        else:
            iou = np.logical_and(mask, coarse).sum() / np.logical_or(mask, coarse).sum()
            assert ann["refine_iou"] == pytest.approx(iou) and iou >= 0.5
    assert result["info"]["refined"] == kinds
    assert result["info"]["params"]["input"]["file"] == "coarse.json"


def test_refine_interrupted_then_resumed_and_sharded_equal_one_run(scenes, tiny_ckpt, monkeypatch):
    root, truth = scenes
    inp = root.parent / "coarse.json"
    write_coarse_file(root, truth, inp)
    ref = root.parent / "ref.json"
    job = refine_job(inp, tiny_ckpt)
    run_job(job, job.items(root), ref, progress=False)

    out = root.parent / "out.json"
    real_process = SamRefineJob.process
    done = []

    def stop_after_two(self, batch):  # Ctrl-C in the middle of the run
        if len(done) == 2:
            raise KeyboardInterrupt
        done.append(batch)
        return real_process(self, batch)

    monkeypatch.setattr(SamRefineJob, "process", stop_after_two)
    job = refine_job(inp, tiny_ckpt)
    with pytest.raises(KeyboardInterrupt):
        run_job(job, job.items(root), out, progress=False)
    monkeypatch.setattr(SamRefineJob, "process", real_process)
    assert not out.exists() and sidecar_path(out, "journal").exists()
    summary = run_job(refine_job(inp, tiny_ckpt), job.items(root), out, resume=True, progress=False)
    assert summary.num_processed == 3  # 0.png and 1.png were journaled before the interrupt
    assert out.read_bytes() == ref.read_bytes()
    assert sidecar_path(out, "failures").read_bytes() == sidecar_path(ref, "failures").read_bytes()

    shards = []
    for sid in range(2):
        job = refine_job(inp, tiny_ckpt)
        shards.append(run_job(job, job.items(root), root.parent / "sh.json", shard=ShardSpec(2, sid),
                              batch_size=2, progress=False).output)
    merge_outputs(shards, root.parent / "merged.json")
    assert (root.parent / "merged.json").read_bytes() == ref.read_bytes()


def test_refine_bad_inputs_are_one_line_errors(scenes, tiny_ckpt, tmp_path):
    root, truth = scenes
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "0.png"}],
                               "annotations": [{"image_id": 2, "segmentation": []}]}))
    with pytest.raises(UserError, match=r"annotations\[0\]"):
        refine_job(bad, tiny_ckpt)
    bad.write_text("{not json")
    with pytest.raises(UserError, match="cannot read"):
        refine_job(bad, tiny_ckpt)
    # a mask whose size is not the image's fails that image only, with the reason
    inp = tmp_path / "coarse.json"
    coco = write_coarse_file(root, truth, inp)
    coco["annotations"][2]["segmentation"] = mask_to_rle(np.ones((10, 10), bool))
    inp.write_text(json.dumps(coco))
    job = refine_job(inp, tiny_ckpt)
    out = tmp_path / "out.json"
    summary = run_job(job, job.items(root), out, progress=False)
    failures = [json.loads(x) for x in sidecar_path(out, "failures").read_text().splitlines()]
    reasons = {f["key"]: f["reason"] for f in failures}
    bad_key = next(im["file_name"] for im in coco["images"] if im["id"] == coco["annotations"][2]["image_id"])
    assert summary.num_failed == 2 and "10x10 but the image is 64x48" in reasons[bad_key]


def test_refine_keeps_to_its_image_root_and_fails_bad_masks_alone(scenes, tiny_ckpt, tmp_path, write_image):
    root, truth = scenes
    secret = write_image(tmp_path / "secret.png", np.full((H, W, 3), 255, np.uint8))
    inp = tmp_path / "coarse.json"
    coco = write_coarse_file(root, truth, inp)
    first = coco["images"][0]
    climbs = "climbs out of its root folder"
    escapes = {"../secret.png": climbs, "sub/../../secret.png": climbs, str(secret): "is absolute"}
    for n, name in enumerate(escapes):
        coco["images"].append(dict(first, id=200 + n, file_name=name))
        coco["annotations"].append({"id": 800 + n, "image_id": 200 + n, "category_id": 1,
                                    "segmentation": mask_to_rle(truth[first["file_name"]][1])})
    coco["annotations"][1]["segmentation"] = {"size": [H, W], "counts": [5, 10]}  # 15 pixels of 48x64: corrupt
    inp.write_text(json.dumps(coco))
    job = refine_job(inp, tiny_ckpt)
    out = tmp_path / "out.json"
    summary = run_job(job, job.items(root), out, progress=False)
    reasons = {f["key"]: f["reason"] for f in map(json.loads, sidecar_path(out, "failures").read_text().splitlines())}
    assert summary.num_failed == 5 and sorted(reasons) == sorted([*escapes, "broken.png", first["file_name"]])
    for name, fragment in escapes.items():  # refused by name: the secret was never opened
        assert fragment in reasons[name], reasons[name]
    assert "RLE runs cover 15 pixels, not the 48x64 = 3072" in reasons[first["file_name"]]
    result = json.loads(out.read_text())
    assert [im["id"] for im in result["images"]] == [101, 102, 103]
    assert not any(a["id"] >= 800 for a in result["annotations"])


# The refine command with the tiny model registered as vit_b, for runs in a separate process.
TINY_REFINE = ("import json, sys\n"
               "from seg_suite.pseudo import sam\n"
               "sam.SAM_ARCHS['vit_b'] = sam.SamArch.from_dict(json.loads(sys.argv[1]))\n"
               "from seg_suite.cli import main\n"
               "sys.exit(main(sys.argv[2:]))\n")


@pytest.mark.slow
def test_refine_fails_the_image_of_a_huge_rle_without_allocating_it(scenes, tmp_path):
    import sys

    from huge_masks import HUGE, MAX_RSS_KB, huge_rle, run_measured

    root, truth = scenes
    inp = tmp_path / "coarse.json"
    coco = write_coarse_file(root, truth, inp)
    coco["annotations"][2]["segmentation"] = huge_rle()
    inp.write_text(json.dumps(coco))
    key = next(im["file_name"] for im in coco["images"] if im["id"] == coco["annotations"][2]["image_id"])
    arch = json.dumps(dataclasses.replace(TINY, name="vit_b").to_dict())
    out = tmp_path / "refined.json"
    res = run_measured([sys.executable, "-c", TINY_REFINE, arch, "refine", "--input", str(inp), "--images",
                        str(root), "--output", str(out), "--random-init", "--workers", "0", "--no-progress"], tmp_path)
    assert res["rc"] == 0, res["err"]
    assert res["maxrss_kb"] < MAX_RSS_KB
    reasons = {f["key"]: f["reason"] for f in map(json.loads, sidecar_path(out, "failures").read_text().splitlines())}
    assert sorted(reasons) == sorted(["broken.png", key])
    assert f"mask is {HUGE}x{HUGE} but the image is {W}x{H}" in reasons[key]
    assert len(json.loads(out.read_text())["images"]) == 3


# ------------------------------------------------------------------------ CLI
@pytest.fixture
def tiny_as_vit_b(monkeypatch, tiny_ckpt, tmp_path):
    """`--sam-type vit_b` builds the tiny model, and its checkpoint sits under the official name."""
    monkeypatch.setitem(sam_mod.SAM_ARCHS, "vit_b", dataclasses.replace(TINY, name="vit_b",
                                                                       checkpoint_file="sam_vit_b_01ec64.pth"))
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "sam_vit_b_01ec64.pth").write_bytes(tiny_ckpt.read_bytes())
    monkeypatch.setenv("SEG_SUITE_WEIGHTS", str(weights))


def test_cli_sam_masks_then_refine(scenes, tiny_as_vit_b, capsys):
    root, _ = scenes
    masks = root.parent / "sam.json"
    assert cli_main(["sam-masks", "--input", str(root), "--output", str(masks), "--points-per-side", "4",
                     "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--workers", "0", "--no-progress"]) == 0
    assert "4 of 5 items done, 1 failed" in capsys.readouterr().err
    generated = json.loads(masks.read_text())
    assert generated["info"]["params"]["sam"]["type"] == "vit_b" and generated["annotations"]
    refined = root.parent / "refined.json"
    assert cli_main(["refine", "--input", str(masks), "--images", str(root), "--output", str(refined),
                     "--iou-thresh", "0", "--workers", "0", "--no-progress"]) == 0
    result = json.loads(refined.read_text())
    assert [a["id"] for a in result["annotations"]] == [a["id"] for a in generated["annotations"]]
    assert {a["refined_by"] for a in result["annotations"]} == {"sam"}  # threshold 0 always takes SAM's
    assert result["info"]["params"]["refine"]["iou_thresh"] == 0.0


def test_cli_errors_are_one_line(scenes, tmp_path, monkeypatch, capsys):
    root, _ = scenes
    monkeypatch.setenv("SEG_SUITE_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cli_main(["sam-masks", "--input", str(root), "--output", str(tmp_path / "o.json"),
                     "--sam-type", "vit_l"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "sam_vit_l_0b3195.pth" in err
    assert cli_main(["sam-masks", "--input", str(root), "--output", str(tmp_path / "o.json"), "--random-init",
                     "--pred-iou-thresh", "1.5"]) == 2
    assert "pred-iou-thresh must be in [0, 1]" in capsys.readouterr().err
    assert cli_main(["refine", "--input", str(tmp_path / "none.json"), "--images", str(root),
                     "--output", str(tmp_path / "r.json"), "--random-init"]) == 2
    assert "input file not found" in capsys.readouterr().err


def test_help_names_defaults_and_sources(capsys):
    for command, expected in [("sam-masks", ("default: 32", "default: 0.88", "default: 0.95", "default: 0.7",
                                             "automatic_mask_generator.py", "sam_vit_b_01ec64.pth", "--resume")),
                              ("refine", ("default: 0.5", "seg_suite's rule", "default: 2", "refined_by", "--resume"))]:
        with pytest.raises(SystemExit):
            cli_main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for phrase in expected:
            assert phrase in text, (command, phrase)
