"""Set-prediction loss of Mask2Former: Hungarian matching, then class and point-sampled mask losses.

Follows ``mask2former/modeling/criterion.py`` (Cheng et al. 2022):
- classification: cross-entropy over K+1 classes, the no-object class weighted ``eos_coef`` (0.1);
- masks: BCE and dice on ``num_points`` points per matched mask, chosen by PointRend importance
  sampling (12544 points, oversample 3.0, importance ratio 0.75), normalised by the number of
  ground-truth masks in the (global) batch;
- the same losses for every auxiliary (intermediate) prediction, suffixed ``_0``, ``_1``, ...

Deliberate difference (same values, fewer Python steps): all decoder layers are handled in one
pass. Predictions of all layers are stacked, matched in one :meth:`HungarianMatcher.match_layers`
call, and the mask losses of all layers are computed from one point-sampling call and split
per layer afterwards.
"""

from typing import Dict, List, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from seg_suite.modeling.matcher import HungarianMatcher
from seg_suite.modeling.point_sampling import (
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    point_sample,
)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Sum over masks of the +1-smoothed dice loss, divided by ``num_masks``.

    Args:
        logits: (N, P) mask logits.  targets: (N, P) in [0, 1].
    """
    probs = logits.sigmoid().flatten(1)
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def sigmoid_ce_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Sum over masks of the mean per-point BCE, divided by ``num_masks``. Shapes as :func:`dice_loss`."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def _per_mask_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    probs = logits.sigmoid()
    return 1 - (2 * (probs * targets).sum(-1) + 1) / (probs.sum(-1) + targets.sum(-1) + 1)


class SetCriterion(nn.Module):
    """Mask2Former loss. Constructor arguments and loss names follow the official ``SetCriterion``.

    Args:
        num_classes: K, not counting no-object.
        matcher: a :class:`HungarianMatcher`.
        weight_dict: loss name -> weight (the meta-architecture applies it).
        eos_coef: cross-entropy weight of the no-object class.
        losses: subset of ("labels", "masks").
        num_points, oversample_ratio, importance_sample_ratio: point sampling of the mask losses.
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher, weight_dict: Dict[str, float],
                 eos_coef: float, losses: Sequence[str], num_points: int, oversample_ratio: float,
                 importance_sample_ratio: float):
        super().__init__()
        unknown = set(losses) - {"labels", "masks"}
        if unknown:
            raise ValueError(f"unknown losses {sorted(unknown)}; expected 'labels' and/or 'masks'")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.eos_coef = eos_coef
        self.losses = list(losses)
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        # Persistent buffer: official checkpoints carry "criterion.empty_weight".
        self.register_buffer("empty_weight", empty_weight)
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio

    def _num_masks(self, targets: Sequence[Dict], device) -> float:
        num = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        world = 1
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(num)
            world = dist.get_world_size()
        return torch.clamp(num / world, min=1).item()

    def forward(self, outputs: Dict, targets: Sequence[Dict]) -> Dict[str, torch.Tensor]:
        """Compute unweighted losses.

        Args:
            outputs: "pred_logits" (B, Q, K+1), "pred_masks" (B, Q, H, W) and optionally
                "aux_outputs", a list of dicts with the same two keys.
            targets: per image, "labels" (T,) int64 and "masks" (T, Ht, Wt) binary, all images
                padded to the same (Ht, Wt).
        Returns:
            "loss_ce", "loss_mask", "loss_dice" for the final prediction, and the same names with
            suffix ``_i`` for auxiliary prediction i.
        """
        layers = list(outputs.get("aux_outputs", [])) + [outputs]
        suffixes = [f"_{i}" for i in range(len(layers) - 1)] + [""]
        pred_logits = torch.stack([o["pred_logits"] for o in layers])  # (L, B, Q, K+1)
        pred_masks = torch.stack([o["pred_masks"] for o in layers])  # (L, B, Q, H, W)
        indices = self.matcher.match_layers(pred_logits, pred_masks, targets)
        num_masks = self._num_masks(targets, pred_logits.device)

        per_layer: Dict[str, torch.Tensor] = {}
        if "labels" in self.losses:
            per_layer["loss_ce"] = self._class_losses(pred_logits, targets, indices)
        if "masks" in self.losses:
            per_layer["loss_mask"], per_layer["loss_dice"] = self._mask_losses(
                pred_masks, targets, indices, num_masks)
        return {name + sfx: values[i] for name, values in per_layer.items()
                for i, sfx in enumerate(suffixes)}

    def _class_losses(self, pred_logits: torch.Tensor, targets: Sequence[Dict],
                      indices: List) -> torch.Tensor:
        """(L,) weighted-mean cross-entropy per layer."""
        n_layers, batch, n_queries, _ = pred_logits.shape
        target_classes = torch.full((n_layers, batch, n_queries), self.num_classes,
                                    dtype=torch.int64, device=pred_logits.device)
        for layer, layer_indices in enumerate(indices):
            for b, (src, tgt) in enumerate(layer_indices):
                target_classes[layer, b, src.to(pred_logits.device)] = targets[b]["labels"][tgt.to(
                    targets[b]["labels"].device)].to(pred_logits.device)
        flat = target_classes.flatten()
        logits = _upcast(pred_logits).flatten(0, 2)
        empty_weight = self.empty_weight.to(logits.dtype)
        loss = F.cross_entropy(logits, flat, empty_weight, reduction="none").view(n_layers, -1)
        weights = empty_weight[flat].view(n_layers, -1)
        return loss.sum(1) / weights.sum(1)

    def _mask_losses(self, pred_masks: torch.Tensor, targets: Sequence[Dict], indices: List,
                     num_masks: float):
        """(L,) BCE and (L,) dice per layer."""
        n_layers = pred_masks.shape[0]
        device = pred_masks.device
        layer_idx, batch_idx, query_idx, target_idx = [], [], [], []
        offsets, total = [], 0
        for t in targets:
            offsets.append(total)
            total += len(t["labels"])
        for layer, layer_indices in enumerate(indices):
            for b, (src, tgt) in enumerate(layer_indices):
                layer_idx.append(torch.full_like(src, layer))
                batch_idx.append(torch.full_like(src, b))
                query_idx.append(src)
                target_idx.append(tgt + offsets[b])
        if total == 0 or sum(len(s) for s in query_idx) == 0:
            zero = pred_masks.sum() * 0.0  # keeps the graph connected (DDP needs every grad)
            return zero.expand(n_layers), zero.expand(n_layers)
        layer_idx = torch.cat(layer_idx).to(device)
        src_masks = _upcast(pred_masks[layer_idx, torch.cat(batch_idx).to(device), torch.cat(query_idx).to(device)])
        all_targets = _pad_and_cat([t["masks"].to(device=device, dtype=src_masks.dtype) for t in targets])
        tgt_masks = all_targets[torch.cat(target_idx).to(device)]
        # Normalised coordinates make prediction and target resolutions irrelevant.
        src_masks, tgt_masks = src_masks[:, None], tgt_masks[:, None]
        with torch.no_grad():
            coords = get_uncertain_point_coords_with_randomness(
                src_masks, calculate_uncertainty, self.num_points, self.oversample_ratio,
                self.importance_sample_ratio)
            point_labels = point_sample(tgt_masks, coords, align_corners=False).squeeze(1)
        point_logits = point_sample(src_masks, coords, align_corners=False).squeeze(1)
        bce = F.binary_cross_entropy_with_logits(point_logits, point_labels, reduction="none").mean(1)
        dice = _per_mask_dice(point_logits, point_labels)
        zeros = point_logits.new_zeros(n_layers)
        return (zeros.index_add(0, layer_idx, bce) / num_masks,
                zeros.index_add(0, layer_idx, dice) / num_masks)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, eos_coef={self.eos_coef}, losses={self.losses}, "
                f"num_points={self.num_points}, oversample_ratio={self.oversample_ratio}, "
                f"importance_sample_ratio={self.importance_sample_ratio}")


def _upcast(x: torch.Tensor) -> torch.Tensor:
    # Losses in at least fp32 (AMP gives fp16/bf16 logits); float64 stays float64 for gradchecks.
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _pad_and_cat(masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate (T_i, H_i, W_i) masks, zero-padding bottom/right to the largest size."""
    height = max(m.shape[-2] for m in masks)
    width = max(m.shape[-1] for m in masks)
    padded = [F.pad(m, (0, width - m.shape[-1], 0, height - m.shape[-2]))
              if m.shape[-2:] != (height, width) else m for m in masks]
    return torch.cat(padded)
