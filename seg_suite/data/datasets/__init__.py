"""detectron2 dataset registration. Importing this package registers the built-in names.

Root: ``$DETECTRON2_DATASETS`` (default ``datasets``), detectron2's convention.

- COCO 2017 instances (``coco_2017_{train,val}``), COCO panoptic (``coco_2017_{train,val}_panoptic``)
  and ADE20K-150 (``ade20k_sem_seg_{train,val}``) are detectron2's own registrations, reused.
- ``coco_2017_{train,val}_panoptic_with_sem_seg``: :mod:`.coco_panoptic`.
- ``synthetic_{train,val}[_panoptic|_sem_seg]``: :mod:`.synthetic_set`.
- any COCO (pseudo-)label file: :func:`register_pseudo_coco`.
- a panoptic pseudo-label root (``seg-suite panoptic``): :func:`register_pseudo_panoptic`.
"""

import os

from seg_suite.data.datasets.coco_panoptic import (
    load_panoptic_with_sem_seg,
    panoptic_metadata,
    register_all_coco_panoptic_with_sem_seg,
    register_panoptic_with_sem_seg,
    sem_seg_ignore_label,
)
from seg_suite.data.datasets.pseudo import register_from_cfg, register_pseudo_coco
from seg_suite.data.datasets.pseudo_panoptic import register_pseudo_panoptic
from seg_suite.data.datasets.synthetic_set import register_synthetic

_root = os.getenv("DETECTRON2_DATASETS", "datasets")
register_all_coco_panoptic_with_sem_seg(_root)
register_synthetic(os.path.join(_root, "synthetic"))

__all__ = [
    "load_panoptic_with_sem_seg",
    "panoptic_metadata",
    "register_from_cfg",
    "register_panoptic_with_sem_seg",
    "register_pseudo_coco",
    "register_pseudo_panoptic",
    "register_synthetic",
    "sem_seg_ignore_label",
]
