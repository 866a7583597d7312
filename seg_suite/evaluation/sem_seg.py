"""Semantic segmentation metrics: mIoU, frequency-weighted IoU, mean class accuracy, pixel accuracy.

Definitions follow detectron2 0.6's ``SemSegEvaluator`` (detectron2/evaluation/sem_seg_evaluation.py),
the evaluator behind the published Mask2Former ADE20K/COCO numbers. With ``C`` the confusion
matrix over labelled pixels (ignore label dropped), ``tp = diag(C)``, ``gt_c`` the pixels of class
c in the ground truth and ``pred_c`` the pixels predicted as c:

- ``IoU_c = tp_c / (gt_c + pred_c - tp_c)`` for classes present in the ground truth;
- ``mIoU``: sum of those IoUs divided by the number of classes present in the ground truth OR the
  prediction, so a class that is predicted but never present counts as IoU 0 (the 0.6 rule, also
  mmsegmentation's; detectron2 after July 2022 leaves such classes out instead);
- ``fwIoU = sum_c (gt_c / sum gt) IoU_c``; ``ACC_c = tp_c / gt_c``; ``mACC`` its mean over present
  classes; ``pACC = sum tp / sum gt``.
All figures are reported in percent, per-class values as ``IoU-<name>`` / ``ACC-<name>`` (NaN for
classes absent from the ground truth).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict

import numpy as np
from PIL import Image

from seg_suite.io.files import atomic_write_json

try:  # the metric works without detectron2; only the evaluator class needs it
    from detectron2.evaluation import DatasetEvaluator
except ImportError:  # pragma: no cover
    DatasetEvaluator = object

logger = logging.getLogger(__name__)


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_label: int = 255) -> np.ndarray:
    """``(num_classes, num_classes)`` int64 counts, rows = ground truth, columns = prediction.

    pred, gt: HxW integer class maps of the same shape; gt pixels equal to ``ignore_label`` (or
    outside ``[0, num_classes)``) are not counted. Predictions must be valid class indices.
    """
    pred = np.asarray(pred).astype(np.int64).ravel()
    gt = np.asarray(gt).astype(np.int64).ravel()
    if pred.shape != gt.shape:
        raise ValueError(f"prediction has {pred.size} pixels, ground truth {gt.size}")
    keep = (gt != ignore_label) & (gt >= 0) & (gt < num_classes)
    pred, gt = pred[keep], gt[keep]
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predicted class outside [0, {num_classes})")
    return np.bincount(gt * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def sem_seg_metrics(conf: np.ndarray, class_names: list[str] | None = None) -> "OrderedDict[str, float]":
    """mIoU, fwIoU, per-class IoU, mACC, pACC and per-class ACC (percent) from a confusion matrix."""
    conf = np.asarray(conf, dtype=np.float64)
    n = conf.shape[0]
    names = class_names if class_names is not None else [str(i) for i in range(n)]
    tp = np.diag(conf)
    gt_c = conf.sum(axis=1)
    pred_c = conf.sum(axis=0)
    present = gt_c > 0
    seen = (gt_c + pred_c) > 0
    acc = np.full(n, np.nan)
    iou = np.full(n, np.nan)
    acc[present] = tp[present] / gt_c[present]
    iou[present] = tp[present] / (gt_c + pred_c - tp)[present]
    total = gt_c.sum()
    res = OrderedDict()
    res["mIoU"] = 100 * iou[present].sum() / max(seen.sum(), 1)
    res["fwIoU"] = 100 * float((iou[present] * gt_c[present] / total).sum()) if total else 0.0
    for i, name in enumerate(names):
        res[f"IoU-{name}"] = 100 * iou[i]
    res["mACC"] = 100 * acc[present].mean() if present.any() else 0.0
    res["pACC"] = 100 * tp.sum() / total if total else 0.0
    for i, name in enumerate(names):
        res[f"ACC-{name}"] = 100 * acc[i]
    return res


class SemSegEvaluator(DatasetEvaluator):
    """detectron2 evaluator of ``outputs["sem_seg"]`` (CxHxW scores) against the dataset's
    ``sem_seg_file_name`` PNGs (contiguous class ids, metadata ``ignore_label``).

    Classes come from metadata ``stuff_classes``. Confusion matrices are summed over ranks.
    Returns ``{"sem_seg": {...}}`` with the keys of :func:`sem_seg_metrics`.
    """

    def __init__(self, dataset_name: str, distributed: bool = True, output_dir: str | None = None):
        from detectron2.data import DatasetCatalog, MetadataCatalog

        meta = MetadataCatalog.get(dataset_name)
        self._class_names = list(meta.stuff_classes)
        self._num_classes = len(self._class_names)
        self._ignore_label = getattr(meta, "ignore_label", 255)
        self._gt_files = {d["file_name"]: d["sem_seg_file_name"] for d in DatasetCatalog.get(dataset_name)}
        self._distributed = distributed
        self._output_dir = output_dir
        self.reset()

    def reset(self):
        self._conf = np.zeros((self._num_classes, self._num_classes), dtype=np.int64)

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            pred = out["sem_seg"].argmax(dim=0).cpu().numpy()
            with Image.open(self._gt_files[inp["file_name"]]) as im:
                gt = np.asarray(im, dtype=np.int64)
            self._conf += confusion_matrix(pred, gt, self._num_classes, self._ignore_label)

    def evaluate(self):
        conf = self._conf
        if self._distributed:
            import detectron2.utils.comm as comm

            comm.synchronize()
            mats = comm.all_gather(self._conf)
            if not comm.is_main_process():
                return None
            conf = np.sum(mats, axis=0)
        res = sem_seg_metrics(conf, self._class_names)
        if self._output_dir:
            atomic_write_json(os.path.join(self._output_dir, "sem_seg_evaluation.json"), res)
        logger.info("Semantic segmentation: mIoU %.2f, fwIoU %.2f, mACC %.2f, pACC %.2f",
                    res["mIoU"], res["fwIoU"], res["mACC"], res["pACC"])
        return OrderedDict(sem_seg=res)
