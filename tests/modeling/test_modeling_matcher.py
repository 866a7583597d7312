"""Hungarian matcher against brute-force search over every assignment."""

import itertools

import pytest
import torch
from torch.nn import functional as F

from seg_suite.modeling.matcher import HungarianMatcher, batch_dice_cost, batch_sigmoid_ce_cost
from seg_suite.modeling.point_sampling import point_sample


def naive_cost(logits_q, probs_q, tgt_mask, label, coords, w_class, w_mask, w_dice):
    """Cost of one (query, target) pair, written out point by point."""
    x = point_sample(logits_q[None, None], coords[None], align_corners=False).flatten()
    t = point_sample(tgt_mask[None, None].float(), coords[None], align_corners=False).flatten()
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="mean")
    p = x.sigmoid()
    dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    return w_mask * bce + w_dice * dice - w_class * probs_q[label]


def brute_force(cost):
    """Minimum total cost over all injective maps of the smaller side into the larger."""
    q, t = cost.shape
    best, best_pairs = float("inf"), None
    if t <= q:
        for rows in itertools.permutations(range(q), t):
            total = sum(cost[r, c].item() for c, r in enumerate(rows))
            if total < best:
                best, best_pairs = total, sorted((r, c) for c, r in enumerate(rows))
    else:
        for cols in itertools.permutations(range(t), q):
            total = sum(cost[r, c].item() for r, c in enumerate(cols))
            if total < best:
                best, best_pairs = total, sorted(enumerate(cols))
    return best, best_pairs


@pytest.mark.parametrize("n_queries,n_targets,seed", [(5, 3, 0), (4, 4, 1), (3, 5, 2), (6, 2, 3)])
def test_matcher_equals_brute_force(n_queries, n_targets, seed):
    g = torch.Generator().manual_seed(seed)
    n_classes, h, w, n_layers, batch = 4, 12, 10, 2, 2
    logits = torch.randn(n_layers, batch, n_queries, n_classes + 1, generator=g) * 2
    masks = torch.randn(n_layers, batch, n_queries, h, w, generator=g) * 3
    targets = [{"labels": torch.randint(0, n_classes, (n_targets,), generator=g),
                "masks": torch.rand(n_targets, 2 * h, 2 * w, generator=g) > 0.5} for _ in range(batch)]
    coords = torch.rand(n_layers, batch, 50, 2, generator=g)
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=50)
    indices = matcher.match_layers(logits, masks, targets, coords=coords)
    probs = logits.softmax(-1)
    for layer in range(n_layers):
        for b in range(batch):
            cost = torch.tensor([[naive_cost(masks[layer, b, q], probs[layer, b, q], targets[b]["masks"][t],
                                             targets[b]["labels"][t], coords[layer, b], 2.0, 5.0, 5.0).item()
                                  for t in range(n_targets)] for q in range(n_queries)])
            best, pairs = brute_force(cost)
            rows, cols = indices[layer][b]
            assert len(rows) == min(n_queries, n_targets)
            got = sum(cost[r, c].item() for r, c in zip(rows.tolist(), cols.tolist()))
            assert got == pytest.approx(best, abs=1e-5)
            # Random continuous costs: the optimum is unique.
            assert sorted(zip(rows.tolist(), cols.tolist())) == pairs


def test_vectorised_costs_equal_pairwise_formulas():
    g = torch.Generator().manual_seed(4)
    x, t = torch.randn(3, 7, 20, generator=g), (torch.rand(3, 5, 20, generator=g) > 0.3).float()
    bce = batch_sigmoid_ce_cost(x, t)
    dice = batch_dice_cost(x, t)
    for i in range(7):
        for j in range(5):
            ref = F.binary_cross_entropy_with_logits(x[0, i], t[0, j])
            assert bce[0, i, j].item() == pytest.approx(ref.item(), abs=1e-6)
            p = x[1, i].sigmoid()
            ref_dice = 1 - (2 * (p * t[1, j]).sum() + 1) / (p.sum() + t[1, j].sum() + 1)
            assert dice[1, i, j].item() == pytest.approx(ref_dice.item(), abs=1e-6)


def test_single_layer_forward_and_empty_targets():
    g = torch.Generator().manual_seed(5)
    outputs = {"pred_logits": torch.randn(2, 4, 3, generator=g), "pred_masks": torch.randn(2, 4, 8, 8, generator=g)}
    targets = [{"labels": torch.tensor([1]), "masks": torch.ones(1, 8, 8, dtype=torch.bool)},
               {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 8, 8, dtype=torch.bool)}]
    indices = HungarianMatcher(1, 1, 1, num_points=16)(outputs, targets)
    assert len(indices[0][0]) == 1 and indices[0][1].tolist() == [0]
    assert indices[1][0].numel() == 0 and indices[1][1].numel() == 0


def test_matcher_rejects_bad_settings():
    with pytest.raises(ValueError):
        HungarianMatcher(0, 0, 0, num_points=10)
    with pytest.raises(ValueError):
        HungarianMatcher(1, 1, 1, num_points=0)
