"""Video object segmentation protocols: DAVIS-2016 J/F, RCF's J-FrameMean, SegTrackv2/FBMS59 IoU.

Follows the DAVIS-2016 benchmark code (github.com/fperazzi/davis, ``python/lib/davis/measures``
and ``dataset/loader.py``):

* J is the Jaccard index of the binary masks, 1 when both are empty (``jaccard.py``).
* F is the boundary F-measure: 1-pixel boundary maps (``seg2bmap``), each dilated by a disk of
  radius ``ceil(0.008 * image diagonal)``, precision/recall of the matches (``f_boundary.py``).
* Per sequence the first and the last annotated frames are excluded (``loader.py::_eval`` pads
  them with NaN); mean, recall (fraction > 0.5) and decay (mean of the first minus the last of
  4 overlapping quantile bins, as in ``utils.py::db_statistics``) use the interior frames.
  The reference casts bin indices to uint8 (wrong past 255 frames); we use int64.
* Global numbers are means over sequences. ``J-FrameMean`` weights each sequence's J-Mean by its
  number of frames, as RCF's ``tools/davis2016-evaluation/evaluation_method.py`` does (it counts
  all annotated frames of a sequence, first and last included; so do we).

The SegTrackv2/FBMS59 protocol (RCF ``tools/STv2-FBMS59-evaluation/eval_tool.py``) scores every
annotated frame (sparse annotations allowed), merges all objects into one foreground, takes the
IoU (NaN when both masks are empty, so such frames are skipped) and pools frames over the whole
dataset.

Masks on disk: DAVIS-2016 ground truth is 0/255; a pixel is foreground when its grey value is
> 127 (255 is *never* void here). Palette PNGs (DAVIS-2017 style, SegTrackv2 instance ids) use
index != 0, which merges objects. Predictions are read the same way; a prediction of another size
is resized to the annotation with nearest-neighbour interpolation, as the RCF tools do.

A sequence folder holding JPEG images and no PNG is a folder of video frames, not masks (DAVIS
keeps them side by side: ``JPEGImages/480p`` and ``Annotations/480p``); given as ``gt_root`` or
``pred_root`` it is refused rather than scored as if its frames were masks.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from seg_suite.errors import UserError

MASK_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


# ---------------------------------------------------------------------------------------------
# Reading masks
# ---------------------------------------------------------------------------------------------
def read_binary_mask(path: str | os.PathLike, threshold: int = 127) -> np.ndarray:
    """Read a mask image as an HxW bool array (grey > ``threshold``; palette index != 0)."""
    try:
        with Image.open(path) as im:
            if im.mode == "P":
                return np.asarray(im) != 0
            arr = np.asarray(im.convert("RGB") if im.mode not in ("L", "1", "I;16", "I") else im)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read mask {path}: {err}") from None
    if arr.dtype == bool:
        return arr.copy()
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    if arr.dtype != np.uint8:  # 16-bit masks: compare on the 8-bit scale
        arr = (arr.astype(np.float64) / max(float(arr.max()), 1.0) * 255.0) if arr.max() > 255 else arr
    return arr > threshold


def _list_masks(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in MASK_EXTENSIONS and not p.name.startswith("."))


def _resize_nearest(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask
    out = cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return out.astype(bool)


# ---------------------------------------------------------------------------------------------
# Per-frame measures
# ---------------------------------------------------------------------------------------------
def jaccard(gt: np.ndarray, pred: np.ndarray) -> float:
    """Region similarity J = |gt & pred| / |gt | pred|; 1.0 when both masks are empty."""
    gt = gt.astype(bool)
    pred = pred.astype(bool)
    union = np.count_nonzero(gt | pred)
    if union == 0:
        return 1.0
    return np.count_nonzero(gt & pred) / union


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary map of a binary mask (HxW bool).

    A pixel is on the boundary when it differs from its right, lower or lower-right neighbour;
    the last row/column compare only along the image edge and the bottom-right corner is never
    a boundary (the boundary sits half a pixel towards the origin, as in the BSDS/DAVIS code).
    """
    seg = mask.astype(bool)
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    bmap[-1, :] = seg[-1, :] ^ east[-1, :]
    bmap[:, -1] = seg[:, -1] ^ south[:, -1]
    bmap[-1, -1] = False
    return bmap


def _disk(radius: int) -> np.ndarray:
    # Same footprint as skimage.morphology.disk: integer offsets with x^2 + y^2 <= r^2.
    r = np.arange(-radius, radius + 1)
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius).astype(np.uint8)


def boundary_tolerance(shape: tuple[int, int], bound_th: float = 0.008) -> int:
    """Dilation radius in pixels: ``bound_th`` itself if >= 1, else ceil(bound_th * diagonal)."""
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def boundary_f(gt: np.ndarray, pred: np.ndarray, bound_th: float = 0.008) -> float:
    """Boundary F-measure between two HxW binary masks (DAVIS ``db_eval_boundary``).

    Precision = fraction of predicted boundary pixels within the tolerance disk of the GT boundary,
    recall = the converse; F = 2PR / (P + R). Both boundaries empty gives F = 1; exactly one empty
    gives F = 0.
    """
    radius = boundary_tolerance(gt.shape, bound_th)
    pred_b = seg2bmap(pred)
    gt_b = seg2bmap(gt)
    kernel = _disk(radius)
    pred_dil = cv2.dilate(pred_b.astype(np.uint8), kernel).astype(bool)
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), kernel).astype(bool)
    n_pred = np.count_nonzero(pred_b)
    n_gt = np.count_nonzero(gt_b)
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    precision = np.count_nonzero(pred_b & gt_dil) / n_pred
    recall = np.count_nonzero(gt_b & pred_dil) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


