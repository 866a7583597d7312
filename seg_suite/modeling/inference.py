"""Turning one image's query predictions into semantic, panoptic and instance outputs.

Inputs everywhere: ``mask_cls`` (Q, K+1) class logits (last = no object) and ``mask_pred``
(Q, H, W) mask logits at output resolution. The rules are Mask2Former's
(``maskformer_model.py``: ``semantic_inference``, ``panoptic_inference``, ``instance_inference``),
with one deliberate difference: instance boxes are the tight boxes of the predicted masks
(detectron2 ``BitMasks.get_bounding_boxes`` convention, x2/y2 exclusive), where the reference
writes all-zero boxes.
"""

from typing import Dict, List, Optional, Set, Tuple

import torch
from torch.nn import functional as F

from seg_suite.io.masks import masks_to_boxes  # lives in io so evaluation needs no modeling import


def semantic_inference(mask_cls: torch.Tensor, mask_pred: torch.Tensor) -> torch.Tensor:
    """Per-pixel class scores sum_q p(class | q) * sigmoid(mask_q): (K, H, W)."""
    probs = F.softmax(mask_cls, dim=-1)[..., :-1]
    return torch.einsum("qc,qhw->chw", probs, mask_pred.sigmoid())


def panoptic_inference(mask_cls: torch.Tensor, mask_pred: torch.Tensor, num_classes: int,
                       thing_classes: Optional[Set[int]], object_mask_threshold: float,
                       overlap_threshold: float) -> Tuple[torch.Tensor, List[Dict]]:
    """Panoptic segmentation by masked argmax over confident queries.

    Queries predicting no-object or with class probability <= ``object_mask_threshold`` are
    dropped. Each pixel goes to the query maximising p(class) * sigmoid(mask), and only if that
    mask's probability there is >= 0.5. A segment is kept if the pixels it wins are at least
    ``overlap_threshold`` of its own (>= 0.5) mask; stuff segments of the same class are merged.

    Args:
        thing_classes: contiguous ids of thing classes; None means every class is a thing.
    Returns:
        panoptic_seg (H, W) int32 segment ids (0 = void), and segments_info dicts with
        "id", "isthing", "category_id" (contiguous).
    """
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    probs = mask_pred.sigmoid()
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], probs[keep]
    h, w = probs.shape[-2:]
    panoptic_seg = torch.zeros((h, w), dtype=torch.int32, device=probs.device)
    if cur_masks.shape[0] == 0:
        return panoptic_seg, []
    winner = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)  # (H, W)
    confident = cur_masks >= 0.5
    won = winner[None] == torch.arange(len(cur_masks), device=probs.device).view(-1, 1, 1)
    won_area = won.flatten(1).sum(1).tolist()
    own_area = confident.flatten(1).sum(1).tolist()
    final_area = (won & confident).flatten(1).sum(1).tolist()
    segment_of = [0] * len(cur_masks)
    segments_info: List[Dict] = []
    stuff_segment: Dict[int, int] = {}
    for k, cls in enumerate(cur_classes.tolist()):
        if not (won_area[k] > 0 and own_area[k] > 0 and final_area[k] > 0):
            continue
        if won_area[k] / own_area[k] < overlap_threshold:
            continue
        isthing = thing_classes is None or cls in thing_classes
        if not isthing and cls in stuff_segment:
            segment_of[k] = stuff_segment[cls]
            continue
        segment_id = len(segments_info) + 1
        if not isthing:
            stuff_segment[cls] = segment_id
        segment_of[k] = segment_id
        segments_info.append({"id": segment_id, "isthing": bool(isthing), "category_id": int(cls)})
    table = torch.tensor(segment_of, dtype=torch.int32, device=probs.device)
    winner_confident = confident.gather(0, winner[None]).squeeze(0)
    panoptic_seg = torch.where(winner_confident, table[winner], panoptic_seg)
    return panoptic_seg, segments_info


def instance_inference(mask_cls: torch.Tensor, mask_pred: torch.Tensor, num_classes: int,
                       topk: int, thing_classes: Optional[Set[int]] = None) -> Dict[str, torch.Tensor]:
    """Top-k (query, class) pairs as instances.

    Score = p(class | query) * mean foreground probability inside the binarised mask
    (Mask2Former's mask-quality rescoring). With ``thing_classes`` (panoptic models), stuff
    classes are dropped after the top-k, as in the reference.

    Returns:
        dict with "pred_masks" (N, H, W) float 0/1, "pred_boxes" (N, 4) from the masks, "scores" (N,),
        "pred_classes" (N,) int64, sorted by decreasing class probability.
    """
    probs = F.softmax(mask_cls, dim=-1)[:, :-1]
    k = min(topk, probs.numel())
    cls_scores, flat_idx = probs.flatten().topk(k, sorted=True)
    classes = flat_idx % num_classes
    queries = torch.div(flat_idx, num_classes, rounding_mode="floor")
    if thing_classes is not None:
        is_thing = torch.tensor([int(c) in thing_classes for c in classes.tolist()], dtype=torch.bool,
                                device=classes.device)
        cls_scores, classes, queries = cls_scores[is_thing], classes[is_thing], queries[is_thing]
    logits = mask_pred[queries]
    binary = logits > 0
    fg = binary.flatten(1).float()
    mask_quality = (logits.sigmoid().flatten(1) * fg).sum(1) / (fg.sum(1) + 1e-6)
    return {
        "pred_masks": binary.float(),  # float 0/1, as the reference
        "pred_boxes": masks_to_boxes(binary),
        "scores": cls_scores * mask_quality,
        "pred_classes": classes,
    }
