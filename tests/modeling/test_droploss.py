"""DropLoss and debiasing options of the Mask2Former criterion, against values computed by hand."""

import math

import pytest
import torch
from torch.nn import functional as F

from seg_suite.modeling.criterion import SetCriterion, max_mask_iou
from seg_suite.modeling.matcher import HungarianMatcher


def _criterion(num_classes=2, **options):
    weights = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
    matcher = HungarianMatcher(2.0, 5.0, 5.0, num_points=64)
    return SetCriterion(num_classes, matcher, weights, eos_coef=0.1, losses=["labels", "masks"],
                        num_points=64, oversample_ratio=3.0, importance_sample_ratio=0.75, **options)


def _hand_case():
    """One 8x8 pseudo-mask in a 16x16 image; predictions at 8x8 (stride 2, like stride 4 in the model).

    query 0: exactly the pseudo-mask (it is matched whatever points are drawn);
    query 1: a 2x2 blob far from it (IoU 0: the unlabelled object DropLoss protects);
    query 2: a 4x4 block sharing 4 cells with it: IoU 4 / 28.
    """
    target = torch.zeros(16, 16, dtype=torch.bool)
    target[0:8, 0:8] = True  # at 8x8: rows 0-3, cols 0-3 (16 cells)
    masks = torch.full((1, 3, 8, 8), -10.0)
    masks[0, 0, 0:4, 0:4] = 10.0
    masks[0, 1, 6:8, 6:8] = 10.0
    masks[0, 2, 2:6, 2:6] = 10.0  # 16 cells, 4 of them (rows 2-3, cols 2-3) inside the target
    logits = torch.tensor([[[1.5, -0.5, 0.2], [0.3, 0.1, -0.4], [-0.2, 0.8, 0.5]]])
    targets = [{"labels": torch.tensor([0]), "masks": target[None]}]
    return logits, masks, targets


def test_max_mask_iou_by_hand():
    _, masks, targets = _hand_case()
    iou = max_mask_iou(masks[0], targets[0]["masks"])
    # query 2: intersection 4 cells, union 16 + 16 - 4 = 28.
    assert iou.tolist() == pytest.approx([1.0, 0.0, 4 / 28])
    # Area resampling: a low-resolution cell is in the mask when at least half of it is covered.
    half = torch.zeros(1, 4, 4, dtype=torch.bool)
    half[0, 0, 0:2] = True  # covers half of output cell (0, 0) at 2x2
    pred = torch.full((1, 2, 2), -1.0)
    pred[0, 0, 0] = 1.0
    assert max_mask_iou(pred, half).item() == 1.0


def test_droploss_off_and_on_by_hand():
    logits, masks, targets = _hand_case()
    no_object = 2  # num_classes
    per_query = -F.log_softmax(logits[0], -1)[torch.arange(3), torch.tensor([0, no_object, no_object])]
    weights = torch.tensor([1.0, 0.1, 0.1])

    torch.manual_seed(0)
    off = _criterion()({"pred_logits": logits, "pred_masks": masks}, targets)["loss_ce"]
    assert off.item() == pytest.approx(((weights * per_query).sum() / weights.sum()).item(), rel=1e-6)

    torch.manual_seed(0)
    on = _criterion(droploss_iou=0.01)({"pred_logits": logits, "pred_masks": masks}, targets)["loss_ce"]
    # query 1 (IoU 0 <= 0.01) is dropped; the normaliser still counts it (CutLER's mean).
    expected = (weights[0] * per_query[0] + weights[2] * per_query[2]) / weights.sum()
    assert on.item() == pytest.approx(expected.item(), rel=1e-6)

    # A threshold above query 2's IoU (4/28 = 0.143) drops it as well; the matched query never is.
    torch.manual_seed(0)
    high = _criterion(droploss_iou=0.2)({"pred_logits": logits, "pred_masks": masks}, targets)["loss_ce"]
    assert high.item() == pytest.approx((weights[0] * per_query[0] / weights.sum()).item(), rel=1e-6)


def test_dropped_query_gets_no_classification_gradient():
    logits, masks, targets = _hand_case()
    grads = {}
    for thr in (0.0, 0.01):
        x = logits.clone().requires_grad_(True)
        torch.manual_seed(0)
        _criterion(droploss_iou=thr)({"pred_logits": x, "pred_masks": masks}, targets)["loss_ce"].backward()
        grads[thr] = x.grad[0]
    assert grads[0.0][1].abs().sum() > 0.01  # off: pushed towards no-object
    assert grads[0.01][1].abs().sum() == 0.0  # on: not punished for the unlabelled object
    assert grads[0.01][2].abs().sum() > 0.01


