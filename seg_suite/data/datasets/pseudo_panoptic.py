"""Register a panoptic pseudo-label root (``seg-suite panoptic``) as a detectron2 panoptic dataset.

The root has the layout :class:`seg_suite.pseudo.panoptic.PanopticJob` writes (the synthetic set's)::

    ROOT/annotations/panoptic_SPLIT.json     categories: things 1..K (isthing 1), stuff K+1..K+S (isthing 0)
    ROOT/panoptic/SPLIT/*.png                RGB id PNGs
    ROOT/semantic/SPLIT/*.png                contiguous category index, void 255 (uint16, void 65535, when K+S > 255)
    ROOT/annotations/instances_SPLIT.json    the thing segments as COCO instances (optional: COCO AP)
    ROOT/images/SPLIT                        the images

The PNG and image names of the JSON are resolved under their folders
(:func:`seg_suite.data.datasets.coco_panoptic.load_panoptic_with_sem_seg`): a name that leaves its
folder is refused with one line.

The registration is Mask2Former's for COCO panoptic with semantic maps
(``mask2former/data/datasets/register_coco_panoptic_annos_semseg.py``): evaluator
``coco_panoptic_seg``, contiguous ids over all K + S categories in the file's order,
``thing_dataset_id_to_contiguous_id`` / ``stuff_dataset_id_to_contiguous_id``. The categories are
read from the panoptic JSON when the name is registered, so a config needs no class list.

From a config: ``DATASETS.PSEUDO_PANOPTIC: [["name", "ROOT", "SPLIT"], ...]``, registered by
:func:`seg_suite.data.datasets.register_from_cfg` with ``DATASETS.PSEUDO_COCO`` (before the data
loaders are built, in ``tools/train_net.py``, self-training and the pipeline alike). Set
``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` to K + S.
"""

from __future__ import annotations

import os

from seg_suite.data.datasets.coco_panoptic import register_panoptic_with_sem_seg, sem_seg_ignore_label
from seg_suite.errors import UserError
from seg_suite.io.files import load_json


def pseudo_panoptic_paths(root, split: str) -> dict[str, str]:
    """The files of ``split`` under ``root`` (the keys of :func:`register_panoptic_with_sem_seg`)."""
    root = os.fspath(root)
    return {
        "image_root": os.path.join(root, "images", split),
        "panoptic_root": os.path.join(root, "panoptic", split),
        "panoptic_json": os.path.join(root, "annotations", f"panoptic_{split}.json"),
        "sem_seg_root": os.path.join(root, "semantic", split),
        "instances_json": os.path.join(root, "annotations", f"instances_{split}.json"),
    }


def read_pseudo_panoptic_categories(panoptic_json: str) -> list[dict]:
    """The ``categories`` of a panoptic JSON, checked against the semantic maps' convention.

    The semantic PNGs hold ``category_id - 1`` (:func:`seg_suite.pseudo.panoptic.semantic_from_panoptic`)
    and detectron2 numbers classes by list position, so the list must be ids 1..N in order.
    """
    data = load_json(panoptic_json, "panoptic pseudo-label file")
    categories = data.get("categories") if isinstance(data, dict) else None
    if not categories:
        raise UserError(f"{panoptic_json} lists no categories (write it with `seg-suite panoptic`)")
    if not isinstance(categories, list) or not all(isinstance(c, dict) and isinstance(c.get("id"), int)
                                                   for c in categories):
        raise UserError(f"{panoptic_json}: 'categories' must be a list of objects with an integer 'id'")
    ids = [c["id"] for c in categories]
    if ids != list(range(1, len(ids) + 1)):
        raise UserError(f"{panoptic_json}: category ids must be 1..{len(ids)} in order (things then stuff), "
                        f"as `seg-suite panoptic` writes them; got {ids[:8]}...")
    for c in categories:
        if "isthing" not in c:
            raise UserError(f"{panoptic_json}: category {c['id']} has no 'isthing'")
    return categories


def register_pseudo_panoptic(name: str, root, split: str = "train") -> list[dict]:
    """Register ``name`` (replacing an earlier registration) for ``root``'s ``split``; returns the
    categories (things first, ``len`` = the ``NUM_CLASSES`` to train with).

    Raises:
        UserError: a missing annotation file or image / panoptic / semantic folder (named).
    """
    paths = pseudo_panoptic_paths(root, split)
    for key, what in (("panoptic_json", "annotation file"), ("image_root", "image folder"),
                      ("panoptic_root", "panoptic PNG folder"), ("sem_seg_root", "semantic PNG folder")):
        if not os.path.exists(paths[key]):
            raise UserError(f"panoptic pseudo-label {what} of dataset {name!r} not found: {paths[key]} "
                            f"(write ROOT with `seg-suite panoptic --output ROOT --split {split}`)")
    categories = read_pseudo_panoptic_categories(paths["panoptic_json"])
    instances_json = paths["instances_json"] if os.path.isfile(paths["instances_json"]) else None
    register_panoptic_with_sem_seg(
        name, categories, paths["image_root"], paths["panoptic_root"], paths["panoptic_json"], paths["sem_seg_root"],
        instances_json, ignore_label=sem_seg_ignore_label(len(categories)),
    )
    return categories


def register_pseudo_panoptic_from_cfg(cfg) -> list[str]:
    """Register every ``[name, root, split]`` of ``cfg.DATASETS.PSEUDO_PANOPTIC``; returns the names.

    A registered set used for training with more categories than ``MODEL.SEM_SEG_HEAD.NUM_CLASSES``
    is a UserError (the classifier could not represent them; the loss would fail mid-run).
    """
    names = []
    for entry in cfg.DATASETS.PSEUDO_PANOPTIC:
        if len(entry) != 3:
            raise UserError(f"DATASETS.PSEUDO_PANOPTIC entries are [name, root, split], got {entry!r}")
        name, root, split = entry
        categories = register_pseudo_panoptic(name, root, split)
        num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        if name in cfg.DATASETS.TRAIN and num_classes < len(categories):
            raise UserError(f"dataset {name!r} has {len(categories)} categories but MODEL.SEM_SEG_HEAD.NUM_CLASSES "
                            f"is {num_classes}; set it to {len(categories)}")
        names.append(name)
    return names
