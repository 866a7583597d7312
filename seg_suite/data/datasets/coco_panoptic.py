"""COCO-format panoptic datasets with semantic maps derived from the panoptic annotation.

Registers ``coco_2017_{train,val}_panoptic_with_sem_seg`` under ``$DETECTRON2_DATASETS`` (default
``datasets``), the names the official Mask2Former configs use (Mask2Former
``mask2former/data/datasets/register_coco_panoptic_annos_semseg.py``): one contiguous id space over
all 133 categories, so the semantic evaluator and the model's 133-way classifier agree. The semantic
PNGs come from ``datasets/prepare_coco_semantic_annos_from_panoptic.py``.

:func:`register_panoptic_with_sem_seg` is the generic part, also used for the synthetic set.
"""

from __future__ import annotations

import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from seg_suite.errors import UserError
from seg_suite.io.files import load_json
from seg_suite.io.paths import resolve_under

_COCO_PANOPTIC_SPLITS = {
    # name: (image dir, panoptic PNG dir, panoptic json, semantic PNG dir, instances json)
    "coco_2017_train_panoptic": ("coco/train2017", "coco/panoptic_train2017",
                                 "coco/annotations/panoptic_train2017.json",
                                 "coco/panoptic_semseg_train2017",
                                 "coco/annotations/instances_train2017.json"),
    "coco_2017_val_panoptic": ("coco/val2017", "coco/panoptic_val2017",
                               "coco/annotations/panoptic_val2017.json",
                               "coco/panoptic_semseg_val2017",
                               "coco/annotations/instances_val2017.json"),
}


def sem_seg_ignore_label(num_categories: int) -> int:
    """Void value of the panoptic-semantic PNGs for ``num_categories`` categories.

    255 (uint8 PNGs) up to 255 categories, as detectron2 / Mask2Former; above that the contiguous
    ids reach 255 themselves, so the maps are uint16 with void 65535 (the rule of
    :func:`seg_suite.pseudo.panoptic.semantic_from_panoptic`, e.g. U2Seg's 300 things + 27 stuff).
    """
    return 255 if num_categories <= 255 else 65535


def panoptic_metadata(categories: list[dict]) -> dict:
    """Metadata for a panoptic category list (COCO form with ``isthing``), ids kept in list order.

    Contiguous ids run over ALL categories (things and stuff together), as Mask2Former trains:
    ``stuff_dataset_id_to_contiguous_id`` covers every category (so the semantic evaluator sees
    all of them) and ``thing_dataset_id_to_contiguous_id`` the things, with the same numbers.
    """
    meta = {
        "thing_classes": [c["name"] for c in categories if c["isthing"]],
        "thing_colors": [c.get("color", [0, 0, 0]) for c in categories if c["isthing"]],
        "stuff_classes": [c["name"] for c in categories],
        "stuff_colors": [c.get("color", [0, 0, 0]) for c in categories],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories) if c["isthing"]},
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories)},
    }
    return meta


