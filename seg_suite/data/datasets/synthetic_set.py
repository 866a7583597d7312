"""Register the synthetic set written by :func:`seg_suite.data.synthetic.make_synthetic_dataset`.

For each split (``train``, ``val``) three views of the same images:

- ``synthetic_{split}``: COCO instances (4 thing classes), evaluator ``coco`` (mask and box AP);
- ``synthetic_{split}_panoptic``: panoptic + semantic ground truth (6 classes, contiguous ids in
  category-id order), evaluator ``coco_panoptic_seg`` (PQ, and AP / mIoU when the model's
  instance / semantic outputs are on);
- ``synthetic_{split}_sem_seg``: semantic maps (6 classes, 255 ignored), evaluator ``sem_seg``.

The default root is ``$DETECTRON2_DATASETS/synthetic``; :func:`register_synthetic` re-registers
the names for another root (``DATASETS.SYNTHETIC_ROOT`` in a config does that through
:func:`seg_suite.engine.setup`).
"""

from __future__ import annotations

import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, load_sem_seg

from seg_suite.data.datasets.coco_panoptic import panoptic_metadata, register_panoptic_with_sem_seg
from seg_suite.data.synthetic import SYNTHETIC_CATEGORIES
from seg_suite.errors import UserError

SPLITS = ("train", "val")


def _check(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise UserError(f"synthetic {what} not found: {path} (create it with `seg-suite make-synthetic --output DIR`"
                        " and set DATASETS.SYNTHETIC_ROOT or DETECTRON2_DATASETS)")


def _load_instances(json_file: str, image_root: str, name: str) -> list[dict]:
    _check(json_file, "annotation file")
    return load_coco_json(json_file, image_root, name)


def _load_sem_seg(gt_root: str, image_root: str) -> list[dict]:
    _check(gt_root, "semantic folder")
    return load_sem_seg(gt_root, image_root, gt_ext="png", image_ext="png")


def _replace(name: str) -> None:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def register_synthetic(root: str, prefix: str = "synthetic") -> list[str]:
    """Register the 6 synthetic dataset names for ``root`` (replacing earlier ones); returns them."""
    root = os.fspath(root)
    meta = panoptic_metadata(SYNTHETIC_CATEGORIES)
    names = []
    for split in SPLITS:
        images = os.path.join(root, "images", split)
        instances_json = os.path.join(root, "annotations", f"instances_{split}.json")

        name = f"{prefix}_{split}"
        _replace(name)
        DatasetCatalog.register(name, lambda j=instances_json, i=images, n=name: _load_instances(j, i, n))
        MetadataCatalog.get(name).set(
            json_file=instances_json, image_root=images, evaluator_type="coco",
            thing_classes=meta["thing_classes"], thing_colors=meta["thing_colors"],
            thing_dataset_id_to_contiguous_id=meta["thing_dataset_id_to_contiguous_id"],
        )

        register_panoptic_with_sem_seg(
            f"{prefix}_{split}_panoptic", SYNTHETIC_CATEGORIES, images, os.path.join(root, "panoptic", split),
            os.path.join(root, "annotations", f"panoptic_{split}.json"), os.path.join(root, "semantic", split),
            instances_json,
        )

        sem_name = f"{prefix}_{split}_sem_seg"
        sem_root = os.path.join(root, "semantic", split)
        _replace(sem_name)
        DatasetCatalog.register(sem_name, lambda g=sem_root, i=images: _load_sem_seg(g, i))
        MetadataCatalog.get(sem_name).set(
            sem_seg_root=sem_root, image_root=images, evaluator_type="sem_seg", ignore_label=255,
            stuff_classes=meta["stuff_classes"], stuff_colors=meta["stuff_colors"],
        )
        names += [name, f"{prefix}_{split}_panoptic", sem_name]
    return names
