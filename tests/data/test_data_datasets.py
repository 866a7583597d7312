"""Dataset registration: synthetic set views, COCO/ADE20K names, pseudo-label files."""

import json

import numpy as np
import pytest
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog

from seg_suite.data.datasets import register_pseudo_coco, register_synthetic
from seg_suite.errors import UserError
from seg_suite.io.panoptic import rgb_to_id
from seg_suite.io.masks import mask_to_rle, rle_to_mask


@pytest.fixture(scope="module")
def synth_names(synthetic_dataset):
    return register_synthetic(synthetic_dataset, prefix="tsynth")


def test_synthetic_views_are_registered_with_their_evaluators(synth_names, synthetic_dataset):
    assert sorted(synth_names) == sorted(
        f"tsynth_{s}{v}" for s in ("train", "val") for v in ("", "_panoptic", "_sem_seg"))
    assert MetadataCatalog.get("tsynth_val").evaluator_type == "coco"
    assert MetadataCatalog.get("tsynth_val_panoptic").evaluator_type == "coco_panoptic_seg"
    assert MetadataCatalog.get("tsynth_val_sem_seg").evaluator_type == "sem_seg"
    assert MetadataCatalog.get("tsynth_val").thing_classes == ["disk", "square", "triangle", "star"]
    assert MetadataCatalog.get("tsynth_val_sem_seg").stuff_classes == [
        "disk", "square", "triangle", "star", "sky", "ground"]
    # the conftest set has 8 train and 6 val images
    for split, n in (("train", 8), ("val", 6)):
        for view in ("", "_panoptic", "_sem_seg"):
            assert len(DatasetCatalog.get(f"tsynth_{split}{view}")) == n


def test_panoptic_view_ids_agree_with_semantic_maps_and_instances(synth_names):
    pan = {d["image_id"]: d for d in DatasetCatalog.get("tsynth_val_panoptic")}
    inst = {d["image_id"]: d for d in DatasetCatalog.get("tsynth_val")}
    for image_id, d in pan.items():
        with Image.open(d["pan_seg_file_name"]) as im:
            ids = rgb_to_id(np.asarray(im.convert("RGB")))
        with Image.open(d["sem_seg_file_name"]) as im:
            sem = np.asarray(im)
        things = []
        for s in d["segments_info"]:
            region = ids == s["id"]
            # contiguous category of the segment == the semantic map's class on all its pixels
            assert np.all(sem[region] == s["category_id"])
            assert s["isthing"] == (s["category_id"] < 4)
            if s["isthing"]:
                things.append((s["category_id"], region))
        h, w = inst[image_id]["height"], inst[image_id]["width"]
        inst_masks = [(a["category_id"], rle_to_mask(a["segmentation"], h, w)) for a in inst[image_id]["annotations"]]
        assert len(inst_masks) == len(things)
        for (c1, m1), (c2, m2) in zip(sorted(inst_masks, key=lambda t: t[1].sum()),
                                      sorted(things, key=lambda t: t[1].sum())):
            assert c1 == c2 and np.array_equal(m1, m2)


def test_builtin_coco_and_ade20k_names():
    names = DatasetCatalog.list()
    for name in ("coco_2017_train", "coco_2017_val", "coco_2017_train_panoptic", "coco_2017_val_panoptic",
                 "coco_2017_train_panoptic_with_sem_seg", "coco_2017_val_panoptic_with_sem_seg",
                 "ade20k_sem_seg_train", "ade20k_sem_seg_val"):
        assert name in names
    meta = MetadataCatalog.get("coco_2017_val_panoptic_with_sem_seg")
    assert meta.evaluator_type == "coco_panoptic_seg"
    assert len(meta.stuff_classes) == 133 and len(meta.thing_classes) == 80
    # one contiguous id space: a thing's id is the same in both tables
    for dataset_id, contiguous in meta.thing_dataset_id_to_contiguous_id.items():
        assert meta.stuff_dataset_id_to_contiguous_id[dataset_id] == contiguous
    assert meta.panoptic_json.endswith("coco/annotations/panoptic_val2017.json")
    assert meta.sem_seg_root.endswith("coco/panoptic_semseg_val2017")
    assert meta.json_file.endswith("coco/annotations/instances_val2017.json")
    assert len(MetadataCatalog.get("ade20k_sem_seg_val").stuff_classes) == 150
    with pytest.raises(UserError, match="panoptic_val2017.json"):
        DatasetCatalog.get("coco_2017_val_panoptic_with_sem_seg")  # no COCO on this machine


def _pseudo_file(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(images / "a.png")
    m1 = np.zeros((20, 30), bool); m1[2:8, 3:9] = True
    m2 = np.zeros((20, 30), bool); m2[10:18, 10:25] = True
    data = {
        "images": [{"id": 5, "file_name": "a.png", "height": 20, "width": 30}],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 7, "segmentation": mask_to_rle(m1), "bbox": [3, 2, 6, 6],
             "area": 36, "iscrowd": 0},
            {"id": 2, "image_id": 5, "category_id": 9, "segmentation": mask_to_rle(m2), "bbox": [10, 10, 15, 8],
             "area": 120, "iscrowd": 0},
        ],
        "categories": [{"id": 7, "name": "a"}, {"id": 9, "name": "b"}],
    }
    path = tmp_path / "pseudo.json"
    path.write_text(json.dumps(data))
    return path, images, (m1, m2)


def test_pseudo_coco_class_agnostic_and_with_classes(tmp_path):
    path, images, (m1, m2) = _pseudo_file(tmp_path)
    register_pseudo_coco("tpseudo_agnostic", path, images, class_agnostic=True)
    (d,) = DatasetCatalog.get("tpseudo_agnostic")
    assert [a["category_id"] for a in d["annotations"]] == [0, 0]
    assert np.array_equal(rle_to_mask(d["annotations"][1]["segmentation"], 20, 30), m2)
    meta = MetadataCatalog.get("tpseudo_agnostic")
    assert meta.thing_classes == ["fg"] and meta.thing_dataset_id_to_contiguous_id == {7: 0}
    assert meta.evaluator_type == "coco"

    register_pseudo_coco("tpseudo_classes", path, images, class_agnostic=False)
    (d,) = DatasetCatalog.get("tpseudo_classes")
    assert [a["category_id"] for a in d["annotations"]] == [0, 1]
    assert MetadataCatalog.get("tpseudo_classes").thing_classes == ["a", "b"]


def test_pseudo_coco_missing_file_is_a_user_error(tmp_path):
    register_pseudo_coco("tpseudo_missing", tmp_path / "nope.json", tmp_path)
    with pytest.raises(UserError, match="nope.json"):
        DatasetCatalog.get("tpseudo_missing")