def test_droploss_keeps_plain_loss_for_images_without_pseudo_masks():
    logits, masks, _ = _hand_case()
    empty = [{"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 16, 16)}]
    expected = -F.log_softmax(logits[0], -1)[:, 2].mean()
    loss = _criterion(droploss_iou=0.01)({"pred_logits": logits, "pred_masks": masks}, empty)["loss_ce"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_debias_prior_update_and_logit_adjustment_by_hand():
    logits, masks, targets = _hand_case()
    m, tau = 0.9, 0.5
    crit = _criterion(num_classes=2, debias_momentum=m, debias_tau=tau)
    crit.debias_prior.copy_(torch.tensor([0.7, 0.3]))
    torch.manual_seed(0)
    loss = crit({"pred_logits": logits, "pred_masks": masks}, targets)["loss_ce"]

    # EMA of the matched query's (query 0) class distribution over the 2 clusters.
    p_matched = torch.softmax(logits[0, 0, :2], -1)
    prior = m * torch.tensor([0.7, 0.3]) + (1 - m) * p_matched
    assert crit.debias_prior.tolist() == pytest.approx(prior.tolist(), rel=1e-6)
    # Logits + tau * log(K * p_hat) on the clusters, no-object untouched; then the plain CE.
    shift = torch.cat([tau * torch.log(2 * prior), torch.zeros(1)])
    adjusted = logits[0] + shift
    per_query = -F.log_softmax(adjusted, -1)[torch.arange(3), torch.tensor([0, 2, 2])]
    weights = torch.tensor([1.0, 0.1, 0.1])
    assert loss.item() == pytest.approx(((weights * per_query).sum() / weights.sum()).item(), rel=1e-6)
    # Spelled out for query 0: shift = 0.5 * ln(2 * prior).
    by_hand = [0.5 * math.log(2 * p) for p in prior.tolist()]
    assert shift[:2].tolist() == pytest.approx(by_hand, rel=1e-6)

    # In eval mode the prior is used but not updated.
    crit.eval()
    before = crit.debias_prior.clone()
    crit({"pred_logits": logits, "pred_masks": masks}, targets)
    assert torch.equal(crit.debias_prior, before)


def test_uniform_prior_leaves_loss_unchanged_and_options_off_keep_official_state():
    logits, masks, targets = _hand_case()
    plain = _criterion()
    debiased = _criterion(debias_momentum=0.999)
    assert list(plain.state_dict()) == ["empty_weight"]  # official checkpoint keys only
    assert set(debiased.state_dict()) == {"empty_weight", "debias_prior"}
    debiased.eval()  # uniform prior, no update: log(K * 1/K) = 0
    torch.manual_seed(0)
    a = plain({"pred_logits": logits, "pred_masks": masks}, targets)["loss_ce"]
    torch.manual_seed(0)
    b = debiased({"pred_logits": logits, "pred_masks": masks}, targets)["loss_ce"]
    assert a.item() == pytest.approx(b.item(), rel=1e-7)


def test_bad_option_values_are_rejected():
    with pytest.raises(ValueError, match="droploss_iou"):
        _criterion(droploss_iou=1.5)
    with pytest.raises(ValueError, match="debias_momentum"):
        _criterion(debias_momentum=1.0)


def test_config_keys_reach_the_criterion_of_a_built_model():
    """MODEL.MASK_FORMER.DROPLOSS_IOU / DEBIAS_* must switch the options of the model's criterion."""
    from detectron2.modeling import build_model

    from test_modeling_model import tiny_cfg

    cfg = tiny_cfg()
    assert build_model(cfg).criterion.droploss_iou == 0.0  # off by default (official behaviour)
    cfg.MODEL.MASK_FORMER.DROPLOSS_IOU = 0.01
    cfg.MODEL.MASK_FORMER.DEBIAS_MOMENTUM = 0.999
    cfg.MODEL.MASK_FORMER.DEBIAS_TAU = 0.4
    crit = build_model(cfg).criterion
    assert (crit.droploss_iou, crit.debias_momentum, crit.debias_tau) == (0.01, 0.999, 0.4)
