"""Register any COCO-format (pseudo-)label file as a detectron2 instance dataset.

Pseudo-label files (MaskCut/CutLER, our runner, U2Seg clusters) are ordinary COCO instance JSON
with RLE or polygon masks. ``class_agnostic=True`` collapses every category into one foreground
class ``"fg"``, the CutLER setting (one class, ``MODEL.SEM_SEG_HEAD.NUM_CLASSES: 1``).

From a config: ``DATASETS.PSEUDO_COCO: [["name", "path/to/labels.json", "path/to/images"], ...]``,
registered by :func:`register_from_cfg` before the data loaders are built (class-agnostic when
``MODEL.SEM_SEG_HEAD.NUM_CLASSES == 1``). The same call registers panoptic pseudo-label roots
(``DATASETS.PSEUDO_PANOPTIC``, :mod:`.pseudo_panoptic`).

A label file is checked by :func:`seg_suite.io.coco.read_coco` with ``check_masks=True`` before
detectron2's ``load_coco_json`` (and pycocotools) sees it: a wrong JSON shape, duplicate or
dangling ids, a mask that does not fit its image (an RLE claiming 60000x60000 pixels, corrupt
counts) or a ``file_name`` leaving the image folder is one line naming the file and the record,
and nothing is decoded or allocated for it.
"""

from __future__ import annotations

import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from seg_suite.data.datasets.pseudo_panoptic import register_pseudo_panoptic_from_cfg
from seg_suite.errors import UserError
from seg_suite.io.coco import read_coco


def _what(name: str) -> str:
    return f"label file of dataset {name!r}"


def _load(json_file: str, image_root: str, name: str, class_agnostic: bool) -> list[dict]:
    if not os.path.isfile(json_file):
        raise UserError(f"label file of dataset {name!r} not found: {json_file}")
    if not os.path.isdir(image_root):
        raise UserError(f"image folder of dataset {name!r} not found: {image_root}")
    read_coco(json_file, _what(name), check_masks=True)
    dicts = load_coco_json(json_file, image_root, None if class_agnostic else name)
    if class_agnostic:
        for d in dicts:
            for ann in d.get("annotations", []):
                ann["category_id"] = 0
    return dicts


def register_pseudo_coco(name: str, json_file: str, image_root: str, class_agnostic: bool = True) -> None:
    """Register ``name`` (replacing an earlier registration of it) for training and COCO evaluation.

    With ``class_agnostic=False`` the categories of the file are kept (contiguous ids in the
    file's category order, detectron2's rule).
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: _load(json_file, image_root, name, class_agnostic))
    meta = MetadataCatalog.get(name)
    meta.set(json_file=json_file, image_root=image_root, evaluator_type="coco", class_agnostic=class_agnostic)
    if class_agnostic:
        # The COCO evaluator maps contiguous class 0 back to the file's first category id.
        meta.set(thing_classes=["fg"], thing_dataset_id_to_contiguous_id={_first_category_id(json_file, name): 0})


def _first_category_id(json_file: str, name: str) -> int:
    if not os.path.isfile(json_file):
        return 1  # checked again (with a clear error) when the dataset is loaded
    # The structure only: the masks are checked when the dataset is loaded.
    cats = read_coco(json_file, _what(name)).get("categories") or [{"id": 1}]
    return int(cats[0]["id"])


def register_from_cfg(cfg) -> list[str]:
    """Register every ``[name, json, image_root]`` triple in ``cfg.DATASETS.PSEUDO_COCO`` and every
    ``[name, root, split]`` in ``cfg.DATASETS.PSEUDO_PANOPTIC``
    (:func:`seg_suite.data.datasets.pseudo_panoptic.register_pseudo_panoptic_from_cfg`); returns the names."""
    names = []
    for entry in cfg.DATASETS.PSEUDO_COCO:
        if len(entry) != 3:
            raise UserError(f"DATASETS.PSEUDO_COCO entries are [name, json_file, image_root], got {entry!r}")
        name, json_file, image_root = entry
        register_pseudo_coco(name, json_file, image_root,
                             class_agnostic=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 1)
        names.append(name)
    return names + register_pseudo_panoptic_from_cfg(cfg)
