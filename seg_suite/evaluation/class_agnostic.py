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

Both inputs are checked before anything is scored, so that a file of the wrong kind is refused
with one line instead of giving an all-zero table: the ground truth must be a COCO instance file
whose images have sizes and whose masks fit them; the predictions must be a COCO instance file
or a result list whose entries carry what ``iou_type`` scores (a panoptic file is named as such),
that shares at least one image with the ground truth, and whose masks fit the ground-truth image
they are scored on (checked before pycocotools decodes anything).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
from pathlib import Path, PurePosixPath

import numpy as np

from seg_suite.errors import UserError
from seg_suite.io.coco import check_coco, check_results
from seg_suite.io.masks import MaskFormatError, check_segmentation

_STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def _norm(name: str) -> str:
    return PurePosixPath(str(name).replace("\\", "/")).as_posix().lstrip("./")


def match_images_by_file_name(pred_images: list[dict], gt_images: list[dict],
                              source: str = "the predictions") -> dict[int, int]:
    """Map prediction image ids to ground-truth image ids through ``file_name``.

    Exact (normalised) relative paths first; unmatched names then match a unique ground-truth
    name when one is a path suffix of the other. Raises UserError when nothing matches
    (``source`` names the predictions in the message).
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
            f"{source}: no prediction image matches a ground-truth image by file_name (e.g. prediction {ex_p!r}"
            f" vs ground truth {ex_g!r}); run the generator on the same image root as the ground truth"
        )
    return mapping


def _gt_area(ann: dict, image: dict, iou_type: str) -> float:
    """The area COCOeval bins by, for a ground-truth annotation written without one: its mask's (checked
    by :func:`check_ground_truth` for ``segm``), or for ``bbox``, where masks are not checked, its box's."""
    from pycocotools import mask as mask_utils

    seg = ann.get("segmentation")
    if iou_type == "bbox" or seg is None:
        return float(ann["bbox"][2] * ann["bbox"][3])
    h, w = image["height"], image["width"]
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    elif isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, h, w)
    else:
        rle = {"size": [h, w], "counts": seg["counts"].encode("ascii")}
    return float(mask_utils.area(rle))


def _collapse_gt(gt: dict, iou_type: str = "segm") -> dict:
    by_id = {im["id"]: im for im in gt["images"]}
    anns = []
    for a in gt.get("annotations", []):
        a = dict(a, category_id=1)
        a.setdefault("iscrowd", 0)
        if "area" not in a:
            a["area"] = _gt_area(a, by_id[a["image_id"]], iou_type)
        anns.append(a)
    return {"images": gt["images"], "annotations": anns, "categories": [{"id": 1, "name": "object"}]}


def _check_kind(anns: list, source: str, what: str, iou_type: str) -> None:
    """Refuse annotations that do not carry what ``iou_type`` scores (naming a panoptic file as such)."""
    if any(isinstance(a, dict) and "segments_info" in a for a in anns):
        raise UserError(f"{source} is a COCO panoptic file (annotations hold 'segments_info'); this scores COCO "
                        f"instance masks: give the instances JSON, or use `seg-suite evaluate --task panoptic`")
    field = "segmentation" if iou_type == "segm" else "bbox"
    missing = next((a for a in anns if a.get(field) is None), None)
    if missing is not None:
        name = f"{what} annotation {missing['id']}" if "id" in missing else f"{what} annotation"
        raise UserError(f"{source}: {name} of image {missing['image_id']} has no '{field}', which "
                        f"--iou-type {iou_type} scores")


def check_ground_truth(gt, source: str = "the ground truth", iou_type: str = "segm") -> dict:
    """A COCO instance file to score against: sizes on every image, masks (for segm) that fit them."""
    check_coco(gt, source, "ground-truth file", check_masks=iou_type == "segm")
    if not gt["images"]:
        raise UserError(f"{source} lists no images")
    unsized = next((im for im in gt["images"] if im.get("height") is None or im.get("width") is None), None)
    if unsized is not None:
        raise UserError(f"{source}: image {unsized['id']} has no height/width; ground truth needs both")
    _check_kind(gt["annotations"], source, "a ground-truth", iou_type)
    return gt


