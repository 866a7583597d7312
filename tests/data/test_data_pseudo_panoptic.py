"""Panoptic pseudo-labels (seg_suite.pseudo.panoptic) register from DATASETS.PSEUDO_PANOPTIC and train.

The roots are written by the real PanopticJob from hand-made clustered instances and stuff maps
whose merge is unambiguous (no instance overlaps another or a stuff region), so the expected
per-pixel category map is known exactly; one root has 3 + 2 categories (uint8 semantic maps), the
other U2Seg's 300 + 27 (uint16 maps, void 65535).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("detectron2")

from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.data import transforms as T  # noqa: E402

from seg_suite.errors import UserError  # noqa: E402
from seg_suite.io.masks import mask_to_rle  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "configs/synthetic/maskformer2_R50_tiny_cpu_panoptic.yaml"
H, W = 48, 64


def _scene(index: int, things: list[int], stuff: list[int]):
    """Image, instances [(mask, category 1..K)], stuff map (0..S-1, 255) and the expected category map.

    things: thing categories of two boxes; stuff: stuff clusters of the top / bottom halves of the rest.
    """
    rng = np.random.default_rng(index)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    boxes = [(4 + index, 20 + index, 6, 26), (24, 40, 34 + index, 58)]  # y0, y1, x0, x1: disjoint
    instances, expected = [], np.zeros((H, W), np.int64)
    for (y0, y1, x0, x1), cat in zip(boxes, things):
        m = np.zeros((H, W), bool)
        m[y0:y1, x0:x1] = True
        instances.append((m, cat))
        expected[m] = cat
    stuff_map = np.full((H, W), 255, np.uint8)
    free = expected == 0
    top = np.zeros((H, W), bool)
    top[: H // 2] = True
    stuff_map[free & top] = stuff[0]
    stuff_map[free & ~top & (np.arange(W) < W - 4)] = stuff[1]  # the last 4 columns of the bottom stay void
    return image, instances, stuff_map, expected


def _make_root(tmp_path, num_things: int, num_stuff: int, things: list[int], stuff: list[int], n: int = 2):
    """Write images, a clustered instance file and stuff maps, run the panoptic job; returns
    (root, {file_name: expected category-id map, 0 = void})."""
    from seg_suite.pseudo.panoptic import make_panoptic_pseudo_labels

    images_dir, stuff_dir = tmp_path / "images", tmp_path / "stuff"
    images_dir.mkdir()
    stuff_dir.mkdir()
    coco = {"images": [], "annotations": [],
            "categories": [{"id": k, "name": f"c{k}"} for k in range(1, num_things + 1)]}
    expected = {}
    for i in range(n):
        name = f"im{i}.png"
        image, instances, stuff_map, cats = _scene(i, things, stuff)
        Image.fromarray(image).save(images_dir / name)
        Image.fromarray(stuff_map).save(stuff_dir / name)
        coco["images"].append({"id": i + 1, "file_name": name, "height": H, "width": W})
        for m, cat in instances:
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i + 1, "category_id": cat,
                                        "segmentation": mask_to_rle(m), "iscrowd": 0, "score": 0.9})
        for s in stuff:
            cats[(cats == 0) & (stuff_map == s)] = num_things + 1 + s
        expected[name] = cats
    clustered = tmp_path / "clustered.json"
    clustered.write_text(json.dumps(coco))
    root = tmp_path / "pseudo"
    make_panoptic_pseudo_labels(clustered, images_dir, root, "train", stuff_dir=stuff_dir, num_stuff=num_stuff,
                                num_things=num_things, workers=0, progress=False)
    return root, expected


def _cfg(opts):
    from seg_suite.engine.launch import build_config, register_datasets

    cfg = build_config(CONFIG, opts, 0)
    register_datasets(cfg)  # what tools/train_net.py, self-training and the pipeline run
    return cfg


def _check_mapped(d: dict, cats: np.ndarray, void: int):
    """gt classes / masks / sem_seg of an un-augmented mapper output against the category map."""
    classes = d["instances"].gt_classes.tolist()
    present = sorted(int(c) for c in np.unique(cats) if c)
    assert sorted(classes) == [c - 1 for c in present]  # contiguous id = category id - 1, one segment each
    for cls, mask in zip(classes, d["instances"].gt_masks.numpy()):
        assert (mask == (cats == cls + 1)).all()
    assert d["sem_seg"].dtype == torch.int64
    assert (d["sem_seg"].numpy() == np.where(cats > 0, cats - 1, void)).all()


@pytest.mark.parametrize("num_things,num_stuff,things,stuff,void,png_dtype", [
    (3, 2, [3, 1], [1, 0], 255, np.uint8),
    # U2Seg's sizes: semantic ids up to 326, and category 256 is contiguous class 255, a class, not void.
    (300, 27, [300, 256], [26, 0], 65535, np.uint16),
])
def test_config_key_registers_and_mapper_reproduces_the_labels(tmp_path, num_things, num_stuff, things, stuff,
                                                                void, png_dtype):
    from seg_suite.data.mappers import build_train_mapper
    from seg_suite.data.mappers.panoptic_lsj import PanopticLSJDatasetMapper

    root, expected = _make_root(tmp_path, num_things, num_stuff, things, stuff)
    name = f"h13_pseudo_pan_{num_things}"
    num = num_things + num_stuff
    cfg = _cfg(["DATASETS.PSEUDO_PANOPTIC", repr([[name, str(root), "train"]]), "DATASETS.TRAIN", f"('{name}',)",
                "MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(num)])

    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "coco_panoptic_seg" and meta.ignore_label == void
    assert len(meta.stuff_classes) == num and len(meta.thing_classes) == num_things
    assert meta.thing_dataset_id_to_contiguous_id == {k: k - 1 for k in range(1, num_things + 1)}
    assert meta.stuff_dataset_id_to_contiguous_id == {k: k - 1 for k in range(1, num + 1)}
    assert meta.json_file == str(root / "annotations" / "instances_train.json")

    assert build_train_mapper(cfg).ignore_label == void  # from the config: the set's void value
    dicts = DatasetCatalog.get(name)
    assert sorted(d["file_name"].rsplit("/", 1)[1] for d in dicts) == sorted(expected)
    for d in dicts:
        cats = expected[d["file_name"].rsplit("/", 1)[1]]
        sem_png = np.asarray(Image.open(d["sem_seg_file_name"]))
        assert sem_png.dtype == png_dtype
        assert sorted(s["category_id"] for s in d["segments_info"]) == sorted(int(c) - 1 for c in np.unique(cats) if c)
        assert all(s["isthing"] == (s["category_id"] < num_things) for s in d["segments_info"])
        mapper = PanopticLSJDatasetMapper(True, augmentations=[], image_format="RGB", ignore_label=void)
        _check_mapped(mapper(d), cats, void)

        # A flip and padding (the LSJ crop's pad): labels follow the image exactly, padding is void.
        pad = PanopticLSJDatasetMapper(True, augmentations=[T.RandomFlip(prob=1.0), T.FixedSizeCrop((H + 8, W + 16))],
                                       image_format="RGB", ignore_label=void)
        out = pad(d)
        flipped = np.zeros((H + 8, W + 16), np.int64)
        flipped[:H, :W] = cats[:, ::-1]
        _check_mapped(out, flipped, void)

    # The semantic mapper on the same set (its crop rule included) uses the set's void value too.
    sem_cfg = _cfg(["DATASETS.PSEUDO_PANOPTIC", repr([[name, str(root), "train"]]), "DATASETS.TRAIN", f"('{name}',)",
                    "MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(num), "INPUT.DATASET_MAPPER_NAME", "mask_former_semantic",
                    "INPUT.CROP.ENABLED", "True"])
    sem_mapper = build_train_mapper(sem_cfg)
    crop = [a for a in sem_mapper.augmentations.augs if isinstance(a, T.RandomCrop_CategoryAreaConstraint)]
    assert sem_mapper.ignore_label == void and crop[0].ignored_category == void
    sem = sem_mapper(dicts[0])["sem_seg"].numpy()
    cats = expected[dicts[0]["file_name"].rsplit("/", 1)[1]]
    assert set(np.unique(sem)) <= {int(c) - 1 for c in np.unique(cats) if c} | {void} and (sem != void).any()


def test_uint8_sets_keep_void_255_and_16bit_semantic_mapper(tmp_path):
    from seg_suite.data.mappers.semantic import SemanticDatasetMapper

    # The built-in registrations (133 COCO / 6 synthetic categories) keep uint8 maps with void 255.
    assert MetadataCatalog.get("synthetic_train_panoptic").ignore_label == 255
    assert MetadataCatalog.get("coco_2017_train_panoptic_with_sem_seg").ignore_label == 255

    # The semantic mapper reads a uint16 map as written (300 is a class, 65535 void).
    sem = np.full((H, W), 65535, np.uint16)
    sem[:10] = 300
    sem[10:20] = 255
    sem[20:30] = 3
    Image.fromarray(sem).save(tmp_path / "sem.png")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "im.png")
    mapper = SemanticDatasetMapper(True, augmentations=[], image_format="RGB", ignore_label=65535, size_divisibility=0)
    d = mapper({"file_name": str(tmp_path / "im.png"), "sem_seg_file_name": str(tmp_path / "sem.png")})
    assert (d["sem_seg"].numpy() == sem.astype(np.int64)).all()
    assert d["instances"].gt_classes.tolist() == [3, 255, 300]


def test_missing_files_and_too_few_classes_are_user_errors(tmp_path):
    from seg_suite.data.datasets import register_pseudo_panoptic

    with pytest.raises(UserError, match="annotation file .* not found: .*panoptic_train.json"):
        register_pseudo_panoptic("h13_missing", tmp_path / "nothing", "train")
    root, _ = _make_root(tmp_path, 3, 2, [3, 1], [1, 0], n=1)
    (root / "semantic" / "train" / "im0.png").rename(tmp_path / "moved.png")
    (root / "semantic" / "train").rmdir()
    with pytest.raises(UserError, match="semantic PNG folder .* not found"):
        register_pseudo_panoptic("h13_missing", root, "train")
    (root / "semantic" / "train").mkdir()
    with pytest.raises(UserError, match="has 5 categories but MODEL.SEM_SEG_HEAD.NUM_CLASSES is 4; set it to 5"):
        _cfg(["DATASETS.PSEUDO_PANOPTIC", repr([["h13_few", str(root), "train"]]), "DATASETS.TRAIN", "('h13_few',)",
              "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "4"])
    with pytest.raises(UserError, match=r"entries are \[name, root, split\]"):
        _cfg(["DATASETS.PSEUDO_PANOPTIC", repr([["h13_bad", str(root)]])])


def test_one_train_step_on_the_registered_u2seg_sized_set(tmp_path):
    """The tiny panoptic config, unchanged but for the data keys and NUM_CLASSES, trains on 327 classes."""
    from seg_suite.data.mappers import build_train_mapper
    from seg_suite.engine.trainer import Trainer

    root, _ = _make_root(tmp_path, 300, 27, [300, 256], [26, 0])
    cfg = _cfg(["DATASETS.PSEUDO_PANOPTIC", repr([["h13_train", str(root), "train"]]), "DATASETS.TRAIN",
                "('h13_train',)", "DATASETS.TEST", "()", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "327"])
    torch.manual_seed(0)
    np.random.seed(0)
    model = Trainer.build_model(cfg)
    model.train()
    mapper = build_train_mapper(cfg)
    batch = [mapper(d) for d in DatasetCatalog.get("h13_train")]
    assert all(b is not None and len(b["instances"]) > 0 for b in batch)
    assert max(int(b["instances"].gt_classes.max()) for b in batch) > 255  # classes beyond uint8 reach the loss
    losses = model(batch)
    assert {"loss_ce", "loss_mask", "loss_dice"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in losses.values())
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_train_net_trains_and_evaluates_from_the_config_key(tmp_path):
    """tools/train_net.py with the panoptic config and only data keys set: 3 iterations on 327
    classes, then PQ, AP and mIoU on the same registered set (about 11 s measured)."""
    root, _ = _make_root(tmp_path, 300, 27, [300, 256], [26, 0])
    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "tools/train_net.py", "--config-file", CONFIG, "--num-gpus", "0",
         "DATASETS.PSEUDO_PANOPTIC", repr([["h13_net", str(root), "train"]]), "DATASETS.TRAIN", "('h13_net',)",
         "DATASETS.TEST", "('h13_net',)", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "327", "SOLVER.MAX_ITER", "3",
         "SOLVER.IMS_PER_BATCH", "2", "OUTPUT_DIR", str(out)],
        cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    train = [m for m in metrics if "total_loss" in m]
    assert train[-1]["iteration"] == 2 and math.isfinite(train[-1]["total_loss"])
    evaluated = [m for m in metrics if "panoptic_seg/PQ" in m]
    assert evaluated and {"segm/AP", "sem_seg/mIoU"} <= set(evaluated[-1])
