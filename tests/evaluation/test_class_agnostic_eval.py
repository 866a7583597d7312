"""Class-agnostic COCO AP against hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from seg_suite.cli import main
from seg_suite.errors import UserError
from seg_suite.evaluation.class_agnostic import evaluate_class_agnostic, match_images_by_file_name
from seg_suite.io.masks import mask_to_bbox, mask_to_rle

H, W = 40, 60


def _box(y0, y1, x0, x1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def _ann(i, image_id, mask, cat=1, score=None):
    a = {"id": i, "image_id": image_id, "category_id": cat, "segmentation": mask_to_rle(mask),
         "area": int(mask.sum()), "bbox": mask_to_bbox(mask), "iscrowd": 0}
    if score is not None:
        a["score"] = score
    return a


A, B = _box(2, 12, 2, 12), _box(20, 35, 30, 50)  # 100 px and 300 px, disjoint
GT = {
    "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
    "annotations": [_ann(1, 1, A, cat=2), _ann(2, 1, B, cat=3)],  # two categories: collapsed
    "categories": [{"id": 2, "name": "x"}, {"id": 3, "name": "y"}],
}


def _pred(masks_scores, image_id=7, file_name="a.png"):
    return {"images": [{"id": image_id, "file_name": file_name, "height": H, "width": W}],
            "annotations": [_ann(i + 1, image_id, m, score=s) for i, (m, s) in enumerate(masks_scores)],
            "categories": [{"id": 1, "name": "object"}]}


def test_ground_truth_as_prediction_scores_100():
    res = evaluate_class_agnostic(_pred([(A, 1.0), (B, 1.0)]), GT)
    assert res["AP"] == pytest.approx(100) and res["AP50"] == pytest.approx(100)
    assert res["AR100"] == pytest.approx(100) and res["num_matched"] == 1


def test_empty_prediction_scores_0():
    res = evaluate_class_agnostic(_pred([]), GT)
    assert res["AP"] == 0 and res["AP50"] == 0 and res["AR100"] == 0


def test_half_wrong_prediction_hand_computed():
    wrong = _box(25, 35, 2, 12)  # overlaps nothing
    # right one ranked first: precision 1 up to recall 0.5, nothing beyond; COCO samples recall at
    # 101 points 0, 0.01, ..., 1, so AP = 51/101 at every IoU threshold
    res = evaluate_class_agnostic(_pred([(A, 0.9), (wrong, 0.8)]), GT)
    assert res["AP"] == pytest.approx(100 * 51 / 101) and res["AP50"] == pytest.approx(100 * 51 / 101)
    assert res["AR100"] == pytest.approx(50)
    # wrong one ranked first: precision 0.5 at recall 0.5 (interpolated back to recall 0)
    res = evaluate_class_agnostic(_pred([(A, 0.8), (wrong, 0.9)]), GT)
    assert res["AP"] == pytest.approx(100 * 0.5 * 51 / 101)


def test_partial_overlap_counts_at_low_thresholds_only():
    inner = _box(2, 11, 2, 10)  # 72 px inside A (100 px): IoU 0.72
    gt = dict(GT, annotations=GT["annotations"][:1])
    res = evaluate_class_agnostic(_pred([(inner, 1.0)]), gt)
    # a true positive at IoU thresholds 0.50, 0.55, 0.60, 0.65, 0.70; a miss at 0.75..0.95
    assert res["AP50"] == pytest.approx(100) and res["AP75"] == pytest.approx(0)
    assert res["AP"] == pytest.approx(50)


def test_images_matched_by_file_name_not_id():
    gt = {"images": [{"id": 1, "file_name": "a.png", "height": H, "width": W},
                     {"id": 2, "file_name": "b.png", "height": H, "width": W}],
          "annotations": [_ann(1, 1, A), _ann(2, 2, B)], "categories": [{"id": 1, "name": "o"}]}
    # the prediction file numbers b.png as 1 and stores a sub-folder path
    pred = _pred([(B, 1.0)], image_id=1, file_name="val/b.png")
    res = evaluate_class_agnostic(pred, gt)
    # b.png found, a.png missed: precision 1 up to recall 0.5
    assert res["AP"] == pytest.approx(100 * 51 / 101) and res["num_matched"] == 1 and res["num_images"] == 2
    assert match_images_by_file_name(pred["images"], gt["images"]) == {1: 2}


def test_result_list_uses_gt_ids_and_default_score():
    preds = [{"image_id": 1, "segmentation": mask_to_rle(A), "score": 0.5},
             {"image_id": 1, "segmentation": mask_to_rle(B)}]  # no score: counted as 1
    res = evaluate_class_agnostic(preds, GT)
    assert res["AP"] == pytest.approx(100)


def test_no_match_and_swapped_sizes_are_clear_errors():
    with pytest.raises(UserError, match="file_name"):
        evaluate_class_agnostic(_pred([(A, 1.0)], file_name="other.png"), GT)
    swapped = {"images": [{"id": 1, "file_name": "a.png", "height": W, "width": H}],
               "annotations": [_ann(1, 1, np.zeros((W, H), bool) | True, score=1.0)]}
    with pytest.raises(UserError, match="swapped"):
        evaluate_class_agnostic(swapped, GT)


def test_no_ground_truth_objects_gives_nan():
    gt = dict(GT, annotations=[])
    assert math.isnan(evaluate_class_agnostic(_pred([(A, 1.0)]), gt)["AP"])


def test_cli_prints_table_and_writes_json(tmp_path, capsys):
    (tmp_path / "gt.json").write_text(json.dumps(GT))
    (tmp_path / "p.json").write_text(json.dumps(_pred([(A, 0.9), (_box(25, 35, 2, 12), 0.8)])))
    out = tmp_path / "m.json"
    rc = main(["evaluate-masks", "--pred", str(tmp_path / "p.json"), "--gt", str(tmp_path / "gt.json"),
               "--output", str(out)])
    assert rc == 0
    assert "AP50" in capsys.readouterr().out
    assert json.loads(out.read_text())["AP"] == pytest.approx(100 * 51 / 101)
    assert main(["evaluate-masks", "--pred", str(tmp_path / "missing.json"), "--gt", str(out)]) == 2


def test_cli_images_root_relativises_absolute_names(tmp_path, capsys):
    gt = {"images": [{"id": 1, "file_name": "a.png", "height": H, "width": W},
                     {"id": 2, "file_name": "sub/a.png", "height": H, "width": W}],
          "annotations": [_ann(1, 1, A), _ann(2, 2, B)], "categories": [{"id": 1, "name": "o"}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    # an absolute name ending in both "a.png" and "sub/a.png": ambiguous without the root
    pred = _pred([(B, 1.0)], file_name=str(tmp_path / "imgs" / "sub" / "a.png"))
    (tmp_path / "p.json").write_text(json.dumps(pred))
    out = tmp_path / "m.json"
    args = ["evaluate-masks", "--pred", str(tmp_path / "p.json"), "--gt", str(tmp_path / "gt.json"),
            "--output", str(out)]
    assert main(args) == 2 and "file_name" in capsys.readouterr().err
    assert main(args + ["--images", str(tmp_path / "imgs")]) == 0
    assert json.loads(out.read_text())["AP"] == pytest.approx(100 * 51 / 101)  # 1 of 2 objects found
