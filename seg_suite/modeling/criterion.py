"""Set-prediction loss of Mask2Former: Hungarian matching, then class and point-sampled mask losses.

Follows ``mask2former/modeling/criterion.py`` (Cheng et al. 2022):
- classification: cross-entropy over K+1 classes, the no-object class weighted ``eos_coef`` (0.1);
- masks: BCE and dice on ``num_points`` points per matched mask, chosen by PointRend importance
  sampling (12544 points, oversample 3.0, importance ratio 0.75), normalised by the number of
  ground-truth masks in the (global) batch;
- the same losses for every auxiliary (intermediate) prediction, suffixed ``_0``, ``_1``, ...

Deliberate differences (same values and gradients, less work):

- all decoder layers are matched in one :meth:`HungarianMatcher.match_layers` call, and the mask
  predictions of the layers are never stacked into one (L, B, Q, H, W) tensor;
- when the decoder provides ``mask_embed`` and ``mask_features`` (it does while training, see
  ``transformer_decoder/masked_decoder.py``), the masks of the matched queries are recomputed
  with gradients from them, in one batched product for all layers; ``pred_masks`` are then used
  only without gradients (matching, DropLoss). The loss only ever reads matched masks, so the
  gradients are those of the reference, without its zero gradients for every unmatched mask;
- the point selection runs over blocks of masks, so no temporary exceeds ~4 MB (on CPU every
  large temporary was freshly page-faulted).

Two options for training on pseudo-labels, both off by default (then the loss is exactly the
official one):

- **DropLoss** (CutLER, Wang et al. 2023, ``cutler/modeling/roi_heads``), adapted to set
  prediction: an unmatched query whose predicted mask (logit > 0) has IoU <= ``droploss_iou``
  with every pseudo-mask of its image is dropped from the no-object cross-entropy, so queries are
  not punished for finding objects the pseudo-labels missed. IoUs are computed at the prediction
  resolution, the pseudo-masks area-downsampled and thresholded at 0.5. As in CutLER's
  ``(weights * ce).mean()``, a dropped term is zeroed but still counted in the normaliser (the
  sum of class weights of all queries), so the loss scale does not depend on how many queries are
  dropped. Matched queries are never dropped. Images without pseudo-masks keep the plain loss
  (nothing to compare with; CutLER filters such images out).
- **Debiasing** (DebiasPL / DebiasMatch, Wang et al. CVPR 2022, ``main_DebiasPL.py``): the
  class logits of every layer are logit-adjusted by ``tau * log(K * p_hat)`` on the K cluster
  classes, where ``p_hat`` is an exponential moving average (momentum ``debias_momentum``) of the
  mean predicted class distribution of the matched queries of the final layer, started uniform
  and updated before the loss as in the reference. Difference from the reference: it adds
  ``tau * log(p_hat)``; we add ``tau * log(K * p_hat)`` (i.e. relative to the uniform prior) and
  leave the no-object logit alone. In the reference's plain classifier the constant ``tau *
  log K`` cancels in the softmax; here it would shift every cluster against no-object. The
  class distribution is the softmax over the K cluster logits (no-object excluded). ``p_hat``
  is the persistent buffer ``debias_prior``, present only when debiasing is on, so checkpoints
  of the plain model keep the official keys.
"""

