"""datasets/prepare_*.py: panoptic -> semantic maps and ADE20K label shifting."""

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "datasets" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_semantic_maps_from_panoptic_match_the_synthetic_semantic_maps(synthetic_dataset, tmp_path):
    # The synthetic generator writes its semantic maps independently of its panoptic PNGs
    # (contiguous index in category-id order, 255 unlabelled): converting the panoptic files must
    # reproduce them pixel for pixel.
    from seg_suite.data.synthetic import SYNTHETIC_CATEGORIES

    prep = load_script("prepare_coco_semantic_annos_from_panoptic")
    root = Path(synthetic_dataset)
    n = prep.convert_split(str(root / "annotations" / "panoptic_val.json"), str(root / "panoptic" / "val"),
                           str(tmp_path / "sem"), SYNTHETIC_CATEGORIES, progress=False)
    assert n == 6
    for path in sorted((root / "semantic" / "val").glob("*.png")):
        expected = np.asarray(Image.open(path))
        got = np.asarray(Image.open(tmp_path / "sem" / path.name))
        assert got.dtype == np.uint8 and np.array_equal(got, expected)


def test_unlisted_segments_and_void_become_255(tmp_path):
    prep = load_script("prepare_coco_semantic_annos_from_panoptic")
    ids = np.array([[0, 5, 5], [7, 7, 300]])  # 0 void, 300 not in segments_info
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "p.png")
    out = prep.semantic_from_panoptic(str(tmp_path / "p.png"),
                                      [{"id": 5, "category_id": 20}, {"id": 7, "category_id": 3}], {3: 0, 20: 1})
    assert out.tolist() == [[255, 1, 1], [0, 0, 255]]


def test_ade20k_labels_shift_by_one_with_other_ignored(tmp_path):
    prep = load_script("prepare_ade20k_sem_seg")
    label = np.array([[0, 1, 2], [150, 75, 0]], np.uint8)
    assert prep.convert_label(label).tolist() == [[255, 0, 1], [149, 74, 255]]
    src = tmp_path / "ADEChallengeData2016" / "annotations"
    for split in ("training", "validation"):
        (src / split).mkdir(parents=True)
        Image.fromarray(label).save(src / split / "ADE_x.png")
    assert prep.main(["--root", str(tmp_path)]) == 0
    out = np.asarray(Image.open(tmp_path / "ADEChallengeData2016" / "annotations_detectron2" / "validation" / "ADE_x.png"))
    assert out.tolist() == [[255, 0, 1], [149, 74, 255]]
    assert prep.main(["--root", str(tmp_path / "missing")]) == 2