def _relativise(pred_images: list[dict], images_root) -> list[dict]:
    """Absolute prediction file names under ``images_root`` made relative to it (others as written)."""
    root = Path(images_root).resolve()
    out = []
    for im in pred_images:
        p = Path(im["file_name"])
        if p.is_absolute() and p.resolve().is_relative_to(root):
            im = dict(im, file_name=os.fspath(p.resolve().relative_to(root)))
        out.append(im)
    return out


def _predictions(pred, gt: dict, source: str, iou_type: str, images_root=None) -> tuple[list[dict], int]:
    """-> (prediction annotations with ground-truth image ids, number of matched images), checked."""
    gt_ids = {im["id"] for im in gt["images"]}
    if isinstance(pred, dict):
        check_coco(pred, source, "prediction file")
        if not pred["images"]:
            raise UserError(f"{source} lists no images, so it shares none with the ground truth")
        images = _relativise(pred["images"], images_root) if images_root else pred["images"]
        _check_kind(pred["annotations"], source, "a predicted", iou_type)
        mapping = match_images_by_file_name(images, gt["images"], source)
        anns = [dict(a, image_id=mapping[a["image_id"]]) for a in pred["annotations"] if a["image_id"] in mapping]
        matched = len(set(mapping.values()))
    elif isinstance(pred, list):
        check_results(pred, source)
        _check_kind(pred, source, "a predicted", iou_type)
        anns = [dict(a) for a in pred if a["image_id"] in gt_ids]
        if pred and not anns:
            raise UserError(f"no result in {source} is for an image id of the ground truth (e.g. "
                            f"{pred[0]['image_id']}); a prediction list must use the ground truth's image ids "
                            f"(or pass a COCO dict with images[] and file_name)")
        matched = len({a["image_id"] for a in anns})
    else:
        raise UserError(f"{source} is neither a COCO instance file nor a list of results (found a JSON "
                        f"{type(pred).__name__})")
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    for a in anns:
        seg = a.get("segmentation")
        if seg is not None:
            h, w = sizes[a["image_id"]]
            size = seg.get("size") if isinstance(seg, dict) else None
            if isinstance(size, list) and size == [w, h] and h != w:
                raise UserError(f"a predicted mask is {size[0]}x{size[1]} (h x w) but its image is {h}x{w}; "
                                f"were width and height swapped when the predictions were written?")
            try:  # pycocotools trusts sizes and counts: check against the image scored on, before it decodes
                check_segmentation(seg, h, w)
            except MaskFormatError as err:
                raise UserError(f"{source}: a predicted mask for ground-truth image {a['image_id']}: {err}") from None
        a["category_id"] = 1
        a.setdefault("score", 1.0)
        a.pop("id", None)
    return anns, matched


def evaluate_class_agnostic(pred, gt: dict, iou_type: str = "segm", verbose: bool = False, *,
                            pred_source: str = "the predictions", gt_source: str = "the ground truth",
                            images_root=None) -> dict:
    """COCO AP of ``pred`` against ``gt`` with every category merged into one.

    Args:
      pred: a COCO dict (images with file_name + annotations with score) or a results list.
      gt: a COCO instances dict. iou_type: "segm" or "bbox". verbose: print COCOeval's summary.
      pred_source, gt_source: how error messages name the two inputs (their paths, for a CLI).
      images_root: absolute prediction file names under this folder are made relative to it
        before matching.
    Returns {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
      "ARl"} in percent, plus "num_images" (ground truth) and "num_matched" (images predicted on).
    Raises UserError (one line) for inputs that are not what is scored (see the module docstring).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if iou_type not in ("segm", "bbox"):
        raise UserError(f"iou_type must be 'segm' or 'bbox', got {iou_type!r}")
    check_ground_truth(gt, gt_source, iou_type)
    gt = _collapse_gt(gt, iou_type)
    anns, matched = _predictions(copy.deepcopy(pred), gt, pred_source, iou_type, images_root)
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
