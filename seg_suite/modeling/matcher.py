"""Hungarian matching of predicted masks to ground-truth masks on uniformly sampled points.

Cost = cost_class * (-p(class)) + cost_mask * BCE + cost_dice * dice, the mask terms averaged
over ``num_points`` random points shared by all masks of an image (Mask2Former,
``mask2former/modeling/matcher.py``; DETR's matcher before it). The assignment is solved with
``scipy.optimize.linear_sum_assignment``.

Differences from the reference, none of which changes the cost:
- BCE cost uses ``softplus(x) - x * t`` (one matrix product) instead of separate positive and
  negative products: BCE(x, 1) = softplus(x) - x and BCE(x, 0) = softplus(x).
- :meth:`HungarianMatcher.match_layers` matches all decoder layers in one call with one host
  transfer per image; the reference calls the matcher once per layer. Each (layer, image) still
  gets its own random points. The costs are computed one layer at a time, so the temporaries stay
  at (B, Q, P) (10 MB at the official sizes): stacking all layers made tensors of 100 MB, slower
  on CPU because each was freshly page-faulted and left the caches.
"""

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.nn import functional as F

from seg_suite.modeling.point_sampling import point_sample

Indices = List[Tuple[torch.Tensor, torch.Tensor]]


def batch_sigmoid_ce_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of every prediction against every target.

    Args:
        logits: (..., N, P) mask logits at P points.
        targets: (..., M, P) binary (or soft) targets at the same points.
    Returns:
        (..., N, M) cost.
    """
    num_points = logits.shape[-1]
    cost = F.softplus(logits).sum(-1, keepdim=True) - logits @ targets.transpose(-1, -2)
    return cost / num_points


def batch_dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss (with +1 smoothing) of every prediction against every target.

    Args:
        logits: (..., N, P) mask logits.
        targets: (..., M, P) targets.
    Returns:
        (..., N, M) cost in [0, 1].
    """
    probs = logits.sigmoid()
    numerator = 2 * (probs @ targets.transpose(-1, -2))
    denominator = probs.sum(-1).unsqueeze(-1) + targets.sum(-1).unsqueeze(-2)
    return 1 - (numerator + 1) / (denominator + 1)


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to targets, per image.

    Args:
        cost_class, cost_mask, cost_dice: cost weights (official configs: 2.0, 5.0, 5.0).
        num_points: points sampled per image for the mask costs (official: 112 * 112 = 12544).
    """

    def __init__(self, cost_class: float = 1.0, cost_mask: float = 1.0, cost_dice: float = 1.0,
                 num_points: int = 0):
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("at least one matching cost weight must be non-zero")
        if num_points <= 0:
            raise ValueError(f"num_points must be positive, got {num_points}")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def forward(self, outputs: Dict[str, torch.Tensor], targets: Sequence[Dict]) -> Indices:
        """Match one layer's predictions.

        Args:
            outputs: "pred_logits" (B, Q, K+1) and "pred_masks" (B, Q, H, W).
            targets: per image, "labels" (T,) int64 and "masks" (T, Ht, Wt) binary.
        Returns:
            per image, (query indices, target indices), each (min(Q, T),) int64, sorted by query.
        """
        return self.match_layers(outputs["pred_logits"][None], outputs["pred_masks"][None], targets)[0]

    @torch.no_grad()
    def cost_matrices(self, pred_logits: torch.Tensor, pred_masks: Sequence[torch.Tensor],
                      targets: Sequence[Dict], coords: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        """Cost matrices of every layer and image.

        Args:
            pred_logits: (L, B, Q, K+1) class logits of L decoder layers.
            pred_masks: (L, B, Q, H, W) mask logits, or a sequence of L (B, Q, H, W) tensors
                (the decoder's per-layer outputs, which then need not be stacked).
            targets: B dicts as in :meth:`forward`.
            coords: (L, B, P, 2) points in [0, 1]^2; default: uniform random, P = num_points.
        Returns:
            per image, an (L, Q, T) float32 cost tensor on the predictions' device.
        """
        n_layers, batch, n_queries = pred_logits.shape[:3]
        device = pred_logits.device
        probs = pred_logits.float().softmax(-1)
        # Targets as float maps, once per image (not once per layer as in the reference).
        tgt_maps = [t["masks"].to(device=device, dtype=torch.float32)[None] if t["labels"].numel() else None
                    for t in targets]
        per_image: List[List[torch.Tensor]] = [[] for _ in targets]
        for layer in range(n_layers):
            # All queries of a (layer, image) share the same points, as in the reference. The
            # images of a layer are sampled in one call: grid_sample parallelises over the batch.
            points = coords[layer] if coords is not None else torch.rand(batch, self.num_points, 2, device=device)
            pred_points = point_sample(pred_masks[layer].float(), points, align_corners=False)  # (B, Q, P)
            for b, target in enumerate(targets):
                labels = target["labels"]
                if labels.numel() == 0:
                    per_image[b].append(probs.new_zeros(n_queries, 0))
                    continue
                tgt_points = point_sample(tgt_maps[b], points[b:b + 1], align_corners=False)[0]  # (T, P)
                logits = pred_points[b]
                per_image[b].append(self.cost_mask * batch_sigmoid_ce_cost(logits, tgt_points)
                                    + self.cost_dice * batch_dice_cost(logits, tgt_points)
                                    - self.cost_class * probs[layer, b][:, labels])
        return [torch.stack(costs) for costs in per_image]

    @torch.no_grad()
    def match_layers(self, pred_logits: torch.Tensor, pred_masks: Sequence[torch.Tensor],
                     targets: Sequence[Dict], coords: Optional[torch.Tensor] = None) -> List[Indices]:
        """Match every decoder layer: see :meth:`cost_matrices` for shapes.

        Returns:
            per layer, per image, (query indices, target indices) as in :meth:`forward`.
        """
        n_layers = pred_logits.shape[0]
        result: List[Indices] = [[] for _ in range(n_layers)]
        for cost in self.cost_matrices(pred_logits, pred_masks, targets, coords):
            cost = cost.cpu()
            for layer in range(n_layers):
                rows, cols = linear_sum_assignment(cost[layer].numpy())
                result[layer].append(
                    (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
                )
        return result

    def extra_repr(self) -> str:
        return (f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, "
                f"cost_dice={self.cost_dice}, num_points={self.num_points}")
