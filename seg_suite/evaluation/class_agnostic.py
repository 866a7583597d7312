"""Class-agnostic COCO mask AP of pseudo-masks against ground truth (the CutLER protocol).

All categories are collapsed to one ("object") in both the ground truth and the predictions,
then pycocotools' COCOeval runs unchanged (101-point interpolated AP over IoU 0.50:0.95,
maxDets 1/10/100). Values are percentages, as detectron2 reports them; NaN where COCO gives -1
(no ground truth in that bucket).

Images are matched by ``file_name``, because a pseudo-label file numbers its images itself:
exact relative path first, else a unique path-suffix match ("val/000001.png" vs "000001.png").
A bare prediction list (``[{image_id, segmentation, score}]``, detectron2's results format)
already uses the ground truth's image ids. Every ground-truth image is evaluated; one with no
prediction counts as all misses.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from pathlib import PurePosixPath

import numpy as np

from seg_suite.errors import UserError

_STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def _norm(name: str) -> str:
    return PurePosixPath(str(name).replace("\\", "/")).as_posix().lstrip("./")


def match_images_by_file_name(pred_images: list[dict], gt_images: list[dict]) -> dict[int, int]:
    """Map prediction image ids to ground-truth image ids through ``file_name``.

    Exact (normalised) relative paths first; unmatched names then match a unique ground-truth
    name when one is a path suffix of the other. Raises UserError when nothing matches.
    """
    by_name = {_norm(im["file_name"]): im["id"] for im in gt_images}
    mapping: dict[int, int] = {}
    left = []
    for im in pred_images:
        gid = by_name.get(_norm(im["file_name"]))
        if gid is None:
            left.append(im)
        else:
            mapping[im["id"]] = gid
    for im in left:
        name = _norm(im["file_name"])
        hits = [gid for g, gid in by_name.items() if name.endswith("/" + g) or g.endswith("/" + name)]
        if len(hits) == 1:
            mapping[im["id"]] = hits[0]
    if pred_images and not mapping:
        ex_p = _norm(pred_images[0]["file_name"])
        ex_g = _norm(gt_images[0]["file_name"]) if gt_images else "(none)"
        raise UserError(
            f"no prediction image matches a ground-truth image by file_name (e.g. prediction {ex_p!r}"
            f" vs ground truth {ex_g!r}); run the generator on the same image root as the ground truth"
        )
    return mapping


def _collapse_gt(gt: dict) -> dict:
    anns = []
    for a in gt.get("annotations", []):
        a = dict(a, category_id=1)
        a.setdefault("iscrowd", 0)
        anns.append(a)
    return {"images": gt["images"], "annotations": anns, "categories": [{"id": 1, "name": "object"}]}


def _predictions(pred, gt: dict) -> tuple[list[dict], int]:
    """-> (prediction annotations with ground-truth image ids, number of matched images)."""
    gt_ids = {im["id"] for im in gt["images"]}
    if isinstance(pred, dict):
        mapping = match_images_by_file_name(pred.get("images", []), gt["images"])
        anns = [dict(a, image_id=mapping[a["image_id"]]) for a in pred.get("annotations", [])
                if a["image_id"] in mapping]
        matched = len(set(mapping.values()))
    elif isinstance(pred, list):
        anns = [dict(a) for a in pred if a.get("image_id") in gt_ids]
        if pred and not anns:
            raise UserError("no prediction's image_id exists in the ground truth; a prediction list must use"
                            " the ground truth's image ids (or pass a COCO dict with images[] and file_name)")
        matched = len({a["image_id"] for a in anns})
    else:
        raise UserError(f"predictions must be a COCO dict or a list of results, got {type(pred).__name__}")
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    for a in anns:
        seg = a.get("segmentation")
        if isinstance(seg, dict) and "size" in seg and tuple(seg["size"]) != sizes[a["image_id"]]:
            h, w = sizes[a["image_id"]]
            raise UserError(f"a predicted mask is {seg['size'][0]}x{seg['size'][1]} (h x w) but its image is"
                            f" {h}x{w}; were width and height swapped when the predictions were written?")
        a["category_id"] = 1
        a.setdefault("score", 1.0)
        a.pop("id", None)
    return anns, matched


def evaluate_class_agnostic(pred, gt: dict, iou_type: str = "segm", verbose: bool = False) -> dict:
    """COCO AP of ``pred`` against ``gt`` with every category merged into one.

    Args:
      pred: a COCO dict (images with file_name + annotations with score) or a results list.
      gt: a COCO instances dict. iou_type: "segm" or "bbox". verbose: print COCOeval's summary.
    Returns {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
      "ARl"} in percent, plus "num_images" (ground truth) and "num_matched" (images predicted on).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if iou_type not in ("segm", "bbox"):
        raise UserError(f"iou_type must be 'segm' or 'bbox', got {iou_type!r}")
    if not gt.get("images"):
        raise UserError("the ground truth has no images")
    gt = _collapse_gt(gt)
    anns, matched = _predictions(copy.deepcopy(pred), gt)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if anns:
            coco_dt = coco_gt.loadRes(anns)
        else:  # loadRes cannot take an empty list; an empty result set scores 0
            coco_dt = COCO()
            coco_dt.dataset = {"images": gt["images"], "annotations": [], "categories": gt["categories"]}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        ev.params.imgIds = sorted(im["id"] for im in gt["images"])
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    if verbose:
        print(out.getvalue(), end="")
    stats = {k: (float(v) * 100 if v >= 0 else math.nan) for k, v in zip(_STAT_NAMES, np.asarray(ev.stats))}
    stats["num_images"] = len(gt["images"])
    stats["num_matched"] = matched
    return stats


def format_table(stats: dict) -> str:
    """A two-line table of the headline numbers."""
    keys = ["AP", "AP50", "AP75", "AR1", "AR10", "AR100"]
    head = " ".join(f"{k:>7}" for k in keys)
    row = " ".join(f"{stats[k]:7.2f}" for k in keys)
    return f"{head}\n{row}\n({stats['num_matched']}/{stats['num_images']} ground-truth images have predictions)"
