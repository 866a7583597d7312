"""Semantic, panoptic and instance inference rules on hand-made predictions."""

import numpy as np
import torch

from seg_suite.io.masks import masks_to_boxes
from seg_suite.modeling.inference import (
    instance_inference,
    panoptic_inference,
    semantic_inference,
)

BIG = 20.0


def test_semantic_inference_is_probability_weighted_sum():
    g = torch.Generator().manual_seed(0)
    cls, masks = torch.randn(4, 4, generator=g), torch.randn(4, 5, 6, generator=g)
    out = semantic_inference(cls, masks)
    probs = cls.softmax(-1)
    expected = torch.zeros(3, 5, 6)
    for q in range(4):
        for c in range(3):
            expected[c] += probs[q, c] * masks[q].sigmoid()
    torch.testing.assert_close(out, expected)


def test_boxes_equal_mask_extents():
    g = torch.Generator().manual_seed(1)
    masks = torch.rand(6, 17, 23, generator=g) > 0.97
    masks[0] = False  # empty mask -> zero box
    masks[1, 3:9, 5:6] = True
    boxes = masks_to_boxes(masks)
    for m, box in zip(masks.numpy(), boxes.numpy()):
        ys, xs = np.nonzero(m)
        expected = [0, 0, 0, 0] if len(xs) == 0 else [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert box.tolist() == [float(v) for v in expected]


def test_instance_inference_scores_and_boxes():
    cls = torch.full((3, 3), -BIG)  # 3 queries, 2 classes + no-object
    cls[0, 0] = BIG                 # query 0: class 0, certain
    cls[1, 1] = 1.0                 # query 1: mostly class 1
    cls[1, 0] = 0.0
    masks = torch.full((3, 10, 12), -BIG)
    masks[0, 2:5, 3:9] = 2.0        # sigmoid(2) inside
    masks[1, 6:10, 0:4] = BIG
    out = instance_inference(cls, masks, num_classes=2, topk=2)
    assert out["pred_classes"].tolist() == [0, 1]
    p1 = torch.softmax(cls[1], -1)[1]
    torch.testing.assert_close(out["scores"], torch.stack([torch.sigmoid(torch.tensor(2.0)), p1]))
    assert out["pred_boxes"].tolist() == [[3.0, 2.0, 9.0, 5.0], [0.0, 6.0, 4.0, 10.0]]
    assert out["pred_masks"].dtype == torch.float32 and out["pred_masks"][0].sum().item() == 18
    # Panoptic models keep only thing classes among the top-k.
    things = instance_inference(cls, masks, num_classes=2, topk=2, thing_classes={1})
    assert things["pred_classes"].tolist() == [1]


def _query(cls_index, num_classes=3, confidence=BIG):
    logits = torch.full((num_classes + 1,), -BIG)
    logits[cls_index] = confidence
    return logits


def test_panoptic_rules():
    h, w = 8, 8
    masks = torch.full((5, h, w), -BIG)
    cls = torch.stack([_query(0), _query(2), _query(2), _query(1), _query(3)])
    masks[0, :4, :4] = BIG        # thing class 0
    masks[1, 4:, :4] = BIG        # stuff class 2
    masks[2, 4:, 4:] = BIG        # stuff class 2 again: merged into query 1's segment
    masks[3, :4, :] = 1.0         # class 1, overlaps query 0 which wins top-left (p*0.73 < p*1)
    masks[4] = BIG                # no-object: ignored
    seg, info = panoptic_inference(cls, masks, num_classes=3, thing_classes={0, 1},
                                   object_mask_threshold=0.8, overlap_threshold=0.8)
    # query 3 keeps only half of its mask (top-right) -> ratio 0.5 < 0.8 -> dropped
    assert info == [{"id": 1, "isthing": True, "category_id": 0},
                    {"id": 2, "isthing": False, "category_id": 2}]
    expected = torch.zeros(h, w, dtype=torch.int32)
    expected[:4, :4] = 1
    expected[4:, :] = 2
    assert torch.equal(seg, expected)
    # With overlap threshold 0.5 query 3 survives on the top-right quarter.
    seg, info = panoptic_inference(cls, masks, 3, {0, 1}, 0.8, 0.5)
    assert [s["category_id"] for s in info] == [0, 2, 1]
    assert (seg[:4, 4:] == 3).all()


def test_panoptic_object_threshold_and_empty():
    masks = torch.full((2, 4, 4), BIG)
    cls = torch.zeros(2, 4)
    cls[0, 0] = cls[1, 1] = 0.5  # p = e^0.5 / (e^0.5 + 3) = 0.35 each
    seg, info = panoptic_inference(cls, masks, 3, None, 0.8, 0.8)
    assert info == [] and seg.sum() == 0
    seg, info = panoptic_inference(cls, masks, 3, None, 0.0, 0.8)
    assert len(info) == 1 and info[0]["isthing"] is True  # None: every class is a thing
