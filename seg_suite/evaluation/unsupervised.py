"""Unsupervised evaluation: map clusters to classes, then score instances, semantics and panoptics.

A cluster -> class mapping is fitted on a confusion matrix ``conf[K clusters, C classes]``:

- ``"hungarian"`` (1:1, STEGO ``src/utils.py`` ``UnsupervisedMetrics``): ``linear_sum_assignment``
  maximising the matched count. With more clusters than classes, the clusters left over are
  matched again by further assignments against all classes, round after round, until every
  cluster with data has a class (``extra="assign"``, the default; each round gives a class at most
  one more cluster), or they stay unmapped (``extra="none"``: STEGO's -1, always wrong).
- ``"majority"`` (many-to-one, U2Seg's protocol without its threshold): each cluster takes the
  class it overlaps most.

A cluster without any data in the fit set stays unmapped (-1) under both. The mapping is fitted on
a SPLIT DISJOINT from the scored one by default (:func:`split_fit_score`); fitting on the scored
images (as U2Seg and STEGO do) must be asked for, and every result names its ``fit`` split.

Metrics under a mapping (all in percent):

- semantic mIoU and pixel accuracy, STEGO's definitions: ``IoU_c = tp / (tp + fp + fn)`` averaged
  over the classes seen in the ground truth or the prediction; unmapped and unlabelled predicted
  pixels count as wrong. COCO-Stuff-27 ground truth comes from the 182 fine labels through
  :data:`COCOSTUFF_FINE_TO_27` (STEGO ``src/data.py``);
- instance mask and box AP: category ids remapped, then pycocotools' COCOeval (unmapped clusters'
  masks are dropped); the mapping's confusion counts each predicted mask once, for the ground-truth
  mask it overlaps most when their IoU is at least 0.5;
- PQ/SQ/RQ (all, things, stuff) with :mod:`seg_suite.evaluation.panoptic` (panopticapi's rules);
  thing clusters map to thing classes (matched-segment counts, as for instances) and stuff
  clusters to stuff classes (pixel counts); pixels of an unmapped segment become VOID.

Each task is an adapter run by the one loop of :func:`seg_suite.evaluation.fit_score.fit_and_score`
(split, fit the mapping, score). Class-agnostic AP/AP50/AR is :func:`seg_suite.evaluation.class_agnostic.evaluate_class_agnostic`.
Needs no detectron2.

Inputs are checked for being what the task scores before anything is computed, and refused with
one line otherwise: instance files must be COCO instance files with a category and a mask per
annotation (masks checked against their image before pycocotools decodes them; a panoptic file is
named as such); semantic inputs must be folders of single-channel PNGs; panoptic inputs must be
COCO panoptic files with ``segments_info`` whose PNG names stay inside their folder.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from pathlib import Path, PurePosixPath

import numpy as np

from seg_suite.errors import UserError
from seg_suite.evaluation.fit_score import fit_and_score
from seg_suite.evaluation.fit_split import FitSplit, HeldOut, ScoredSplit, SeparateSplit, split_fit_score  # noqa: F401
from seg_suite.evaluation.mapping import (PROTOCOLS, UNMAPPED, fit_mapping, hungarian_mapping,  # noqa: F401
                                         majority_mapping, remap)
from seg_suite.io.coco import check_coco
from seg_suite.io.masks import MaskFormatError, check_segmentation
from seg_suite.io.paths import PathEscapeError, resolve_under, safe_relative

IGNORE = 255
MATCH_IOU = 0.5  # a predicted instance "is" a ground-truth one at IoU >= 0.5 (COCO's AP50 threshold)

# COCO-Stuff 182 fine label (0-based PNG value) -> 27 coarse classes, as STEGO's CocoSeg.
# Fine labels 0..90 are things (mapped to the 12 thing supercategories 0..11), 91..181 stuff (12..26).
COCOSTUFF_FINE_TO_27 = np.array(
    [9] + [11] * 8 + [8] * 6 + [7] * 10 + [6] * 8 + [10] * 10 + [5] * 8 + [2] * 10 + [3] * 10
    + [0] * 6 + [1] * 6 + [4] * 8
    + [17, 17, 22, 20, 20, 22, 15, 25, 16, 13, 12, 12, 17, 17, 23, 15, 15, 17, 15, 21, 15, 25, 13, 13, 13,
       13, 13, 22, 26, 14, 14, 15, 22, 21, 21, 24, 20, 22, 15, 17, 16, 15, 22, 24, 21, 17, 25, 16, 21, 17,
       22, 16, 21, 21, 25, 21, 26, 21, 24, 20, 17, 14, 21, 26, 15, 23, 20, 21, 24, 15, 24, 22, 25, 15, 20,
       17, 17, 22, 14, 18, 18, 18, 18, 18, 18, 18, 26, 26, 19, 19, 24],
    dtype=np.int64,
)
COCOSTUFF_27_NAMES = (
    "electronic", "appliance", "food", "furniture", "indoor", "kitchen", "accessory", "animal", "outdoor",
    "person", "sports", "vehicle", "ceiling", "floor", "food-stuff", "furniture-stuff", "rawmaterial",
    "textile", "wall", "window", "building", "ground", "plant", "sky", "solid", "structural", "water",
)


def cocostuff_to_27(label: np.ndarray) -> np.ndarray:
    """COCO-Stuff fine label map (0..181, 255 unlabelled) -> 27-class map (0..26, 255)."""
    label = np.asarray(label).astype(np.int64)
    out = np.full(label.shape, IGNORE, np.int64)
    ok = (label >= 0) & (label < len(COCOSTUFF_FINE_TO_27))
    out[ok] = COCOSTUFF_FINE_TO_27[label[ok]]
    return out


# --------------------------------------------------------------- semantic maps
def semantic_confusion(pred: np.ndarray, gt: np.ndarray, num_clusters: int, num_classes: int) -> np.ndarray:
    """[K + 1, C] pixel counts; row K collects predicted pixels outside 0..K-1 (unlabelled).

    gt pixels outside 0..C-1 (255) are not counted, as in STEGO.
    """
    pred = np.asarray(pred).astype(np.int64).ravel()
    gt = np.asarray(gt).astype(np.int64).ravel()
    if pred.shape != gt.shape:
        raise UserError(f"prediction has {pred.size} pixels but the ground truth {gt.size}")
    keep = (gt >= 0) & (gt < num_classes)
    pred, gt = pred[keep], gt[keep]
    pred = np.where((pred >= 0) & (pred < num_clusters), pred, num_clusters)
    return np.bincount(pred * num_classes + gt, minlength=(num_clusters + 1) * num_classes).reshape(
        num_clusters + 1, num_classes)


def mapped_class_confusion(conf: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """[K(+1), C] cluster confusion -> [C, C + 1] (gt class, mapped class; last column = unmapped)."""
    conf = np.asarray(conf, dtype=np.int64)
    k, c = conf.shape[0], conf.shape[1]
    full = np.full(k, UNMAPPED, np.int64)
    full[: len(mapping)] = mapping[:k]
    out = np.zeros((c, c + 1), np.int64)
    for cluster in range(k):
        col = full[cluster] if full[cluster] >= 0 else c
        out[:, col] += conf[cluster]
    return out


def semantic_metrics(conf: np.ndarray, mapping: np.ndarray, class_names=None) -> dict:
    """mIoU and pixel accuracy (percent, STEGO's definitions) of a [K(+1), C] confusion under ``mapping``."""
    cc = mapped_class_confusion(conf, mapping)
    c = cc.shape[0]
    tp = np.diag(cc[:, :c]).astype(np.float64)
    gt_c = cc.sum(1).astype(np.float64)
    pred_c = cc[:, :c].sum(0).astype(np.float64)
    denom = gt_c + pred_c - tp
    seen = denom > 0
    iou = np.full(c, np.nan)
    iou[seen] = tp[seen] / denom[seen]
    total = gt_c.sum()
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    return {"mIoU": 100 * float(np.nanmean(iou)) if seen.any() else 0.0,
            "pAcc": 100 * float(tp.sum() / total) if total else 0.0,
            "IoU": {n: (100 * float(v) if not math.isnan(v) else None) for n, v in zip(names, iou)}}


def _read_png(path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except (OSError, Image.DecompressionBombError) as err:
        raise UserError(f"cannot read label map {path}: {err}") from None


def png_index(folder) -> dict[str, Path]:
    """Relative path without extension -> path, for every .png under ``folder``."""
    folder = Path(folder)
    if folder.is_file():
        raise UserError(f"{folder} is a file; --task semantic scores folders of PNG label maps (for a COCO JSON "
                        f"use --task instances or --task panoptic)")
    if not folder.is_dir():
        raise UserError(f"label folder not found: {folder}")
    index = {PurePosixPath(p.relative_to(folder).with_suffix("").as_posix()).as_posix(): p
             for p in sorted(folder.rglob("*.png"))}
    if not index:
        raise UserError(f"{folder} holds no PNG label maps; --task semantic scores folders of single-channel PNGs")
    return index


class _SemanticTask:
    """Cluster maps against class maps, paired by relative path (the adapter of :func:`evaluate_semantic`)."""

    def __init__(self, pred_dir, gt_dir, fit_pred_dir, fit_gt_dir, separate, num_clusters, num_classes,
                 cocostuff27, class_names, progress):
        self.cocostuff27, self.class_names, self.progress = cocostuff27, class_names, progress
        self.scored = self._pairs(pred_dir, gt_dir)
        self.fit_pairs = self._pairs(fit_pred_dir, fit_gt_dir) if separate else {}
        if num_clusters is None or num_classes is None:  # one pass to size the matrices
            max_p, max_g = 0, 0
            for pp, gp in list(self.scored.values()) + list(self.fit_pairs.values()):
                pred, gt = self.load_pair(pp, gp)
                max_p = max(max_p, int(pred[pred != IGNORE].max(initial=0)))
                max_g = max(max_g, int(gt[gt != IGNORE].max(initial=0)))
            num_clusters = num_clusters or max_p + 1
            num_classes = num_classes or (27 if cocostuff27 else max_g + 1)
        self.num_clusters, self.num_classes = num_clusters, num_classes

    def load_pair(self, pred_path, gt_path):
        pred, gt = _read_png(pred_path), _read_png(gt_path)
        if pred.ndim != 2 or gt.ndim != 2:
            raise UserError(f"label maps must be single-channel PNGs: {pred_path}, {gt_path}")
        if pred.shape != gt.shape:
            raise UserError(f"{pred_path} is {pred.shape[1]}x{pred.shape[0]}, {gt_path} {gt.shape[1]}x{gt.shape[0]}")
        return pred, (cocostuff_to_27(gt) if self.cocostuff27 else gt)

    @staticmethod
    def _pairs(pdir, gdir):
        p, g = png_index(pdir), png_index(gdir)
        common = sorted(set(p) & set(g))
        if not common:
            raise UserError(f"no PNG in {pdir} has a ground-truth PNG of the same name in {gdir}")
        return {k: (p[k], g[k]) for k in common}

    def _confusion(self, pairs, desc):
        from tqdm import tqdm

        conf = np.zeros((self.num_clusters + 1, self.num_classes), np.int64)
        for pp, gp in tqdm(pairs, desc=desc, disable=not self.progress):
            conf += semantic_confusion(*self.load_pair(pp, gp), self.num_clusters, self.num_classes)
        return conf

    def items(self):
        return self.scored

    def separate_items(self):
        return list(self.fit_pairs.values())

    def fit(self, items, protocol, extra, separate):
        conf = self._confusion(items, "fit mapping")[:self.num_clusters]
        self.confusion = confusion_record(conf, range(self.num_clusters), range(self.num_classes))
        return fit_mapping(conf, protocol, extra)

    def score(self, mapping, names):
        conf = self._confusion([self.scored[n] for n in names], "score")
        names_of = self.class_names or (COCOSTUFF_27_NAMES if self.cocostuff27 else None)
        record = mapping_dict(mapping, range(self.num_clusters), range(self.num_classes))
        return semantic_metrics(conf, mapping, names_of), record, len(names)


def evaluate_semantic(pred_dir, gt_dir, *, num_clusters: int | None = None, num_classes: int | None = None,
                      protocol: str = "hungarian", fit: FitSplit = HeldOut(), fit_pred_dir=None,
                      fit_gt_dir=None, cocostuff27: bool = False, class_names=None, extra: str = "assign",
                      progress: bool = False) -> dict:
    """mIoU / pixel accuracy of cluster maps (PNG values 0..K-1, 255 unlabelled) against class maps.

    Files pair up by relative path without extension. ``cocostuff27``: the ground truth holds COCO-Stuff's
    182 fine labels, scored as 27 classes. Returns the metrics plus ``mapping``, ``protocol`` and ``fit``.
    """
    task = _SemanticTask(pred_dir, gt_dir, fit_pred_dir, fit_gt_dir, isinstance(fit, SeparateSplit),
                         num_clusters, num_classes, cocostuff27, class_names, progress)
    return fit_and_score(task, fit, protocol, extra)


def confusion_record(conf: np.ndarray, cluster_ids, class_ids) -> dict:
    """The [K, C] confusion the mapping was fitted on, with the files' ids (JSON-friendly; for reports)."""
    return {"clusters": [str(k) for k in cluster_ids], "classes": [str(c) for c in class_ids],
            "counts": np.asarray(conf, dtype=np.int64).tolist()}


def mapping_dict(mapping: np.ndarray, cluster_ids, class_ids) -> dict[str, int | None]:
    """{cluster id: class id or None} with the ids of the files (JSON-friendly)."""
    class_ids = list(class_ids)
    return {str(k): (class_ids[m] if m >= 0 else None) for k, m in zip(cluster_ids, mapping)}


# ------------------------------------------------------------------- instances
def _by_image(coco: dict) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {im["id"]: [] for im in coco["images"]}
    for a in coco["annotations"]:
        out.setdefault(a["image_id"], []).append(a)
    return out


def check_instance_file(coco, source: str = "the predictions", role: str = "prediction") -> dict:
    """A COCO instance file ``--task instances`` can score: every annotation with an integer category
    and a mask that fits its image; ground truth also needs its categories. One-line UserError else."""
    check_coco(coco, source, f"{role} file", check_masks=True)
    if any("segments_info" in a for a in coco["annotations"]):
        raise UserError(f"{source} is a COCO panoptic file (annotations hold 'segments_info'); score it with "
                        f"--task panoptic, or give the instances JSON")
    for a in coco["annotations"]:
        cat = a.get("category_id")
        if a.get("segmentation") is None or not isinstance(cat, int) or isinstance(cat, bool):
            raise UserError(f"{source}: annotation {a.get('id')} of image {a['image_id']} needs a 'segmentation' "
                            f"and an integer 'category_id' to be scored as an instance")
    if role == "ground-truth" and not coco.get("categories"):
        raise UserError(f"{source} lists no categories; ground truth needs its classes")
    return coco


def _check_pairs(pred: dict, gt: dict, match: dict[int, int], source: str) -> None:
    """Predicted masks are scored at their ground-truth image's size: refuse pairs of different sizes."""
    p_size = {im["id"]: (im.get("height"), im.get("width")) for im in pred["images"]}
    g_size = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    for pid, gid in match.items():
        ph, pw = p_size[pid]
        if ph is not None and (ph, pw) != g_size[gid]:
            gh, gw = g_size[gid]
            raise UserError(f"{source}: image {pid} is {pw}x{ph} but the ground-truth image of the same file_name "
                            f"is {gw}x{gh}; predictions must be made on the ground truth's images")


def _rles(anns: list[dict], h: int, w: int) -> list:
    """pycocotools RLEs of ``anns`` at the image size ``h`` x ``w`` (each checked before it is built)."""
    from pycocotools import mask as mask_utils

    rles = []
    for a in anns:
        seg = a["segmentation"]
        try:
            check_segmentation(seg, h, w)
        except MaskFormatError as err:
            raise UserError(f"annotation {a.get('id')} of image {a['image_id']}: {err}") from None
        if isinstance(seg, list):
            rles.append(mask_utils.merge(mask_utils.frPyObjects(seg, h, w)))
        elif isinstance(seg["counts"], list):
            rles.append(mask_utils.frPyObjects(seg, h, w))
        else:
            rles.append({"size": [h, w], "counts": seg["counts"].encode("ascii")})
    return rles


def instance_confusion(pred: dict, gt: dict, image_pairs: list[tuple[int, int]], cluster_index: dict,
                       class_index: dict, iou: float = MATCH_IOU) -> np.ndarray:
    """[K, C] counts: each predicted mask adds 1 at (its cluster, the class of the ground-truth mask it
    overlaps most) when that IoU >= ``iou``. ``image_pairs``: (pred image id, gt image id)."""
    from pycocotools import mask as mask_utils

    conf = np.zeros((len(cluster_index), len(class_index)), np.int64)
    p_by, g_by = _by_image(pred), _by_image(gt)
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    for pid, gid in image_pairs:
        p = [a for a in p_by.get(pid, []) if a["category_id"] in cluster_index]
        g = [a for a in g_by.get(gid, []) if not a.get("iscrowd", 0) and a["category_id"] in class_index]
        if not p or not g:
            continue
        h, w = sizes[gid]
        ious = np.asarray(mask_utils.iou(_rles(p, h, w), _rles(g, h, w), [0] * len(g))).reshape(len(p), len(g))
        best = ious.argmax(1)
        for i, j in enumerate(best):
            if ious[i, j] >= iou:
                conf[cluster_index[p[i]["category_id"]], class_index[g[j]["category_id"]]] += 1
    return conf


def coco_ap(pred_anns: list[dict], gt: dict, image_ids: list[int], iou_type: str) -> dict:
    """Class-aware COCO AP (percent) of result annotations with gt image ids, on ``image_ids`` only."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from pycocotools import mask as mask_utils

    names = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    gt_anns = []
    for a in gt["annotations"]:
        a = dict(a, iscrowd=a.get("iscrowd", 0))
        if "area" not in a or "bbox" not in a:  # COCOeval needs both; derive them from the (checked) mask
            rle = _rles([a], *sizes[a["image_id"]])[0]
            a.setdefault("area", float(mask_utils.area(rle)))
            a.setdefault("bbox", mask_utils.toBbox(rle).tolist())
        gt_anns.append(a)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": gt["images"], "categories": gt["categories"], "annotations": gt_anns}
        coco_gt.createIndex()
        if not pred_anns:
            return {k: 0.0 for k in names}
        coco_dt = coco_gt.loadRes([dict(a) for a in pred_anns])
        ev = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: (100 * float(v) if v >= 0 else math.nan) for k, v in zip(names, ev.stats[:6])}


class _InstanceTask:
    """A clustered COCO file against ground truth, images paired by ``file_name`` (the adapter of
    :func:`evaluate_instances`). Items are ground-truth file names -> (pred id, gt id), or None for an
    image without a prediction (it still counts in the split)."""

    def __init__(self, pred, gt, fit_pred, fit_gt, src):
        from seg_suite.evaluation.class_agnostic import match_images_by_file_name

        self.pred, self.gt, self.fit_pred, self.fit_gt, self.src = pred, gt, fit_pred, fit_gt, src
        self.cluster_ids = sorted({c["id"] for c in pred.get("categories", [])}
                                  | {a["category_id"] for a in pred["annotations"]})
        self.class_ids = [c["id"] for c in gt["categories"]]
        self.cluster_index = {k: i for i, k in enumerate(self.cluster_ids)}
        self.class_index = {k: i for i, k in enumerate(self.class_ids)}
        unsized = next((im for im in gt["images"] if im.get("height") is None or im.get("width") is None), None)
        if unsized is not None:
            raise UserError(f"{src['gt']}: image {unsized['id']} has no height/width; ground truth needs both")
        self.match = match_images_by_file_name(pred["images"], gt["images"], src["pred"])  # pred id -> gt id
        _check_pairs(pred, gt, self.match, src["pred"])
        self.gt_name = {im["id"]: im["file_name"] for im in gt["images"]}
        if len(set(self.gt_name.values())) != len(self.gt_name):
            raise UserError(f"{src['gt']}: a file_name appears more than once; images pair up by file_name")

    def items(self):
        pair_of = {self.gt_name[g]: (p, g) for p, g in self.match.items()}
        return {im["file_name"]: pair_of.get(im["file_name"]) for im in self.gt["images"]}

    def separate_items(self):
        from seg_suite.evaluation.class_agnostic import match_images_by_file_name

        if self.fit_pred is None or self.fit_gt is None:
            raise UserError("a separate fit split needs both its predictions and its ground truth")
        fmatch = match_images_by_file_name(self.fit_pred["images"], self.fit_gt["images"], self.src["fit_pred"])
        _check_pairs(self.fit_pred, self.fit_gt, fmatch, self.src["fit_pred"])
        return list(fmatch.items())

    def fit(self, items, protocol, extra, separate):
        pred, gt = (self.fit_pred, self.fit_gt) if separate else (self.pred, self.gt)
        pairs = [pair for pair in items if pair is not None]
        conf = instance_confusion(pred, gt, pairs, self.cluster_index, self.class_index)
        self.confusion = confusion_record(conf, self.cluster_ids, self.class_ids)
        return fit_mapping(conf, protocol, extra)

    def score(self, mapping, names):
        from pycocotools import mask as mask_utils

        gt, src = self.gt, self.src
        score_set = set(names)
        self.score_set = score_set
        self.score_ids = [im["id"] for im in gt["images"] if im["file_name"] in score_set]
        g_size = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
        anns = []
        for a in self.pred["annotations"]:
            g = self.match.get(a["image_id"])
            m = mapping[self.cluster_index[a["category_id"]]]
            if g is None or self.gt_name[g] not in score_set or m < 0:
                continue
            bbox = a.get("bbox")
            if bbox is None:  # not every pseudo-label writer stores boxes: the mask's own box
                bbox = mask_utils.toBbox(_rles([a], *g_size[g])[0]).tolist()
            score = a.get("score", 1.0)
            if not isinstance(score, (int, float)) or isinstance(score, bool):
                raise UserError(f"{src['pred']}: annotation {a.get('id')} has score {score!r}, not a number")
            anns.append({"image_id": g, "category_id": self.class_ids[m], "segmentation": a["segmentation"],
                         "bbox": bbox, "score": float(score)})
        metrics = {"segm": coco_ap(anns, gt, self.score_ids, "segm"),
                   "bbox": coco_ap(anns, gt, self.score_ids, "bbox")}
        return metrics, mapping_dict(mapping, self.cluster_ids, self.class_ids), len(self.score_ids)

    def class_agnostic(self) -> dict:
        """Class-agnostic AP/AP50/AR of the predictions on the scored images (after :meth:`score`)."""
        from seg_suite.evaluation.class_agnostic import evaluate_class_agnostic

        pred, gt, score_set = self.pred, self.gt, self.score_set
        scored_gt = dict(gt, images=[im for im in gt["images"] if im["file_name"] in score_set],
                         annotations=[a for a in gt["annotations"] if a["image_id"] in set(self.score_ids)])
        keep = {p for p, g in self.match.items() if self.gt_name[g] in score_set}
        scored_pred = dict(pred, images=[im for im in pred["images"] if im["id"] in keep],
                           annotations=[a for a in pred["annotations"] if a["image_id"] in keep])
        return evaluate_class_agnostic(scored_pred, scored_gt, pred_source=self.src["pred"],
                                       gt_source=self.src["gt"])


def evaluate_instances(pred: dict, gt: dict, *, protocol: str = "hungarian", fit: FitSplit = HeldOut(),
                       fit_pred: dict | None = None, fit_gt: dict | None = None, extra: str = "assign",
                       class_agnostic: bool = True, sources: dict[str, str] | None = None) -> dict:
    """Instance segm/bbox AP of a clustered COCO file (category = cluster) under a fitted mapping,
    plus class-agnostic AP/AP50/AR on the scored images. Images pair up by ``file_name``.

    ``sources`` names the inputs in error messages (keys ``pred``, ``gt``, ``fit_pred``, ``fit_gt``;
    their paths, for a CLI). Every input is checked first (:func:`check_instance_file`)."""
    src = {"pred": "the predictions", "gt": "the ground truth", "fit_pred": "the fit predictions",
           "fit_gt": "the fit ground truth", **(sources or {})}
    check_instance_file(pred, src["pred"], "prediction")
    check_instance_file(gt, src["gt"], "ground-truth")
    if fit_pred is not None:
        check_instance_file(fit_pred, src["fit_pred"], "prediction")
    if fit_gt is not None:
        check_instance_file(fit_gt, src["fit_gt"], "ground-truth")
    task = _InstanceTask(pred, gt, fit_pred, fit_gt, src)
    res = fit_and_score(task, fit, protocol, extra)
    if class_agnostic:
        res["class_agnostic"] = task.class_agnostic()
    return res


# -------------------------------------------------------------------- panoptic
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_panoptic(doc, path, role: str = "prediction") -> dict:
    """A COCO panoptic file ``--task panoptic`` can score; one-line UserError naming what is wrong.

    Needs ``annotations`` (each: integer ``image_id``, a PNG ``file_name`` that stays inside the PNG
    folder, ``segments_info`` of integer ``id``/``category_id``; ground truth also ``area`` and
    ``iscrowd``) and ``categories`` with integer ids; image ids appear once.
    """
    if not (isinstance(doc, dict) and isinstance(doc.get("annotations"), list)
            and isinstance(doc.get("categories"), list)):
        raise UserError(f"{path} is not a COCO panoptic file: expected an object with 'annotations' and "
                        f"'categories' lists")
    if not all(isinstance(c, dict) and _is_int(c.get("id")) for c in doc["categories"]):
        raise UserError(f"{path}: 'categories' must be a list of objects with an integer 'id'")
    seen = set()
    for ann in doc["annotations"]:
        if isinstance(ann, dict) and "segmentation" in ann and "segments_info" not in ann:
            raise UserError(f"{path} is a COCO instance file (annotations hold 'segmentation'); score it with "
                            f"--task instances, or give the panoptic JSON")
        if not (isinstance(ann, dict) and _is_int(ann.get("image_id")) and isinstance(ann.get("file_name"), str)
                and isinstance(ann.get("segments_info"), list)):
            raise UserError(f"{path}: every panoptic annotation needs an integer 'image_id', a 'file_name' and a "
                            f"'segments_info' list (found {ann!r:.120})")
        try:
            safe_relative(ann["file_name"], "file_name")
        except PathEscapeError as err:
            raise UserError(f"{path}: image {ann['image_id']}: {err}") from None
        if ann["image_id"] in seen:
            raise UserError(f"{path}: image id {ann['image_id']} has more than one panoptic annotation")
        seen.add(ann["image_id"])
        needed = ("id", "category_id", "area", "iscrowd") if role == "ground-truth" else ("id", "category_id")
        for seg in ann["segments_info"]:
            if not (isinstance(seg, dict) and all(_is_int(seg.get(k)) for k in needed)):
                raise UserError(f"{path}: a segment of image {ann['image_id']} lacks an integer "
                                f"{'/'.join(needed)} (found {seg!r:.120})")
    images = doc.get("images")
    if images is not None and not (isinstance(images, list) and all(
            isinstance(im, dict) and _is_int(im.get("id")) and isinstance(im.get("file_name"), str) for im in images)):
        raise UserError(f"{path}: 'images' must be a list of objects with an integer 'id' and a 'file_name'")
    return doc


def _load_panoptic(json_path, folder=None, role: str = "prediction") -> tuple[dict, str]:
    """A COCO panoptic JSON, checked, and its PNG folder (default: the JSON path without ``.json``)."""
    from seg_suite.io.files import load_json

    doc = check_panoptic(load_json(json_path, f"panoptic {role} file"), json_path, role)
    folder = folder or os.path.splitext(os.fspath(json_path))[0]
    if not os.path.isdir(folder):
        raise UserError(f"panoptic PNG folder not found: {folder}")
    return doc, os.fspath(folder)


def _panoptic_items(pred: dict, gt: dict) -> dict[str, tuple]:
    """gt image file_name -> (gt ann, pred ann) for the images in both (paired by file_name)."""
    from seg_suite.evaluation.class_agnostic import match_images_by_file_name

    p_images = pred.get("images") or [{"id": a["image_id"], "file_name": a["file_name"]} for a in pred["annotations"]]
    g_images = gt.get("images") or [{"id": a["image_id"], "file_name": a["file_name"]} for a in gt["annotations"]]
    match = match_images_by_file_name(p_images, g_images)
    p_ann = {a["image_id"]: a for a in pred["annotations"]}
    g_ann = {a["image_id"]: a for a in gt["annotations"]}
    g_name = {im["id"]: im["file_name"] for im in g_images}
    return {g_name[g]: (g_ann[g], p_ann[p]) for p, g in match.items() if p in p_ann and g in g_ann}


def _pan_pair(gt_ann, pred_ann, gt_dir, pred_dir):
    from seg_suite.evaluation.panoptic import read_panoptic_png

    out = []
    for ann, folder in ((gt_ann, gt_dir), (pred_ann, pred_dir)):
        from PIL import Image

        path = resolve_under(folder, ann["file_name"], "file_name")
        try:
            out.append(read_panoptic_png(os.fspath(path)))
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise UserError(f"cannot read panoptic PNG {path}: {' '.join(str(err).split())}") from None
    return tuple(out)


def panoptic_confusion(items, gt_dir, pred_dir, thing_clusters, stuff_clusters, thing_classes, stuff_classes):
    """(things [Kt, Ct] matched-segment counts, stuff [Ks, Cs] pixel counts) over ``items``."""
    ti, si = {k: i for i, k in enumerate(thing_clusters)}, {k: i for i, k in enumerate(stuff_clusters)}
    tc, sc = {k: i for i, k in enumerate(thing_classes)}, {k: i for i, k in enumerate(stuff_classes)}
    things = np.zeros((len(ti), len(tc)), np.int64)
    stuff = np.zeros((len(si), len(sc)), np.int64)
    for gt_ann, pred_ann in items:
        pan_gt, pan_pred = _pan_pair(gt_ann, pred_ann, gt_dir, pred_dir)
        if pan_gt.shape != pan_pred.shape:
            raise UserError(f"panoptic prediction {pred_ann['file_name']} is {pan_pred.shape}, "
                            f"ground truth {pan_gt.shape}")
        g_seg = {int(s["id"]): s for s in gt_ann["segments_info"]}
        p_seg = {int(s["id"]): s for s in pred_ann["segments_info"]}
        joint = pan_gt.astype(np.uint64) * (1 << 32) + pan_pred.astype(np.uint64)
        labels, counts = np.unique(joint, return_counts=True)
        g_area = dict(zip(*np.unique(pan_gt, return_counts=True)))
        p_area = dict(zip(*np.unique(pan_pred, return_counts=True)))
        best: dict[int, tuple[float, int]] = {}
        for lab, n in zip(labels.tolist(), counts.tolist()):
            g, p = lab >> 32, lab & 0xFFFFFFFF
            if g not in g_seg or p not in p_seg:
                continue
            gc, pc = g_seg[g]["category_id"], p_seg[p]["category_id"]
            if pc in si and gc in sc:
                stuff[si[pc], sc[gc]] += n
            if pc in ti and gc in tc and not g_seg[g].get("iscrowd", 0):
                iou = n / (p_area[p] + g_area[g] - n)
                if iou > best.get(p, (0.0, 0))[0]:
                    best[p] = (iou, gc)
        for p, (iou, gc) in best.items():
            if iou >= MATCH_IOU:
                things[ti[p_seg[p]["category_id"]], tc[gc]] += 1
    return things, stuff


class _PanopticTask:
    """A clustered panoptic file against ground truth, paired by PNG name (the adapter of
    :func:`evaluate_panoptic`); thing and stuff clusters get separate mappings."""

    def __init__(self, pred_json, gt_json, pred_dir, gt_dir, fit_files, progress):
        self.pred_json, self.gt_json, self.fit_files, self.progress = pred_json, gt_json, fit_files, progress
        self.pred, self.pred_dir = _load_panoptic(pred_json, pred_dir, "prediction")
        self.gt, self.gt_dir = _load_panoptic(gt_json, gt_dir, "ground-truth")
        self.t_clu = [c["id"] for c in self.pred["categories"] if c.get("isthing", 1)]
        self.s_clu = [c["id"] for c in self.pred["categories"] if not c.get("isthing", 1)]
        self.t_cls = [c["id"] for c in self.gt["categories"] if c.get("isthing", 1)]
        self.s_cls = [c["id"] for c in self.gt["categories"] if not c.get("isthing", 1)]
        self.scored = _panoptic_items(self.pred, self.gt)

    def items(self):
        return self.scored

    def separate_items(self):
        fit_pred_json, fit_gt_json, fit_pred_dir, fit_gt_dir = self.fit_files
        fpred, self.fit_pred_dir = _load_panoptic(fit_pred_json, fit_pred_dir, "prediction")
        fgt, self.fit_gt_dir = _load_panoptic(fit_gt_json, fit_gt_dir, "ground-truth")
        return list(_panoptic_items(fpred, fgt).values())

    def fit(self, items, protocol, extra, separate):
        from tqdm import tqdm

        pdir, gdir = (self.fit_pred_dir, self.fit_gt_dir) if separate else (self.pred_dir, self.gt_dir)
        things, stuff = panoptic_confusion(tqdm(items, desc="fit mapping", disable=not self.progress), gdir, pdir,
                                           self.t_clu, self.s_clu, self.t_cls, self.s_cls)
        both = np.zeros((len(self.t_clu) + len(self.s_clu), len(self.t_cls) + len(self.s_cls)), np.int64)
        both[:len(self.t_clu), :len(self.t_cls)] = things  # matched segments
        both[len(self.t_clu):, len(self.t_cls):] = stuff  # pixels
        self.confusion = confusion_record(both, [*self.t_clu, *self.s_clu], [*self.t_cls, *self.s_cls])
        cls_of = {}
        for clusters, classes, conf in ((self.t_clu, self.t_cls, things), (self.s_clu, self.s_cls, stuff)):
            m = fit_mapping(conf, protocol, extra) if len(clusters) and len(classes) else np.full(len(clusters), -1)
            cls_of.update({k: (classes[j] if j >= 0 else None) for k, j in zip(clusters, m)})
        return cls_of

    def score(self, cls_of, names):
        from tqdm import tqdm

        from seg_suite.evaluation.panoptic import PQStat, pq_image, summarize

        categories = {c["id"]: c for c in self.gt["categories"]}
        stat = PQStat()
        for name in tqdm(names, desc="PQ", disable=not self.progress):
            gt_ann, pred_ann = self.scored[name]
            pan_gt, pan_pred = _pan_pair(gt_ann, pred_ann, self.gt_dir, self.pred_dir)
            pan_pred = pan_pred.copy()
            segs = []
            for s in pred_ann["segments_info"]:
                c = cls_of.get(s["category_id"])
                if c is None:
                    pan_pred[pan_pred == int(s["id"])] = 0  # unmapped: VOID, neither match nor false positive
                else:
                    segs.append({"id": int(s["id"]), "category_id": c})
            present = set(np.unique(pan_pred).tolist())
            segs = [s for s in segs if s["id"] in present]
            try:
                stat += pq_image(pan_gt, gt_ann["segments_info"], pan_pred, segs, categories, gt_ann["image_id"])
            except ValueError as err:  # a JSON that does not describe its PNG
                raise UserError(f"{self.pred_json} or {self.gt_json} disagrees with its PNGs: {err}") from None
        res = summarize(stat, categories)
        out = {k: {m: 100 * v if m != "n" else v for m, v in res[k].items()} for k in ("All", "Things", "Stuff")}
        return out, {str(k): v for k, v in cls_of.items()}, len(names)


def evaluate_panoptic(pred_json, gt_json, *, pred_dir=None, gt_dir=None, protocol: str = "hungarian",
                      fit: FitSplit = HeldOut(), fit_pred_json=None, fit_gt_json=None, fit_pred_dir=None,
                      fit_gt_dir=None, extra: str = "assign", progress: bool = False) -> dict:
    """PQ/SQ/RQ (all, things, stuff; percent) of a clustered panoptic prediction under fitted mappings
    (thing clusters -> thing classes, stuff clusters -> stuff classes), with panopticapi's rules."""
    task = _PanopticTask(pred_json, gt_json, pred_dir, gt_dir,
                         (fit_pred_json, fit_gt_json, fit_pred_dir, fit_gt_dir), progress)
    return fit_and_score(task, fit, protocol, extra)
