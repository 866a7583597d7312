"""Panoptic pseudo-labels (seg_suite.pseudo.panoptic): U2Seg's merge rules and the dataset layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from seg_suite.io.masks import mask_to_bbox
from seg_suite.io.panoptic import rgb_to_id
from seg_suite.pseudo.panoptic_rules import assemble_panoptic, semantic_from_panoptic


def box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_painting_order_hidden_instances_and_the_70_percent_rule():
    h, w = 20, 20
    big = box(h, w, 0, 10, 0, 10)  # area 100, category 1
    left = box(h, w, 2, 6, 2, 4)  # area 8, category 2
    right = box(h, w, 2, 6, 4, 6)  # area 8, category 2
    covered = box(h, w, 2, 6, 2, 6)  # area 16 = left + right exactly: hidden once they are painted on top
    stuff = np.full((h, w), 255, np.uint8)
    stuff[10:, :] = 0  # 200 px, none under instances: kept
    stuff[:10, :5] = 1  # 50 px under instances ...
    stuff[:10, 10:15] = 1  # ... + 50 free px: 50% under instances: kept
    stuff[:10, 5:10] = 2  # 50 px under instances ...
    stuff[:4, 15:] = 2  # ... + 20 free px: 71% under instances: skipped, its free pixels stay VOID
    ids, segs = assemble_panoptic([(big, 1), (covered, 3), (left, 2), (right, 2)], stuff, num_things=3, num_stuff=3)
    things = [s for s in segs if s["isthing"]]
    assert [s["category_id"] for s in things] == [1, 2, 2]  # the covered instance is dropped
    assert [s["source"] for s in things] == [0, 2, 3]
    big_id = things[0]["id"]
    assert (ids == big_id).sum() == 100 - 16  # the small ones lie on top of the big one
    assert ((ids == things[1]["id"]) == left).all() and ((ids == things[2]["id"]) == right).all()
    stuff_segs = {s["category_id"]: s for s in segs if not s["isthing"]}
    assert set(stuff_segs) == {4, 5}  # stuff cluster s -> K + 1 + s
    assert stuff_segs[4]["area"] == 200 and stuff_segs[5]["area"] == 50  # only free pixels are filled
    assert all(s["area"] == int((ids == s["id"]).sum()) and s["bbox"] == mask_to_bbox(ids == s["id"]) for s in segs)
    assert [s["id"] for s in segs] == list(range(1, len(segs) + 1))
    assert (ids[:4, 15:] == 0).all()


@pytest.mark.parametrize("on_instances, kept", [(70, True), (71, False)])
def test_stuff_overlap_threshold_is_inclusive(on_instances, kept):
    h, w = 10, 10
    inst = np.zeros((h, w), bool)
    inst.flat[:on_instances] = True
    stuff = np.zeros((h, w), np.uint8)  # one stuff cluster over the whole image (100 px)
    _, segs = assemble_panoptic([(inst, 1)], stuff, num_things=1, num_stuff=1)
    assert any(s["category_id"] == 2 for s in segs) == kept


def test_semantic_map_is_contiguous_over_all_categories():
    ids = np.array([[0, 1], [2, 3]], np.uint32)
    segs = [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 3}, {"id": 3, "category_id": 5}]
    sem = semantic_from_panoptic(ids, segs, num_categories=5)
    assert sem.dtype == np.uint8 and sem.tolist() == [[255, 0], [2, 4]]
    assert semantic_from_panoptic(ids, segs, num_categories=327).dtype == np.uint16


def _clustered_file(root, tmp_path):
    """The synthetic val instances as a 'clustered' file with 4 cluster ids, and stuff maps with 2 clusters."""
    inst = json.loads((root / "annotations" / "instances_val.json").read_text())
    path = tmp_path / "clustered.json"
    path.write_text(json.dumps(dict(inst, categories=[{"id": k, "name": f"c{k}"} for k in range(1, 5)])))
    stuff_dir = tmp_path / "stuff"
    stuff_dir.mkdir()
    for p in sorted((root / "semantic" / "val").glob("*.png")):
        sem = np.asarray(Image.open(p))
        Image.fromarray(np.where(sem == 4, 0, np.where(sem == 5, 1, 255)).astype(np.uint8)).save(stuff_dir / p.name)
    return path, stuff_dir


def test_dataset_job_writes_the_synthetic_layout_and_reproduces_ground_truth(synthetic_dataset, tmp_path):
    from seg_suite.cli import main

    root = synthetic_dataset
    clustered, stuff_dir = _clustered_file(root, tmp_path)
    out = tmp_path / "pan"
    assert main(["panoptic", "--input", str(clustered), "--images", str(root / "images" / "val"),
                 "--stuff-dir", str(stuff_dir), "--num-stuff", "2", "--output", str(out), "--split", "val",
                 "--workers", "0", "--no-progress"]) == 0
    pan = json.loads((out / "annotations" / "panoptic_val.json").read_text())
    gt = json.loads((root / "annotations" / "panoptic_val.json").read_text())
    assert [c["id"] for c in pan["categories"]] == [1, 2, 3, 4, 5, 6]
    assert [c["isthing"] for c in pan["categories"]] == [1, 1, 1, 1, 0, 0]
    assert (out / "images" / "val").resolve() == (root / "images" / "val").resolve()
    # The synthetic ground truth's visible masks and sky/ground come back exactly (same ids 1..6).
    for p_ann, g_ann in zip(pan["annotations"], gt["annotations"]):
        p_ids = rgb_to_id(np.asarray(Image.open(out / "panoptic" / "val" / p_ann["file_name"])))
        g_ids = rgb_to_id(np.asarray(Image.open(root / "panoptic" / "val" / g_ann["file_name"])))
        p_cat = np.zeros_like(p_ids)
        g_cat = np.zeros_like(g_ids)
        for s in p_ann["segments_info"]:
            p_cat[p_ids == s["id"]] = s["category_id"]
        for s in g_ann["segments_info"]:
            g_cat[g_ids == s["id"]] = s["category_id"]
        assert (p_cat == g_cat).all()
        sem = np.asarray(Image.open(out / "semantic" / "val" / p_ann["file_name"]))
        assert (sem == np.where(p_cat > 0, p_cat - 1, 255)).all()
    inst = json.loads((out / "annotations" / "instances_val.json").read_text())
    src = json.loads(clustered.read_text())
    assert len(inst["annotations"]) == len(src["annotations"])  # no synthetic object is fully hidden


def test_output_registers_and_maps_with_the_panoptic_training_mapper(synthetic_dataset, tmp_path):
    pytest.importorskip("detectron2")
    from detectron2.data import DatasetCatalog

    from seg_suite.data.datasets import register_panoptic_with_sem_seg
    from seg_suite.data.mappers.panoptic_lsj import PanopticLSJDatasetMapper
    from seg_suite.pseudo.panoptic import make_panoptic_pseudo_labels

    root = synthetic_dataset
    clustered, stuff_dir = _clustered_file(root, tmp_path)
    out = tmp_path / "pan"
    make_panoptic_pseudo_labels(clustered, root / "images" / "val", out, "val", stuff_dir=stuff_dir, num_stuff=2,
                                workers=0, progress=False)
    pan = json.loads((out / "annotations" / "panoptic_val.json").read_text())
    register_panoptic_with_sem_seg("h10_pseudo_val_panoptic", pan["categories"], str(out / "images" / "val"),
                                   str(out / "panoptic" / "val"), str(out / "annotations" / "panoptic_val.json"),
                                   str(out / "semantic" / "val"), str(out / "annotations" / "instances_val.json"))
    dicts = DatasetCatalog.get("h10_pseudo_val_panoptic")
    assert len(dicts) == len(pan["images"])
    mapper = PanopticLSJDatasetMapper(True, augmentations=[], image_format="RGB")
    d = mapper(dicts[0])
    segs = pan["annotations"][0]["segments_info"]
    assert d["instances"].gt_classes.tolist() == [s["category_id"] - 1 for s in segs]
    assert d["instances"].gt_masks.shape[0] == len(segs)
    assert d["sem_seg"].shape == d["image"].shape[1:]


def test_bad_stuff_maps_fail_alone_and_missing_folders_are_user_errors(synthetic_dataset, tmp_path):
    from seg_suite.cli import main

    root = synthetic_dataset
    clustered, stuff_dir = _clustered_file(root, tmp_path)
    Image.fromarray(np.full((256, 320), 7, np.uint8)).save(stuff_dir / "000001.png")  # cluster 7 of 2
    (stuff_dir / "000002.png").write_bytes(b"not a png")
    out = tmp_path / "pan"
    base = ["panoptic", "--input", str(clustered), "--images", str(root / "images" / "val"), "--num-stuff", "2",
            "--output", str(out), "--split", "val", "--workers", "0", "--no-progress"]
    assert main(base + ["--stuff-dir", str(stuff_dir)]) == 0
    failures = [json.loads(line) for line in (out / "annotations" / "panoptic_val.failures.jsonl").read_text().splitlines()]
    assert [f["key"] for f in failures] == ["000001.png", "000002.png"]
    assert "holds cluster 7" in failures[0]["reason"] and "cannot be read" in failures[1]["reason"]
    pan = json.loads((out / "annotations" / "panoptic_val.json").read_text())
    assert len(pan["images"]) == 6 - 2 and pan["info"]["inputs"]["num_failed"] == 2
    assert main(base + ["--stuff-dir", str(tmp_path / "nowhere"), "--overwrite"]) == 2
