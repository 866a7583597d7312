"""Choose evaluators from a dataset's metadata ``evaluator_type`` (Mask2Former ``train_net.py`` rules).

=====================  ==========================================================================
evaluator_type         evaluators
=====================  ==========================================================================
``coco``               COCO mask AP + box AP from masks (:class:`InstanceEvaluator`)
``sem_seg``            mIoU / fwIoU / accuracy (:class:`SemSegEvaluator`)
``coco_panoptic_seg``  PQ if ``MODEL.MASK_FORMER.TEST.PANOPTIC_ON``; COCO AP if ``INSTANCE_ON``
                       (needs metadata ``json_file``); mIoU if ``SEMANTIC_ON`` (needs
                       ``sem_seg_root``)
=====================  ==========================================================================
"""

from __future__ import annotations

import os

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluators

from seg_suite.errors import UserError
from seg_suite.evaluation.instance import InstanceEvaluator
from seg_suite.evaluation.panoptic import PanopticEvaluator
from seg_suite.evaluation.sem_seg import SemSegEvaluator


def build_evaluator(cfg, dataset_name: str, output_folder: str | None = None):
    """A ``DatasetEvaluator`` (or ``DatasetEvaluators``) for ``dataset_name``."""
    output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    meta = MetadataCatalog.get(dataset_name)
    kind = getattr(meta, "evaluator_type", None)
    test = cfg.MODEL.MASK_FORMER.TEST
    evaluators = []
    if kind == "coco":
        evaluators.append(InstanceEvaluator(dataset_name, output_dir=output_folder))
    elif kind == "sem_seg":
        evaluators.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder))
    elif kind == "coco_panoptic_seg":
        if test.PANOPTIC_ON:
            evaluators.append(PanopticEvaluator(dataset_name, output_dir=output_folder))
        if test.INSTANCE_ON and getattr(meta, "json_file", None):
            evaluators.append(InstanceEvaluator(dataset_name, output_dir=output_folder))
        if test.SEMANTIC_ON and getattr(meta, "sem_seg_root", None):
            evaluators.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder))
    if not evaluators:
        raise UserError(
            f"no evaluator for dataset {dataset_name!r} (evaluator_type {kind!r}, panoptic/instance/semantic "
            f"outputs {test.PANOPTIC_ON}/{test.INSTANCE_ON}/{test.SEMANTIC_ON})"
        )
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)
