"""Refining coarse pseudo-masks (MaskCut, motion grouping, self-training) with SAM.

For every coarse mask of an image, SAM is prompted with the mask's box, positive points
inside the mask and negative points just outside it; all prompts of the image go through
the mask decoder as one batch, on one image embedding::

    predictor = SamPredictor(load_sam("vit_b", ckpt))
    results = refine_masks(predictor, image, coarse_masks, RefineParams())   # list[Refined]

Mask choice and keep rule: of SAM's four output masks per prompt (the single-mask output
and the three "multimask" outputs, as the mask decoder computes them all anyway) the one
with the highest IoU to the coarse mask is chosen; it replaces the coarse mask when that
IoU is at least ``iou_thresh`` (default 0.5), otherwise the coarse mask is kept.
The IoU check stops SAM from swapping an object for a part or for the background when the
prompts are ambiguous. Prompt sampling is our own design (there is no published recipe for
refining MaskCut masks with SAM); its defaults are explained at :class:`RefineParams`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seg_suite.params import Params, at_least, between, param


OURS = "seg_suite's choice"  # there is no published recipe for prompting SAM with coarse masks


@dataclass(frozen=True)
class RefineParams(Params):
    """Prompt and keep-rule settings (our choices, see the module docstring).

    num_positive: points inside the mask, picked by farthest-point sampling on the mask's
        distance transform: the most interior pixel first, then pixels far from both the
        boundary and the points already chosen. Two cover the two halves of elongated or
        two-part objects without over-constraining SAM.
    num_negative: points on a ring outside the mask, spread by farthest-point sampling.
    ring_inner, ring_outer: the ring's distance from the mask, as fractions of
        sqrt(mask area) (at least 2 and 4 pixels). Coarse masks from 8-pixel ViT patches are
        off by a few pixels at their border, so negatives sit a little away from it.
    iou_thresh: SAM's mask is kept when its IoU with the coarse mask is at least this
        (default 0.5).
    """

    num_positive: int = param(2, "positive points per mask: its most interior pixel, then farthest-point sampling",
                              OURS, at_least(0), metavar="K")
    num_negative: int = param(2, "negative points per mask, spread on a ring outside it", OURS, at_least(0),
                              metavar="K")
    ring_inner: float = param(0.05, "the ring starts F * sqrt(mask area) pixels (at least 2) outside the mask", OURS,
                              at_least(0), metavar="F")
    ring_outer: float = param(0.10, "the ring ends F * sqrt(mask area) pixels (at least 4) outside the mask", OURS,
                              at_least(0), metavar="F")
    iou_thresh: float = param(0.5, "keep SAM's mask when its IoU with the coarse mask is >= T, else the coarse mask",
                              "seg_suite's rule", between(0, 1), metavar="T")

    def check(self) -> None:
        if self.ring_inner > self.ring_outer:
            self.refuse("ring_inner", f"at most ring_outer ({self.ring_outer:g})")


@dataclass
class Refined:
    """The result for one coarse mask: the mask kept, and why."""

    mask: np.ndarray  # bool HxW
    refined_by: str  # "sam" or "coarse"
    refine_iou: float | None  # IoU of SAM's best candidate with the coarse mask (None: not prompted)
    sam_score: float | None  # SAM's predicted IoU of that candidate


# ---------------------------------------------------------------------- prompts
def _farthest_points(candidates: np.ndarray, cap: np.ndarray, first: int, k: int) -> list[int]:
    """Greedy farthest-point sampling over ``candidates`` (Nx2 yx), each distance capped by ``cap``.

    ``first`` is the index of the first point. Remaining ties go to the lowest index, so it is
    deterministic.
    """
    chosen = [first]
    nearest = np.hypot(*(candidates - candidates[first]).T)
    for _ in range(1, min(k, len(candidates))):
        score = np.minimum(nearest, cap)
        top = score.max()
        if top <= 0:
            break
        # among equally good candidates (a capped plateau) the one farthest from the others
        nxt = int(np.argmax(np.where(score >= top, nearest, -1.0)))
        chosen.append(nxt)
        nearest = np.minimum(nearest, np.hypot(*(candidates - candidates[nxt]).T))
    return chosen


def positive_points(mask: np.ndarray, k: int) -> np.ndarray:
    """Up to ``k`` (x, y) pixel points inside ``mask``: interior first, then spread out. Shape (n, 2)."""
    from scipy import ndimage

    if k == 0 or not mask.any():
        return np.zeros((0, 2), np.float32)
    # padded so that the image border counts as boundary: no prompt in the corner of a truncated object
    inside = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    ys, xs = np.nonzero(mask)
    depth = inside[ys, xs]
    # capping by the depth keeps later points away from the boundary as well as from each other
    # first: the deepest pixel; among equally deep ones (a ridge), the one nearest the centroid
    off_centre = np.hypot(ys - ys.mean(), xs - xs.mean())
    first = int(np.argmin(np.where(depth >= depth.max(), off_centre, np.inf)))
    chosen = _farthest_points(np.stack([ys, xs], 1).astype(np.float64), depth, first, k)
    return np.stack([xs[chosen], ys[chosen]], 1).astype(np.float32)


def negative_points(mask: np.ndarray, k: int, inner: float, outer: float,
                    anchor: np.ndarray | None = None) -> np.ndarray:
    """Up to ``k`` (x, y) points on a ring around ``mask`` (see :class:`RefineParams`). Shape (n, 2).

    The first is the ring pixel farthest from ``anchor`` (x, y; default the mask's centroid).
    """
    from scipy import ndimage

    if k == 0 or not mask.any() or mask.all():
        return np.zeros((0, 2), np.float32)
    scale = float(np.sqrt(mask.sum()))
    lo, hi = max(2.0, inner * scale), max(4.0, outer * scale)
    outside = ndimage.distance_transform_edt(~mask)
    ys, xs = np.nonzero((outside >= lo) & (outside <= hi))
    if ys.size == 0:  # the ring falls outside the image: take the farthest pixels within reach
        ys, xs = np.nonzero(outside == outside.max())
    if anchor is None:
        my, mx = np.nonzero(mask)
        anchor = np.array([mx.mean(), my.mean()])
    first = int(np.argmax(np.hypot(xs - anchor[0], ys - anchor[1])))
    chosen = _farthest_points(np.stack([ys, xs], 1).astype(np.float64), np.full(ys.size, np.inf), first, k)
    return np.stack([xs[chosen], ys[chosen]], 1).astype(np.float32)


def mask_box_xyxy(mask: np.ndarray) -> np.ndarray:
    """The mask's box as SAM takes it: (x0, y0, x1, y1) with exclusive ends, in pixels."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return np.array([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], np.float32)


SAMPLING_SIDE = 128


def build_prompts(masks: list[np.ndarray], params: RefineParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched prompts for non-empty masks: boxes (B, 4) xyxy, points (B, P, 2) xy, labels (B, P).

    Labels: 1 positive, 0 negative, -1 padding (SAM's "not a point" embedding), so masks with
    fewer points share one batch.
    """
    boxes, points, labels = [], [], []
    for mask in masks:
        box = mask_box_xyxy(mask)
        # Sample in a window around the box, wide enough to hold the whole ring: the points are
        # the same as on the full image, and distance transforms stay cheap on large photos.
        # Masks wider than SAMPLING_SIDE pixels (on average) are sampled on a grid of that many
        # steps across: a prompt point needs no sub-percent precision.
        stride = max(1, int(np.sqrt(mask.sum())) // SAMPLING_SIDE)
        reach = int(np.ceil(max(4.0 * stride, params.ring_outer * np.sqrt(mask.sum())))) + stride
        x0, y0 = max(0, int(box[0]) - reach), max(0, int(box[1]) - reach)
        window = mask[y0 : int(box[3]) + reach : stride, x0 : int(box[2]) + reach : stride]
        offset = np.array([x0, y0], np.float32)
        pos = positive_points(window, params.num_positive)
        neg = negative_points(window, params.num_negative, params.ring_inner, params.ring_outer,
                              anchor=pos[0] if len(pos) else None)
        pos, neg = pos * stride + offset, neg * stride + offset
        boxes.append(box)
        points.append(np.concatenate([pos, neg]))
        labels.append(np.concatenate([np.ones(len(pos)), np.zeros(len(neg))]))
    width = max([len(p) for p in points] + [1])  # at least one point so the tensors are never empty
    pts = np.zeros((len(masks), width, 2), np.float32)
    lab = np.full((len(masks), width), -1, np.int64)
    for i, (p, l) in enumerate(zip(points, labels)):
        pts[i, : len(p)], lab[i, : len(l)] = p, l
    return np.asarray(boxes, np.float32).reshape(-1, 4), pts, lab


# ------------------------------------------------------------------------ SAM
def predict_all_outputs(predictor, boxes: np.ndarray, points: np.ndarray, labels: np.ndarray):
    """SAM's four masks per prompt in one decoder call, on the predictor's current image.

    Returns masks (B, 4, H, W) bool at the original image size and predicted IoUs (B, 4),
    both torch tensors on the model's device. Output 0 is SAM's single-mask output, 1-3
    its multimask outputs (segment-anything's ``MaskDecoder.predict_masks``).
    """
    import torch

    with torch.no_grad():
        model, device = predictor.model, predictor.device
        size = predictor.original_size
        box_t = predictor.transform.apply_boxes_torch(torch.as_tensor(boxes, dtype=torch.float, device=device), size)
        pts_t = predictor.transform.apply_coords_torch(torch.as_tensor(points, dtype=torch.float, device=device), size)
        lab_t = torch.as_tensor(labels, dtype=torch.int, device=device)
        sparse, dense = model.prompt_encoder(points=(pts_t, lab_t), boxes=box_t, masks=None)
        low_res, iou = model.mask_decoder.predict_masks(
            image_embeddings=predictor.features, image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
        )
        masks = model.postprocess_masks(low_res, predictor.input_size, predictor.original_size) > model.mask_threshold
        return masks, iou


def choose_and_keep(coarse: torch.Tensor, candidates: torch.Tensor, scores: torch.Tensor,
                    iou_thresh: float) -> list[tuple[int, float, bool]]:
    """For each prompt, the candidate closest to its coarse mask and whether SAM's mask is kept.

    coarse: (B, H, W) bool; candidates: (B, C, H, W) bool; scores: (B, C). Returns
    ``(index, iou, keep_sam)`` per prompt; ties go to the lowest index.
    """
    import torch

    inter = (candidates & coarse[:, None]).flatten(2).sum(-1).double()
    union = (candidates | coarse[:, None]).flatten(2).sum(-1).double()
    ious = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter)).cpu().numpy()
    out = []
    for row in ious:
        best = int(np.argmax(row))
        iou = float(row[best])
        out.append((best, iou, iou >= iou_thresh))
    return out


def refine_masks(predictor, image: np.ndarray, masks: list[np.ndarray], params: RefineParams,
                 prompts_per_batch: int = 64, embed: bool = True) -> list[Refined]:
    """Refine each bool HxW ``mask`` of the HxWx3 uint8 RGB ``image``; one result per mask.

    The image is embedded once (skip with ``embed=False`` if the predictor already holds it);
    all prompts go through the decoder together, ``prompts_per_batch`` at a time only to bound
    memory (64, segment-anything's ``points_per_batch``: one batch for MaskCut's <= 3 masks).
    Empty coarse masks are kept as they are (``refine_iou`` None).
    """
    import torch

    h, w = image.shape[:2]
    for m in masks:
        if m.shape != (h, w):
            raise ValueError(f"mask of shape {m.shape} for an image of {h}x{w}")
    results: list[Refined | None] = [Refined(m.astype(bool), "coarse", None, None) if not m.any() else None
                                     for m in masks]
    todo = [i for i, r in enumerate(results) if r is None]
    if not todo:
        return results
    if embed:
        predictor.set_image(image, image_format="RGB")
    for start in range(0, len(todo), prompts_per_batch):
        idx = todo[start : start + prompts_per_batch]
        coarse_np = [masks[i].astype(bool) for i in idx]
        boxes, points, labels = build_prompts(coarse_np, params)
        candidates, scores = predict_all_outputs(predictor, boxes, points, labels)
        coarse = torch.as_tensor(np.stack(coarse_np), device=candidates.device)
        for j, (best, iou, keep) in enumerate(choose_and_keep(coarse, candidates, scores, params.iou_thresh)):
            score = float(scores[j, best])
            chosen = candidates[j, best].cpu().numpy() if keep else coarse_np[j]
            results[idx[j]] = Refined(chosen, "sam" if keep else "coarse", iou, score)
    return results