def load_panoptic_with_sem_seg(json_file: str, image_root: str, panoptic_root: str, sem_seg_root: str | None,
                               meta: dict) -> list[dict]:
    """Dataset dicts: ``file_name``, ``image_id``, ``height``/``width`` (when the JSON has them),
    ``pan_seg_file_name``, ``sem_seg_file_name`` and ``segments_info`` with contiguous
    ``category_id`` and ``isthing``.

    Image files are taken from the JSON's ``images`` list; COCO's rule (the PNG name with ``.jpg``)
    is the fallback when an image is not listed there. Every name the JSON gives is resolved under
    its folder (:func:`seg_suite.io.paths.resolve_under`): an absolute name or one climbing out with
    ``..`` is a one-line UserError, as are a file of the wrong shape and a segment whose category
    the metadata does not list.
    """
    if not os.path.isfile(json_file):
        raise UserError(f"panoptic annotation file not found: {json_file} (see datasets/README.md)")
    data = load_json(json_file, "panoptic annotation file")
    if not (isinstance(data, dict) and isinstance(data.get("annotations"), list)
            and isinstance(data.get("images", []), list)):
        raise UserError(f"{json_file} is not a COCO panoptic file: expected an object with 'images' and "
                        f"'annotations' lists")
    images = {im["id"]: im for im in data.get("images", []) if isinstance(im, dict) and "id" in im}
    things = meta["thing_dataset_id_to_contiguous_id"]
    stuff = meta["stuff_dataset_id_to_contiguous_id"]
    out = []
    for ann in data["annotations"]:
        if not (isinstance(ann, dict) and "image_id" in ann and isinstance(ann.get("file_name"), str)
                and isinstance(ann.get("segments_info"), list)):
            raise UserError(f"{json_file}: every annotation needs an 'image_id', a 'file_name' and a "
                            f"'segments_info' list (found {ann!r:.120})")
        image_id = ann["image_id"]
        im = images.get(image_id)
        image_name = im.get("file_name") if im else os.path.splitext(ann["file_name"])[0] + ".jpg"
        segments = []
        for s in ann["segments_info"]:
            category = s.get("category_id") if isinstance(s, dict) else None
            if not isinstance(category, int) or (category not in stuff and category not in things):
                raise UserError(f"{json_file}: a segment of {ann['file_name']} has category_id {category!r}, "
                                f"which is not among the dataset's categories")
            s = dict(s)
            isthing = category in things
            s["category_id"] = things[category] if isthing else stuff[category]
            s["isthing"] = isthing
            segments.append(s)
        d = {
            "file_name": str(resolve_under(image_root, image_name, f"{json_file}: image file_name")),
            "image_id": image_id,
            "pan_seg_file_name": str(resolve_under(panoptic_root, ann["file_name"], f"{json_file}: panoptic PNG name")),
            "segments_info": segments,
        }
        if sem_seg_root:
            d["sem_seg_file_name"] = str(resolve_under(sem_seg_root, ann["file_name"],
                                                       f"{json_file}: semantic PNG name"))
        if im and "height" in im:
            d["height"], d["width"] = im["height"], im["width"]
        out.append(d)
    if not out:
        raise UserError(f"no annotations in {json_file}")
    return out


def register_panoptic_with_sem_seg(name: str, categories: list[dict], image_root: str, panoptic_root: str,
                                   panoptic_json: str, sem_seg_root: str | None, instances_json: str | None,
                                   ignore_label: int | None = None, **extra_meta) -> None:
    """Register ``name`` (replacing an earlier registration) with panoptic + semantic ground truth.

    Metadata ``evaluator_type="coco_panoptic_seg"`` selects PQ, and, when the model's instance and
    semantic outputs are on, COCO AP against ``json_file`` (``instances_json``) and mIoU.
    ``ignore_label`` is the semantic maps' void value (default :func:`sem_seg_ignore_label`: 255,
    or 65535 with more than 255 categories); the mappers and the semantic evaluator read it.
    """
    if ignore_label is None:
        ignore_label = sem_seg_ignore_label(len(categories))
    meta = panoptic_metadata(categories)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(
        name, lambda: load_panoptic_with_sem_seg(panoptic_json, image_root, panoptic_root, sem_seg_root, meta)
    )
    fields = dict(
        image_root=image_root, panoptic_root=panoptic_root, panoptic_json=panoptic_json,
        sem_seg_root=sem_seg_root, evaluator_type="coco_panoptic_seg", ignore_label=ignore_label, label_divisor=1000,
        **meta, **extra_meta,
    )
    if instances_json:
        fields["json_file"] = instances_json
    MetadataCatalog.get(name).set(**fields)


def register_all_coco_panoptic_with_sem_seg(root: str) -> None:
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    for prefix, (images, pan_root, pan_json, sem_root, inst_json) in _COCO_PANOPTIC_SPLITS.items():
        register_panoptic_with_sem_seg(
            prefix + "_with_sem_seg", COCO_CATEGORIES, os.path.join(root, images), os.path.join(root, pan_root),
            os.path.join(root, pan_json), os.path.join(root, sem_root), os.path.join(root, inst_json),
        )
