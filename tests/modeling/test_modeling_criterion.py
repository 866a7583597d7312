"""Mask2Former loss: gradients (gradcheck, finite differences), class loss by hand, loss names."""

import pytest
import torch
from torch.nn import functional as F

from seg_suite.modeling.criterion import SetCriterion, dice_loss, sigmoid_ce_loss
from seg_suite.modeling.matcher import HungarianMatcher
from seg_suite.modeling.point_sampling import get_uncertain_point_coords_with_randomness, point_sample

WEIGHTS = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}


def _criterion(num_classes=3, points=30, aux_layers=1):
    weight_dict = dict(WEIGHTS)
    for i in range(aux_layers):
        weight_dict.update({f"{k}_{i}": v for k, v in WEIGHTS.items()})
    matcher = HungarianMatcher(2.0, 5.0, 5.0, num_points=points)
    return SetCriterion(num_classes, matcher, weight_dict, eos_coef=0.1, losses=["labels", "masks"],
                        num_points=points, oversample_ratio=3.0, importance_sample_ratio=0.75)


def _targets(g):
    out = []
    for _ in range(2):
        masks = torch.zeros(2, 16, 16, dtype=torch.bool)
        masks[0, 2:9, 3:12] = True
        masks[1, 8:15, 1:7] = True
        out.append({"labels": torch.randint(0, 3, (2,), generator=g), "masks": masks})
    return out


def _outputs(logits, masks):
    """logits (L, B, Q, K+1), masks (L, B, Q, H, W) -> the decoder's output dict."""
    aux = [{"pred_logits": logits[i], "pred_masks": masks[i]} for i in range(len(logits) - 1)]
    return {"pred_logits": logits[-1], "pred_masks": masks[-1], "aux_outputs": aux}


def test_dice_and_bce_gradcheck():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 10, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.rand(3, 10, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda v: dice_loss(v, t, 2.0), (x,))
    assert torch.autograd.gradcheck(lambda v: sigmoid_ce_loss(v, t, 2.0), (x,))


def test_point_sample_gradcheck_and_values():
    g = torch.Generator().manual_seed(1)
    maps = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    coords = torch.rand(2, 7, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m, c: point_sample(m, c, align_corners=False), (maps, coords))
    # A point at a pixel centre reads that pixel exactly: x = (j + 0.5) / W, y = (i + 0.5) / H.
    centre = torch.tensor([[[(4 + 0.5) / 6, (2 + 0.5) / 5]]], dtype=torch.float64)
    out = point_sample(maps.detach()[:1], centre, align_corners=False)
    torch.testing.assert_close(out[0, :, 0], maps.detach()[0, :, 2, 4])


def test_importance_sampling_prefers_uncertain_points():
    # Logits are 0 on the left half (maximally uncertain) and -20 on the right half.
    logits = torch.full((1, 1, 8, 8), -20.0)
    logits[..., :4] = 0.0
    coords = get_uncertain_point_coords_with_randomness(logits, lambda x: -x.abs(), 100, 3.0, 0.75)
    assert coords.shape == (1, 100, 2)
    # The 75 importance-sampled points all come from the uncertain half (x < 0.5 up to the blur of
    # the bilinear boundary at x in [0.4375, 0.5625]).
    assert (coords[0, :75, 0] < 0.5625).all()


def test_loss_names_and_counts():
    g = torch.Generator().manual_seed(2)
    crit = _criterion(aux_layers=2)
    logits = torch.randn(3, 2, 4, 4, generator=g)
    masks = torch.randn(3, 2, 4, 8, 8, generator=g)
    losses = crit(_outputs(logits, masks), _targets(g))
    assert set(losses) == set(crit.weight_dict)
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())


