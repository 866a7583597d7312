"""COCO instance evaluation with boxes derived from the predicted masks."""

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.structures import Boxes, Instances

from seg_suite.data.datasets import register_synthetic
from seg_suite.evaluation.instance import InstanceEvaluator
from seg_suite.io.masks import rle_to_mask


def gt_as_prediction(d, drop_boxes=True):
    h, w = d["height"], d["width"]
    masks = torch.as_tensor(np.stack([rle_to_mask(a["segmentation"], h, w) for a in d["annotations"]]))
    inst = Instances((h, w))
    inst.pred_masks = masks.float()
    inst.scores = torch.ones(len(masks))
    inst.pred_classes = torch.as_tensor([a["category_id"] for a in d["annotations"]])
    # Zero boxes, as the official Mask2Former writes them: the evaluator must not trust them.
    inst.pred_boxes = Boxes(torch.zeros(len(masks), 4))
    return {"instances": inst}


def test_box_ap_comes_from_the_masks(synthetic_dataset, tmp_path):
    register_synthetic(synthetic_dataset, prefix="isynth")
    dicts = DatasetCatalog.get("isynth_val")
    ev = InstanceEvaluator("isynth_val", output_dir=str(tmp_path), distributed=False)
    ev.reset()
    for d in dicts:
        ev.process([{"image_id": d["image_id"]}], [gt_as_prediction(d)])
    res = ev.evaluate()
    # The ground truth as prediction (score 1): AP 100 for masks, and for boxes although the
    # model's boxes were all zero (they would score 0 without the recomputation).
    assert res["segm"]["AP"] == pytest.approx(100.0)
    assert res["bbox"]["AP"] == pytest.approx(100.0)


def test_plain_coco_evaluator_scores_zero_boxes_at_zero(synthetic_dataset, tmp_path):
    # The contrast to the test above: detectron2's evaluator trusts the zero boxes.
    from detectron2.evaluation import COCOEvaluator

    register_synthetic(synthetic_dataset, prefix="isynth")
    ev = COCOEvaluator("isynth_val", tasks=("bbox",), distributed=False, output_dir=str(tmp_path),
                       use_fast_impl=False)
    ev.reset()
    for d in DatasetCatalog.get("isynth_val"):
        ev.process([{"image_id": d["image_id"]}], [gt_as_prediction(d)])
    assert ev.evaluate()["bbox"]["AP"] == pytest.approx(0.0)