from typing import Dict, List, Optional, Sequence

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
        droploss_iou: DropLoss IoU threshold (module docstring); 0 disables it, CutLER uses 0.01.
        debias_momentum: EMA momentum of the debiasing prior; 0 disables debiasing, DebiasPL
            uses 0.999 (``--qhat_m``).
        debias_tau: strength of the logit adjustment (DebiasPL's scripts: ``--tau 0.4``).
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher, weight_dict: Dict[str, float],
                 eos_coef: float, losses: Sequence[str], num_points: int, oversample_ratio: float,
                 importance_sample_ratio: float, *, droploss_iou: float = 0.0,
                 debias_momentum: float = 0.0, debias_tau: float = 0.4):
        super().__init__()
        unknown = set(losses) - {"labels", "masks"}
        if unknown:
            raise ValueError(f"unknown losses {sorted(unknown)}; expected 'labels' and/or 'masks'")
        if not 0.0 <= droploss_iou < 1.0:
            raise ValueError(f"droploss_iou must be in [0, 1), got {droploss_iou}")
        if not 0.0 <= debias_momentum < 1.0:
            raise ValueError(f"debias_momentum must be in [0, 1), got {debias_momentum}")
        self.droploss_iou = droploss_iou
        self.debias_momentum = debias_momentum
        self.debias_tau = debias_tau
        if debias_momentum > 0:
            # Uniform start, as DebiasPL's initial_qhat; saved in checkpoints so --resume keeps it.
            self.register_buffer("debias_prior", torch.full((num_classes,), 1.0 / num_classes))
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
        pred_masks = [o["pred_masks"] for o in layers]  # L x (B, Q, H, W), not stacked
        mask_features = outputs.get("mask_features")
        mask_embeds = None
        if mask_features is not None and all("mask_embed" in o for o in layers):
            mask_embeds = [o["mask_embed"] for o in layers]
        indices = self.matcher.match_layers(pred_logits, pred_masks, targets)
        num_masks = self._num_masks(targets, pred_logits.device)

        per_layer: Dict[str, torch.Tensor] = {}
        if "labels" in self.losses:
            keep = None
            if self.droploss_iou > 0:
                keep = self._droploss_keep(pred_masks, targets, indices)
            if self.debias_momentum > 0:
                if self.training:
                    self._update_debias_prior(pred_logits[-1], indices[-1])
                pred_logits = self.adjust_logits(pred_logits)
            per_layer["loss_ce"] = self._class_losses(pred_logits, targets, indices, keep)
        if "masks" in self.losses:
            per_layer["loss_mask"], per_layer["loss_dice"] = self._mask_losses(
                pred_masks, targets, indices, num_masks, mask_embeds, mask_features)
        return {name + sfx: values[i] for name, values in per_layer.items()
                for i, sfx in enumerate(suffixes)}

    def adjust_logits(self, pred_logits: torch.Tensor) -> torch.Tensor:
        """Debiasing logit adjustment: (..., K+1) logits + tau * log(K * p_hat) on the K classes."""
        shift = self.debias_tau * torch.log(self.debias_prior.clamp(min=1e-12) * self.num_classes)
        shift = torch.cat([shift, shift.new_zeros(1)]).to(pred_logits.dtype)
        return pred_logits + shift

    @torch.no_grad()
    def _update_debias_prior(self, logits: torch.Tensor, indices) -> None:
        """EMA update of ``debias_prior`` from the matched queries of one layer's (B, Q, K+1) logits."""
        probs = [logits[b, src.to(logits.device), : self.num_classes].float().softmax(-1)
                 for b, (src, _) in enumerate(indices)]
        stats = torch.cat([torch.cat(probs).sum(0), logits.new_tensor([sum(len(p) for p in probs)]).float()])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)  # every process keeps the same prior
        if stats[-1] > 0:
            mean = stats[:-1] / stats[-1]
            self.debias_prior.mul_(self.debias_momentum).add_((1 - self.debias_momentum) * mean.to(self.debias_prior))

    @torch.no_grad()
    def _droploss_keep(self, pred_masks: Sequence[torch.Tensor], targets: Sequence[Dict],
                       indices: List) -> torch.Tensor:
        """(L, B, Q) bool: False for unmatched queries whose IoU with every target is <= droploss_iou.

        ``pred_masks`` holds L (B, Q, H, W) mask-logit tensors.
        """
        n_layers = len(pred_masks)
        batch, n_queries = pred_masks[0].shape[:2]
        keep = torch.ones((n_layers, batch, n_queries), dtype=torch.bool, device=pred_masks[0].device)
        for b, target in enumerate(targets):
            if len(target["labels"]) == 0:
                continue  # no pseudo-mask to compare with: keep the plain loss
            for layer in range(n_layers):
                keep[layer, b] = max_mask_iou(pred_masks[layer][b], target["masks"]) > self.droploss_iou
        for layer, layer_indices in enumerate(indices):
            for b, (src, _) in enumerate(layer_indices):
                keep[layer, b, src.to(keep.device)] = True
        return keep

    def _class_losses(self, pred_logits: torch.Tensor, targets: Sequence[Dict],
                      indices: List, keep: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(L,) weighted-mean cross-entropy per layer; ``keep`` (L, B, Q) zeroes DropLoss terms."""
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
        if keep is not None:
            # Zeroed, not removed: the normaliser stays that of all queries (CutLER's mean).
            loss = loss * keep.view(n_layers, -1).to(loss.dtype)
        return loss.sum(1) / weights.sum(1)

    def _mask_losses(self, pred_masks: Sequence[torch.Tensor], targets: Sequence[Dict], indices: List,
                     num_masks: float, mask_embeds: Optional[Sequence[torch.Tensor]] = None,
                     mask_features: Optional[torch.Tensor] = None):
        """(L,) BCE and (L,) dice per layer.

        Args:
            pred_masks: L (B, Q, H, W) mask logits; differentiated only without ``mask_embeds``.
            mask_embeds: L (B, Q, C) mask embeddings and ``mask_features`` (B, C, H, W): when
                given, the matched masks are recomputed from them (the only gradient path).
        """
        n_layers = len(pred_masks)
        batch = len(targets)
        device = pred_masks[0].device
        offsets, total = [], 0
        for t in targets:
            offsets.append(total)
            total += len(t["labels"])
        # Matched (layer, image, query) rows, image-major: image 0's rows of every layer first.
        layer_idx, target_idx, per_image = [], [], []
        for b in range(batch):
            rows = []
            for layer, layer_indices in enumerate(indices):
                src, tgt = layer_indices[b]
                if len(src):
                    rows.append((layer, src.to(device)))
                    layer_idx.append(torch.full((len(src),), layer, dtype=torch.int64))
                    target_idx.append(tgt + offsets[b])
            per_image.append(rows)
        if total == 0 or not layer_idx:
            # Zero losses that keep every output in the graph (DDP needs every gradient).
            graph = mask_embeds + [mask_features] if mask_embeds is not None else pred_masks
            zero = sum(t.sum() for t in graph) * 0.0
            return zero.expand(n_layers), zero.expand(n_layers)
        layer_idx = torch.cat(layer_idx).to(device)
        target_idx = torch.cat(target_idx).to(device)
        if mask_embeds is not None:
            height, width = mask_features.shape[-2:]
            embeds = [torch.cat([mask_embeds[layer][b, src] for layer, src in rows]) if rows
                      else mask_features.new_zeros(0, mask_features.shape[1]) for b, rows in enumerate(per_image)]
            longest = max(len(e) for e in embeds)
            padded = torch.stack([F.pad(e, (0, 0, 0, longest - len(e))) for e in embeds])  # (B, R, C)
            masks = torch.bmm(padded, mask_features.flatten(2))  # one product for every layer
            keep = torch.cat([torch.arange(len(e), device=device) + b * longest for b, e in enumerate(embeds)])
            src_masks = masks.view(batch * longest, height, width)[keep]
        else:
            src_masks = torch.cat([pred_masks[layer][b, src] for b, rows in enumerate(per_image)
                                   for layer, src in rows])
        src_masks = _upcast(src_masks)[:, None]  # (N, 1, H, W)
        all_targets = _pad_and_cat([t["masks"].to(device=device, dtype=torch.float32) for t in targets])
        # Normalised coordinates make prediction and target resolutions irrelevant.
        n_rows = len(src_masks)
        coords = src_masks.new_empty(n_rows, self.num_points, 2)
        point_labels = src_masks.new_empty(n_rows, self.num_points)
        per_row = max(all_targets[0].numel(), int(self.num_points * self.oversample_ratio) * 2)
        block = max(1, min(n_rows, (1 << 20) // per_row))  # temporaries of at most ~4 MB
        with torch.no_grad():
            for start in range(0, n_rows, block):
                part = slice(start, start + block)
                coords[part] = get_uncertain_point_coords_with_randomness(
                    src_masks[part].detach(), calculate_uncertainty, self.num_points, self.oversample_ratio,
                    self.importance_sample_ratio)
                point_labels[part] = point_sample(all_targets[target_idx[part]][:, None].to(src_masks.dtype),
                                                  coords[part], align_corners=False).squeeze(1)
        point_logits = point_sample(src_masks, coords, align_corners=False).squeeze(1)
        bce = F.binary_cross_entropy_with_logits(point_logits, point_labels, reduction="none").mean(1)
        dice = _per_mask_dice(point_logits, point_labels)
        zeros = point_logits.new_zeros(n_layers)
        return (zeros.index_add(0, layer_idx, bce) / num_masks,
                zeros.index_add(0, layer_idx, dice) / num_masks)

    def extra_repr(self) -> str:
        text = (f"num_classes={self.num_classes}, eos_coef={self.eos_coef}, losses={self.losses}, "
                f"num_points={self.num_points}, oversample_ratio={self.oversample_ratio}, "
                f"importance_sample_ratio={self.importance_sample_ratio}")
        if self.droploss_iou > 0:
            text += f", droploss_iou={self.droploss_iou}"
        if self.debias_momentum > 0:
            text += f", debias_momentum={self.debias_momentum}, debias_tau={self.debias_tau}"
        return text


@torch.no_grad()
def max_mask_iou(pred_masks: torch.Tensor, target_masks: torch.Tensor) -> torch.Tensor:
    """Each predicted mask's largest IoU with any target mask.

    Args:
        pred_masks: (..., Q, h, w) mask logits; a pixel is in the mask where the logit is > 0.
        target_masks: (T, H, W) binary masks, T >= 1, area-resampled to (h, w) and thresholded
            at 0.5 (a low-resolution cell is in the mask when at least half of it is covered).
    Returns:
        (..., Q) float IoU in [0, 1]; 0 for an empty prediction.
    """
    h, w = pred_masks.shape[-2:]
    tgt = target_masks.to(device=pred_masks.device, dtype=torch.float32)[None]
    if tgt.shape[-2:] != (h, w):
        tgt = F.interpolate(tgt, size=(h, w), mode="area")
    tgt = (tgt[0] >= 0.5).flatten(1).float()  # (T, h*w)
    pred = (pred_masks > 0).flatten(-2).float()  # (..., Q, h*w)
    inter = pred @ tgt.T  # (..., Q, T)
    union = pred.sum(-1, keepdim=True) + tgt.sum(-1) - inter
    return (inter / union.clamp(min=1)).amax(-1)


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
