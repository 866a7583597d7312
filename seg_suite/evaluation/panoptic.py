"""Panoptic quality (PQ, SQ, RQ), computed exactly as COCO's panopticapi ``pq_compute``.

panopticapi (github.com/cocodataset/panopticapi, ``panopticapi/evaluation.py``) is not on the
package registry, so the metric is implemented here and pinned by hand-computed cases
(tests/evaluation/test_panoptic_eval.py). The rules it reproduces:

- Segment ids are decoded from RGB PNGs as ``id = R + 256 G + 256^2 B``; id ``VOID`` (0) is
  unlabelled. Pixel pairs are counted with ``gt_id * OFFSET + pred_id`` (OFFSET = 256^3).
- A ground-truth segment's area is the ``area`` field of the ground-truth JSON (not recounted); a
  predicted segment's area is its pixel count in the prediction PNG.
- A (gt, pred) pair of the same category, gt not crowd, is a true positive when
  ``IoU = inter / (area_pred + area_gt - inter - pred_on_void) > 0.5``: the predicted pixels that
  fall on VOID are taken out of the union. IoU > 0.5 makes the matching unique.
- Unmatched non-crowd gt segments are false negatives. An unmatched predicted segment is a false
  positive unless more than half of it lies on VOID plus the crowd region of its own category (the
  last crowd segment of that category in ``segments_info`` order, as panopticapi keeps one).
- Per category: ``PQ = sum IoU / (TP + FP/2 + FN/2)``, ``SQ = sum IoU / TP``,
  ``RQ = TP / (TP + FP/2 + FN/2)``; categories with TP + FP + FN = 0 are left out of the averages.

Deliberate differences from panopticapi: an average over zero categories (e.g. "Stuff" on a
things-only dataset) is 0.0 with ``n = 0`` instead of a ZeroDivisionError; inconsistent inputs
raise ``ValueError`` (panopticapi: ``KeyError``) with the same checks.

The detectron2 ``PanopticEvaluator`` at the bottom needs detectron2; the metric itself does not.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from PIL import Image
from tqdm import tqdm

from seg_suite.io.files import atomic_write_json, load_json
from seg_suite.io.panoptic import id_to_rgb, rgb_to_id

try:  # the metric works without detectron2; only the evaluator class needs it
    from detectron2.evaluation import DatasetEvaluator
except ImportError:  # pragma: no cover - exercised in the light environment
    DatasetEvaluator = object

OFFSET = 256 * 256 * 256
VOID = 0

logger = logging.getLogger(__name__)


@dataclass
class PQStatCat:
    """Sums for one category: matched IoU, true positives, false positives, false negatives."""

    iou: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __iadd__(self, other: "PQStatCat") -> "PQStatCat":
        self.iou += other.iou
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        return self


class PQStat:
    """Per-category PQ sums; add the stats of several images (or ranks) with ``+=``."""

    def __init__(self):
        self.pq_per_cat: dict[int, PQStatCat] = defaultdict(PQStatCat)

    def __getitem__(self, category_id: int) -> PQStatCat:
        return self.pq_per_cat[category_id]

    def __iadd__(self, other: "PQStat") -> "PQStat":
        for cat, stat in other.pq_per_cat.items():
            self.pq_per_cat[cat] += stat
        return self

    def pq_average(self, categories: dict, isthing: bool | None):
        """Average PQ/SQ/RQ over ``categories`` ({id: {"isthing": 0|1, ...}}).

        ``isthing``: True (things only), False (stuff only) or None (all).
        Returns ``({"pq", "sq", "rq", "n"}, {category_id: {"pq", "sq", "rq"}})``.
        """
        pq = sq = rq = 0.0
        n = 0
        per_class = {}
        for cat_id, info in categories.items():
            if isthing is not None and (info["isthing"] == 1) != isthing:
                continue
            s = self.pq_per_cat.get(cat_id, PQStatCat())
            if s.tp + s.fp + s.fn == 0:
                per_class[cat_id] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
                continue
            n += 1
            denom = s.tp + 0.5 * s.fp + 0.5 * s.fn
            pq_c = s.iou / denom
            sq_c = s.iou / s.tp if s.tp != 0 else 0.0
            rq_c = s.tp / denom
            per_class[cat_id] = {"pq": pq_c, "sq": sq_c, "rq": rq_c}
            pq += pq_c
            sq += sq_c
            rq += rq_c
        if n == 0:
            return {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}, per_class
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class


def pq_image(
    pan_gt: np.ndarray,
    gt_segments: list[dict],
    pan_pred: np.ndarray,
    pred_segments: list[dict],
    categories: dict | None = None,
    image_id=None,
) -> PQStat:
    """PQ sums for one image.

    Args:
        pan_gt, pan_pred: HxW integer segment-id maps (0 = VOID), e.g. from :func:`rgb_to_id`.
        gt_segments: the gt ``segments_info`` (``id``, ``category_id``, ``iscrowd``, ``area``).
        pred_segments: the predicted ``segments_info`` (``id``, ``category_id``); areas are
            counted from ``pan_pred``.
        categories: known category ids (dict or set); a predicted unknown category is an error.
    """
    if pan_gt.shape != pan_pred.shape:
        raise ValueError(
            f"image {image_id}: prediction is {pan_pred.shape[:2]}, ground truth {pan_gt.shape[:2]}"
        )
    stat = PQStat()
    gt_segms = {int(s["id"]): s for s in gt_segments}
    pred_segms = {int(s["id"]): dict(s) for s in pred_segments}

    # Predicted areas from the PNG, with panopticapi's consistency checks.
    labels, counts = np.unique(pan_pred, return_counts=True)
    unseen = set(pred_segms)
    for label, count in zip(labels.tolist(), counts.tolist()):
        if label not in pred_segms:
            if label == VOID:
                continue
            raise ValueError(f"image {image_id}: segment {label} is in the PNG but not in segments_info")
        pred_segms[label]["area"] = count
        unseen.discard(label)
        if categories is not None and pred_segms[label]["category_id"] not in categories:
            raise ValueError(
                f"image {image_id}: segment {label} has unknown category_id "
                f"{pred_segms[label]['category_id']}"
            )
    if unseen:
        raise ValueError(f"image {image_id}: segments {sorted(unseen)} are in segments_info but not in the PNG")

    # Intersections of every (gt id, pred id) pair in one pass.
    joint = pan_gt.astype(np.uint64) * OFFSET + pan_pred.astype(np.uint64)
    labels, counts = np.unique(joint, return_counts=True)
    inter = {(int(l // OFFSET), int(l % OFFSET)): int(c) for l, c in zip(labels, counts)}

    gt_matched, pred_matched = set(), set()
    for (gt_id, pred_id), n in inter.items():
        if gt_id not in gt_segms or pred_id not in pred_segms:
            continue
        g, p = gt_segms[gt_id], pred_segms[pred_id]
        if g["iscrowd"] == 1 or g["category_id"] != p["category_id"]:
            continue
        union = p["area"] + g["area"] - n - inter.get((VOID, pred_id), 0)
        iou = n / union
        if iou > 0.5:
            stat[g["category_id"]].tp += 1
            stat[g["category_id"]].iou += iou
            gt_matched.add(gt_id)
            pred_matched.add(pred_id)

    crowd_by_cat = {}
    for gt_id, g in gt_segms.items():
        if gt_id in gt_matched:
            continue
        if g["iscrowd"] == 1:
            crowd_by_cat[g["category_id"]] = gt_id  # the last one wins, as in panopticapi
            continue
        stat[g["category_id"]].fn += 1

    for pred_id, p in pred_segms.items():
        if pred_id in pred_matched:
            continue
        ignored = inter.get((VOID, pred_id), 0)
        if p["category_id"] in crowd_by_cat:
            ignored += inter.get((crowd_by_cat[p["category_id"]], pred_id), 0)
        if ignored / p["area"] > 0.5:
            continue
        stat[p["category_id"]].fp += 1
    return stat


def summarize(stat: PQStat, categories: dict) -> dict:
    """panopticapi's result dict: ``{"All"|"Things"|"Stuff": {pq, sq, rq, n}, "per_class": ...}``."""
    results = {}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        results[name], per_class = stat.pq_average(categories, isthing)
        if name == "All":
            results["per_class"] = per_class
    return results