# ---------------------------------------------------------------------------------------------
# Per-sequence statistics
# ---------------------------------------------------------------------------------------------
def db_statistics(values: np.ndarray, num_bins: int = 4) -> tuple[float, float, float]:
    """(mean, recall, decay) of per-frame values of the *interior* frames (first/last removed).

    Decay splits the frames into ``num_bins`` bins whose edges are
    ``round(linspace(1, n, num_bins + 1)) - 1`` with each bin including its right edge (so the bins
    share their boundary frames, as in the DAVIS code) and returns mean(first) - mean(last).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = float(np.nanmean(values))
        recall = float(np.nanmean(values > 0.5))
        ids = (np.round(np.linspace(1, len(values), num_bins + 1) + 1e-10) - 1).astype(np.int64)
        bins = [values[ids[i] : ids[i + 1] + 1] for i in range(num_bins)]
        decay = float(np.nanmean(bins[0]) - np.nanmean(bins[-1]))
    return mean, recall, decay


@dataclass
class SequenceResult:
    """Per-sequence DAVIS numbers; ``J``/``F`` hold the interior frames' values."""

    name: str
    num_frames: int
    J: list[float] = field(default_factory=list)
    F: list[float] = field(default_factory=list)
    J_mean: float = float("nan")
    J_recall: float = float("nan")
    J_decay: float = float("nan")
    F_mean: float = float("nan")
    F_recall: float = float("nan")
    F_decay: float = float("nan")


def evaluate_sequence(
    name: str, gt_masks: list[np.ndarray], pred_masks: list[np.ndarray], bound_th: float = 0.008
) -> SequenceResult:
    """DAVIS-2016 measures of one sequence (lists of HxW bool masks, same length and order).

    With fewer than 3 frames there is no interior frame; the values are then NaN.
    """
    if len(gt_masks) != len(pred_masks):
        raise ValueError(f"{name}: {len(gt_masks)} annotations but {len(pred_masks)} predictions")
    res = SequenceResult(name=name, num_frames=len(gt_masks))
    for gt, pred in zip(gt_masks[1:-1], pred_masks[1:-1]):
        pred = _resize_nearest(pred, gt.shape)
        res.J.append(jaccard(gt, pred))
        res.F.append(boundary_f(gt, pred, bound_th))
    res.J_mean, res.J_recall, res.J_decay = db_statistics(np.array(res.J))
    res.F_mean, res.F_recall, res.F_decay = db_statistics(np.array(res.F))
    return res


def summarize_davis(results: list[SequenceResult]) -> dict:
    """Global table: means over sequences, plus RCF's frame-weighted J-FrameMean."""
    if not results:
        raise UserError("no sequences to evaluate")

    def mean(key):
        return float(np.nanmean([getattr(r, key) for r in results]))

    weights = np.array([r.num_frames for r in results], dtype=np.float64)
    j_means = np.array([r.J_mean for r in results])
    ok = ~np.isnan(j_means)
    frame_mean = float((j_means[ok] * weights[ok]).sum() / weights[ok].sum()) if ok.any() else float("nan")
    table = {
        "J&F-Mean": (mean("J_mean") + mean("F_mean")) / 2.0,
        "J-Mean": mean("J_mean"),
        "J-Recall": mean("J_recall"),
        "J-Decay": mean("J_decay"),
        "F-Mean": mean("F_mean"),
        "F-Recall": mean("F_recall"),
        "F-Decay": mean("F_decay"),
        "J-FrameMean": frame_mean,
    }
    return {
        "protocol": "davis2016",
        "global": table,
        "sequences": {r.name: {k: v for k, v in asdict(r).items() if k not in ("name",)} for r in results},
    }


# ---------------------------------------------------------------------------------------------
# Folder-level drivers
# ---------------------------------------------------------------------------------------------
FRAME_EXTENSIONS = (".jpg", ".jpeg")  # what video frames are stored as; masks are never lossy JPEGs here


def _frames_instead_of_masks(folder: Path) -> bool:
    """True for a sequence folder holding JPEG frames and no PNG mask: the frames, not the masks."""
    names = [p.suffix.lower() for p in folder.iterdir() if not p.name.startswith(".")]
    return any(ext in FRAME_EXTENSIONS for ext in names) and ".png" not in names