def test_class_loss_by_hand():
    # One target; query 2 predicts its mask perfectly, the others predict empty masks, so the
    # matching is unambiguous whatever points are drawn.
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[4:12, 4:12] = True
    targets = [{"labels": torch.tensor([1]), "masks": mask[None]}]
    pred_masks = torch.full((1, 4, 16, 16), -10.0)
    pred_masks[0, 2][mask] = 10.0
    g = torch.Generator().manual_seed(3)
    pred_logits = torch.randn(1, 4, 4, generator=g)
    crit = _criterion(aux_layers=0)
    losses = crit({"pred_logits": pred_logits, "pred_masks": pred_masks}, targets)
    target_classes = torch.tensor([3, 3, 1, 3])  # no-object = num_classes = 3
    weights = torch.tensor([0.1, 0.1, 1.0, 0.1])
    per_query = -F.log_softmax(pred_logits[0], -1)[torch.arange(4), target_classes]
    expected = (weights * per_query).sum() / weights.sum()
    assert losses["loss_ce"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_criterion_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(4)
    crit = _criterion(aux_layers=1).double()
    targets = _targets(g)
    logits = torch.randn(2, 2, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    masks = torch.randn(2, 2, 4, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)

    def total(lg, mk):
        torch.manual_seed(0)  # same matching points and loss points on every evaluation
        losses = crit(_outputs(lg, mk), targets)
        return sum(v * crit.weight_dict[k] for k, v in losses.items())

    total(logits, masks).backward()
    eps = 1e-6
    for tensor in (logits, masks):
        flat = tensor.detach().flatten()
        picks = torch.randperm(flat.numel(), generator=g)[:12]
        for i in picks.tolist():
            plus, minus = flat.clone(), flat.clone()
            plus[i] += eps
            minus[i] -= eps
            args_p = [plus.view_as(tensor) if tensor is t else t.detach() for t in (logits, masks)]
            args_m = [minus.view_as(tensor) if tensor is t else t.detach() for t in (logits, masks)]
            numeric = (total(*args_p) - total(*args_m)).item() / (2 * eps)
            assert tensor.grad.flatten()[i].item() == pytest.approx(numeric, rel=1e-4, abs=1e-7)


def test_empty_targets_give_zero_mask_loss_and_connected_graph():
    g = torch.Generator().manual_seed(5)
    crit = _criterion(aux_layers=1)
    targets = [{"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 16, 16)}] * 2
    logits = torch.randn(2, 2, 4, 4, generator=g, requires_grad=True)
    masks = torch.randn(2, 2, 4, 8, 8, generator=g, requires_grad=True)
    losses = crit(_outputs(logits, masks), targets)
    assert losses["loss_mask"].item() == 0.0 and losses["loss_dice_0"].item() == 0.0
    # Everything is no-object: CE = mean(-log p(no-object)) per layer.
    expected = -F.log_softmax(logits[1].detach(), -1)[..., 3].mean()
    assert losses["loss_ce"].item() == pytest.approx(expected.item(), rel=1e-6)
    sum(losses.values()).backward()
    assert masks.grad is not None and logits.grad is not None


def test_mask_losses_by_hand_per_layer(monkeypatch):
    """BCE and dice of each layer from its own matched masks, with the loss points pinned."""
    import seg_suite.modeling.criterion as criterion_module

    g = torch.Generator().manual_seed(6)
    targets = _targets(g)  # 2 images x 2 rectangles, 16 x 16
    scales = [5.0, 2.0]  # layer 0 is confident, layer 1 less so: their losses differ
    masks = torch.full((2, 2, 4, 16, 16), -1.0)
    for layer, scale in enumerate(scales):
        for b in range(2):
            masks[layer, b] = -scale
            masks[layer, b, 1][targets[b]["masks"][0]] = scale  # query 1 <-> target 0
            masks[layer, b, 3][targets[b]["masks"][1]] = scale  # query 3 <-> target 1
    logits = torch.zeros(2, 2, 4, 4)
    points = torch.rand(30, 2, generator=g)  # the same loss points for every matched mask
    monkeypatch.setattr(criterion_module, "get_uncertain_point_coords_with_randomness",
                        lambda src, *args: points.expand(src.shape[0], -1, -1))
    losses = _criterion(aux_layers=1)(_outputs(logits, masks), targets)
    pairs = [(0, 1, 0), (0, 3, 1), (1, 1, 0), (1, 3, 1)]  # (image, query, target), the matcher's order
    for layer, suffix in ((0, "_0"), (1, "")):
        bce = dice = 0.0
        for b, q, t in pairs:
            x = point_sample(masks[layer, b, q][None, None], points[None], align_corners=False).flatten()
            y = point_sample(targets[b]["masks"][t][None, None].float(), points[None], align_corners=False).flatten()
            bce += F.binary_cross_entropy_with_logits(x, y).item()
            p = x.sigmoid()
            dice += 1 - (2 * (p * y).sum() + 1).item() / ((p.sum() + y.sum()).item() + 1)
        assert losses["loss_mask" + suffix].item() == pytest.approx(bce / 4, rel=1e-5)
        assert losses["loss_dice" + suffix].item() == pytest.approx(dice / 4, rel=1e-5)
    assert losses["loss_mask_0"].item() < losses["loss_mask"].item()


def test_matched_masks_from_embeddings_equal_full_masks():
    """The training path (masks of matched queries rebuilt from mask_embed x mask_features) gives
    the losses and parameter gradients of differentiating every full mask, as the reference does."""
    from detectron2.modeling import build_model

    from test_modeling_model import _input, tiny_cfg

    torch.manual_seed(0)
    model = build_model(tiny_cfg()).double().train()
    batch = [_input(seed=0), _input(seed=1)]
    images = torch.stack([(x["image"].double() - model.pixel_mean) / model.pixel_std for x in batch])
    outputs = model.sem_seg_head(model.backbone(images))
    assert "mask_features" in outputs and not outputs["pred_masks"].requires_grad
    targets = model.prepare_targets([x["instances"] for x in batch], type("Images", (), {"tensor": images}))

    def full_masks(pred):
        out = {"pred_logits": pred["pred_logits"],
               "pred_masks": torch.einsum("bqc,bchw->bqhw", pred["mask_embed"], outputs["mask_features"])}
        torch.testing.assert_close(out["pred_masks"].detach(), pred["pred_masks"])
        return out

    reference = dict(full_masks(outputs), aux_outputs=[full_masks(a) for a in outputs["aux_outputs"]])
    params = [p for p in model.parameters() if p.requires_grad]
    results = []
    for outs in (outputs, reference):
        torch.manual_seed(1)  # same matching and loss points
        losses = model.criterion(outs, targets)
        total = sum(v * model.criterion.weight_dict[k] for k, v in losses.items())
        grads = torch.autograd.grad(total, params, retain_graph=True, allow_unused=True)
        results.append((losses, grads))
    (losses, grads), (ref_losses, ref_grads) = results
    for k in ref_losses:
        assert losses[k].item() == pytest.approx(ref_losses[k].item(), rel=1e-9, abs=1e-12), k
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    for g, ref in zip(grads, ref_grads):
        if ref is None:
            assert g is None or g.abs().max() == 0
        else:
            torch.testing.assert_close(g, ref, rtol=1e-7, atol=1e-12)