def format_results(results: dict) -> str:
    """A small table in percent, like panopticapi prints."""
    lines = [f"{'':10s}| {'PQ':>5s}  {'SQ':>5s}  {'RQ':>5s} {'N':>5s}", "-" * 38]
    for name in ("All", "Things", "Stuff"):
        r = results[name]
        lines.append(f"{name:10s}| {100 * r['pq']:5.1f}  {100 * r['sq']:5.1f}  {100 * r['rq']:5.1f} {r['n']:5d}")
    return "\n".join(lines)


def read_panoptic_png(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return rgb_to_id(np.asarray(im.convert("RGB")))


def pq_compute(gt_json_file: str, pred_json_file: str, gt_folder: str | None = None,
               pred_folder: str | None = None, progress: bool = True) -> dict:
    """File-level PQ with panopticapi's interface and result format.

    Folders default to the JSON path without ``.json``. Every gt image needs a prediction.
    """
    gt_json = load_json(gt_json_file, "panoptic ground-truth file")
    pred_json = load_json(pred_json_file, "panoptic prediction file")
    gt_folder = gt_folder or gt_json_file[: -len(".json")]
    pred_folder = pred_folder or pred_json_file[: -len(".json")]
    for folder in (gt_folder, pred_folder):
        if not os.path.isdir(folder):
            raise ValueError(f"panoptic segmentation folder {folder} does not exist")
    categories = {c["id"]: c for c in gt_json["categories"]}
    preds = {a["image_id"]: a for a in pred_json["annotations"]}
    stat = PQStat()
    for gt_ann in tqdm(gt_json["annotations"], desc="PQ", disable=not progress):
        pred_ann = preds.get(gt_ann["image_id"])
        if pred_ann is None:
            raise ValueError(f"no prediction for the image with id {gt_ann['image_id']}")
        stat += pq_image(
            read_panoptic_png(os.path.join(gt_folder, gt_ann["file_name"])),
            gt_ann["segments_info"],
            read_panoptic_png(os.path.join(pred_folder, pred_ann["file_name"])),
            pred_ann["segments_info"],
            categories,
            gt_ann["image_id"],
        )
    return summarize(stat, categories)


class PanopticEvaluator(DatasetEvaluator):
    """detectron2 evaluator: PQ of ``outputs["panoptic_seg"]`` against the dataset's COCO
    panoptic ground truth (metadata ``panoptic_json`` and ``panoptic_root``).

    Per-image sums are computed in ``process`` (no temporary PNGs, unlike detectron2's
    COCOPanopticEvaluator) and gathered over ranks. Results are in percent under
    ``"panoptic_seg"``: PQ, SQ, RQ and their ``_th``/``_st`` variants, named as detectron2 names
    them, plus ``PQ-<class>`` per class.
    """

    def __init__(self, dataset_name: str, output_dir: str | None = None):
        from detectron2.data import MetadataCatalog

        self._metadata = MetadataCatalog.get(dataset_name)
        self._output_dir = output_dir
        with open(self._metadata.panoptic_json) as f:
            gt_json = json.load(f)
        self._categories = {c["id"]: c for c in gt_json["categories"]}
        self._gt = {a["image_id"]: a for a in gt_json["annotations"]}
        self._thing_to_dataset = {v: k for k, v in self._metadata.thing_dataset_id_to_contiguous_id.items()}
        self._stuff_to_dataset = {v: k for k, v in self._metadata.stuff_dataset_id_to_contiguous_id.items()}
        self.reset()

    def reset(self):
        self._stat = PQStat()

    def _to_dataset_segments(self, panoptic_img: np.ndarray, segments_info):
        """Model output (contiguous class ids) -> id map and segments with dataset category ids."""
        if segments_info is None:
            # Label-divisor encoding (class * divisor + instance, -1 = void), as detectron2 reads it.
            divisor = self._metadata.label_divisor
            things = set(self._metadata.thing_dataset_id_to_contiguous_id.values())
            segments_info = []
            for label in np.unique(panoptic_img).tolist():
                if label == -1:
                    continue
                cls = label // divisor
                segments_info.append({"id": label + 1, "category_id": cls, "isthing": cls in things})
            panoptic_img = panoptic_img + 1
        present = set(np.unique(panoptic_img).tolist())
        segs = []
        for s in segments_info:
            if int(s["id"]) not in present:
                continue  # an empty predicted segment can neither match nor be a false positive
            table = self._thing_to_dataset if s.get("isthing", True) else self._stuff_to_dataset
            segs.append({"id": int(s["id"]), "category_id": table[s["category_id"]]})
        return panoptic_img, segs

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            panoptic_img, segments_info = out["panoptic_seg"]
            panoptic_img = panoptic_img.cpu().numpy().astype(np.int64)
            panoptic_img, segs = self._to_dataset_segments(panoptic_img, segments_info)
            gt_ann = self._gt.get(inp["image_id"])
            if gt_ann is None:
                raise ValueError(f"image {inp['image_id']} is not in {self._metadata.panoptic_json}")
            pan_gt = read_panoptic_png(os.path.join(self._metadata.panoptic_root, gt_ann["file_name"]))
            self._stat += pq_image(pan_gt, gt_ann["segments_info"], panoptic_img, segs,
                                   self._categories, inp["image_id"])

    def evaluate(self):
        import detectron2.utils.comm as comm

        comm.synchronize()
        stats = comm.gather(self._stat)
        if not comm.is_main_process():
            return None
        total = PQStat()
        for s in stats:
            total += s
        results = summarize(total, self._categories)
        logger.info("Panoptic evaluation results:\n%s", format_results(results))
        res = {}
        for suffix, name in (("", "All"), ("_th", "Things"), ("_st", "Stuff")):
            for m in ("pq", "sq", "rq"):
                res[m.upper() + suffix] = 100 * results[name][m]
        for cat_id, r in results["per_class"].items():
            res[f"PQ-{self._categories[cat_id]['name']}"] = 100 * r["pq"]
        if self._output_dir:
            atomic_write_json(os.path.join(self._output_dir, "panoptic_results.json"), results)
        return {"panoptic_seg": res}