def _sequences(gt_root: Path, sequences: list[str] | None) -> list[str]:
    if not gt_root.is_dir():
        raise UserError(f"annotation folder not found: {gt_root}")
    names = sorted(p.name for p in gt_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if sequences:
        missing = [s for s in sequences if s not in names]
        if missing:
            raise UserError(f"sequences not in {gt_root}: {', '.join(missing)}")
        names = [s for s in names if s in set(sequences)]
    if not names:
        loose = _list_masks(gt_root)
        hint = (f"; it holds {len(loose)} mask files itself, so pass its parent folder (the root of one "
                f"folder per sequence)" if loose else "")
        raise UserError(f"no sequence folders in {gt_root}{hint}")
    for name in names:
        if _frames_instead_of_masks(gt_root / name):
            raise UserError(f"--gt {gt_root} holds JPEG frames (e.g. {name}/), not annotation masks: pass the "
                            f"annotation root of PNG masks (DAVIS/Annotations/480p, not DAVIS/JPEGImages/480p)")
        if not _list_masks(gt_root / name):
            raise UserError(f"annotation sequence {gt_root / name} holds no mask files "
                            f"({', '.join(MASK_EXTENSIONS)})")
    return names


def _check_pred_root(pred_root: Path, names: list[str]) -> None:
    """Refuse a prediction root that is missing or is the frames folder (JPEG frames, no PNG masks)."""
    if not pred_root.is_dir():
        raise UserError(f"prediction folder not found: {pred_root}")
    for name in names:
        if (pred_root / name).is_dir() and _frames_instead_of_masks(pred_root / name):
            raise UserError(f"--pred {pred_root} holds JPEG frames (e.g. {name}/), not predicted masks: pass the "
                            f"folder of PNG masks the method wrote (e.g. motion-masks' OUT_masks)")


def _pred_path(pred_root: Path, seq: str, gt_path: Path) -> Path | None:
    for ext in (".png", gt_path.suffix, ".jpg"):
        cand = pred_root / seq / (gt_path.stem + ext)
        if cand.is_file():
            return cand
    return None


def _load_pairs(gt_root: Path, pred_root: Path, seq: str, threshold: int, allow_missing: bool):
    gts, preds = [], []
    for gt_path in _list_masks(gt_root / seq):
        gt = read_binary_mask(gt_path)
        p = _pred_path(pred_root, seq, gt_path)
        if p is None:
            if not allow_missing:
                raise UserError(f"missing prediction for {seq}/{gt_path.name} under {pred_root}")
            pred = np.zeros_like(gt)
        else:
            pred = _resize_nearest(read_binary_mask(p, threshold), gt.shape)
        gts.append(gt)
        preds.append(pred)
    return gts, preds


def evaluate_davis(
    gt_root: str | os.PathLike,
    pred_root: str | os.PathLike,
    sequences: list[str] | None = None,
    pred_threshold: int = 127,
    bound_th: float = 0.008,
    allow_missing: bool = False,
    progress: bool = False,
) -> dict:
    """DAVIS-2016 evaluation of ``pred_root/<seq>/<frame>.png`` against ``gt_root/<seq>/<frame>.png``.

    ``gt_root`` is e.g. ``DAVIS/Annotations/480p``. Every annotation frame needs a prediction with
    the same stem unless ``allow_missing`` (then it counts as an empty mask).
    """
    from tqdm import tqdm

    gt_root, pred_root = Path(gt_root), Path(pred_root)
    names = _sequences(gt_root, sequences)
    _check_pred_root(pred_root, names)
    results = []
    for seq in tqdm(names, desc="davis", disable=not progress):
        gts, preds = _load_pairs(gt_root, pred_root, seq, pred_threshold, allow_missing)
        results.append(evaluate_sequence(seq, gts, preds, bound_th))
    return summarize_davis(results)


def pooled_iou(gt_masks: list[np.ndarray], pred_masks: list[np.ndarray]) -> list[float]:
    """Per-frame IoU for the SegTrackv2/FBMS59 protocol (NaN when both masks are empty)."""
    out = []
    for gt, pred in zip(gt_masks, pred_masks):
        union = np.count_nonzero(gt | pred)
        out.append(float("nan") if union == 0 else np.count_nonzero(gt & pred) / union)
    return out


def evaluate_pooled(
    gt_root: str | os.PathLike,
    pred_root: str | os.PathLike,
    sequences: list[str] | None = None,
    pred_threshold: int = 127,
    allow_missing: bool = False,
    progress: bool = False,
) -> dict:
    """SegTrackv2/FBMS59 protocol: IoU over all annotated frames pooled across sequences."""
    from tqdm import tqdm

    gt_root, pred_root = Path(gt_root), Path(pred_root)
    names = _sequences(gt_root, sequences)
    _check_pred_root(pred_root, names)
    per_seq, pooled = {}, []
    for seq in tqdm(names, desc="pooled-iou", disable=not progress):
        gts, preds = _load_pairs(gt_root, pred_root, seq, pred_threshold, allow_missing)
        ious = pooled_iou(gts, preds)
        pooled.extend(ious)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            per_seq[seq] = {"IoU": float(np.nanmean(ious)) if ious else float("nan"), "num_frames": len(ious)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        total = float(np.nanmean(pooled)) if pooled else float("nan")
    return {"protocol": "pooled_iou", "global": {"IoU": total, "num_frames": len(pooled)}, "sequences": per_seq}
