"""Semantic segmentation metrics on a hand-made case; expected numbers derived in the comments."""

import math

import numpy as np
import pytest

from seg_suite.evaluation.sem_seg import confusion_matrix, sem_seg_metrics

# 3 classes. 2x5 ground truth with one ignored pixel (255):
#   gt   = [[0, 0, 0, 1, 1],      pred = [[0, 0, 1, 1, 1],
#           [0, 1, 1, 255, 2]]            [0, 1, 0, 2, 0]]
GT = np.array([[0, 0, 0, 1, 1], [0, 1, 1, 255, 2]])
PRED = np.array([[0, 0, 1, 1, 1], [0, 1, 0, 2, 0]])


def test_confusion_matrix_counts_labelled_pixels_only():
    conf = confusion_matrix(PRED, GT, 3)
    # Pixel by pixel (gt -> pred): class 0: 0,0,1,0 ; class 1: 1,1,1,0 ; class 2: 0.
    # The ignored pixel (predicted 2) is not counted.
    expected = np.array([[3, 1, 0], [1, 3, 0], [1, 0, 0]])
    assert np.array_equal(conf, expected)


def test_metrics_by_hand():
    res = sem_seg_metrics(confusion_matrix(PRED, GT, 3), ["a", "b", "c"])
    # tp = [3, 3, 0]; gt counts = [4, 4, 1]; pred counts = [5, 4, 0]; 9 labelled pixels.
    # IoU: a = 3 / (4 + 5 - 3) = 1/2; b = 3 / (4 + 4 - 3) = 3/5; c = 0 / (1 + 0 - 0) = 0.
    assert res["IoU-a"] == pytest.approx(50.0)
    assert res["IoU-b"] == pytest.approx(60.0)
    assert res["IoU-c"] == pytest.approx(0.0)
    # mIoU = (0.5 + 0.6 + 0) / 3 = 0.3666...
    assert res["mIoU"] == pytest.approx(100 * 1.1 / 3)
    # fwIoU = 4/9 * 0.5 + 4/9 * 0.6 + 1/9 * 0 = 4.4 / 9
    assert res["fwIoU"] == pytest.approx(100 * 4.4 / 9)
    # ACC: a = 3/4, b = 3/4, c = 0 -> mACC = 0.5; pACC = 6/9.
    assert res["mACC"] == pytest.approx(50.0)
    assert res["pACC"] == pytest.approx(100 * 6 / 9)


def test_class_predicted_but_absent_counts_as_zero_iou():
    # gt all class 0 (4 px); prediction puts one pixel on class 1, which is never in the gt.
    gt = np.zeros((2, 2), int)
    pred = np.array([[0, 0], [0, 1]])
    res = sem_seg_metrics(confusion_matrix(pred, gt, 3))
    # IoU_0 = 3 / (4 + 3 - 3) = 3/4. Class 1 is "seen" (predicted) but absent: it adds 0 to the
    # sum and 1 to the count (detectron2 0.6 rule), class 2 is neither -> mIoU = 0.75 / 2.
    assert res["mIoU"] == pytest.approx(37.5)
    assert math.isnan(res["IoU-1"]) and math.isnan(res["IoU-2"])
    assert res["fwIoU"] == pytest.approx(75.0)
    assert res["pACC"] == pytest.approx(75.0)


def test_invalid_prediction_is_rejected():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([[3]]), np.array([[0]]), 3)
    with pytest.raises(ValueError, match="pixels"):
        confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int), 3)


def test_detectron2_evaluator_on_ground_truth(synthetic_dataset):
    """Scores equal to one-hot ground truth give 100 everywhere; shifting every label by one class
    gives 0 IoU."""
    import torch
    from detectron2.data import DatasetCatalog
    from PIL import Image

    from seg_suite.data.datasets import register_synthetic
    from seg_suite.evaluation.sem_seg import SemSegEvaluator

    register_synthetic(synthetic_dataset, prefix="sssynth")
    dicts = DatasetCatalog.get("sssynth_val_sem_seg")
    for shift, expected in ((0, 100.0), (1, 0.0)):
        ev = SemSegEvaluator("sssynth_val_sem_seg", distributed=False)
        for d in dicts:
            gt = torch.as_tensor(np.asarray(Image.open(d["sem_seg_file_name"])).astype(np.int64))
            scores = torch.nn.functional.one_hot((gt + shift) % 6, 6).permute(2, 0, 1).float()
            ev.process([{"file_name": d["file_name"]}], [{"sem_seg": scores}])
        res = ev.evaluate()["sem_seg"]
        assert res["mIoU"] == pytest.approx(expected) and res["pACC"] == pytest.approx(expected)
