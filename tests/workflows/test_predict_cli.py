"""`seg-suite predict` on a trained checkpoint: its files load in the evaluators and score exactly what
the in-training evaluation of the same checkpoint scores; bad inputs are one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seg_suite.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs/synthetic/maskformer2_R50_tiny_cpu_panoptic.yaml")
# Every query whose class is not "no object" becomes a segment, so a briefly trained model still
# predicts segments of every kind for the scores to compare.
MODEL_OPTS = ["MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.0"]


@pytest.fixture(scope="module")
def trained(synthetic_dataset, tmp_path_factory):
    """(checkpoint, results of the in-training evaluation on synthetic_val_panoptic, its output folder)."""
    import torch

    from seg_suite.engine.api import build_config, evaluate, train
    from seg_suite.engine.launch import release_log_handlers

    out = tmp_path_factory.mktemp("predict_cli")
    opts = ["DATASETS.SYNTHETIC_ROOT", str(synthetic_dataset), "SOLVER.IMS_PER_BATCH", "2", "SEED", "0",
            "SOLVER.CHECKPOINT_PERIOD", "100", *MODEL_OPTS]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = build_config(CONFIG, [*opts, "OUTPUT_DIR", str(out / "train"), "SOLVER.MAX_ITER", "12",
                                    "DATASETS.TEST", "()"], num_gpus=0)
        train(cfg, num_gpus=0)
        weights = out / "train" / "model_final.pth"
        eval_cfg = build_config(CONFIG, [*opts, "OUTPUT_DIR", str(out / "eval")], num_gpus=0)
        results = evaluate(eval_cfg, weights, num_gpus=0)
    finally:
        torch.set_num_threads(threads)
        release_log_handlers()
    return weights, results, out / "eval" / "inference" / "synthetic_val_panoptic"


def _by_gt_ids(pred_json: Path, gt: dict, dest: Path) -> Path:
    """The prediction file with the ground truth's image ids (images pair up by file name)."""
    pred = json.loads(pred_json.read_text())
    gt_id = {im["file_name"]: im["id"] for im in gt["images"]}
    new_id = {im["id"]: gt_id[im["file_name"]] for im in pred["images"]}
    for ann in pred["annotations"]:
        ann["image_id"] = new_id[ann["image_id"]]
    dest.write_text(json.dumps(pred))
    return dest


def test_predict_output_scores_as_the_in_training_evaluation(trained, synthetic_dataset, tmp_path, capsys,
                                                            one_thread):
    from pycocotools import mask as mask_util

    from seg_suite.evaluation.class_agnostic import evaluate_class_agnostic
    from seg_suite.evaluation.panoptic import pq_compute
    from seg_suite.evaluation.sem_seg import confusion_matrix, sem_seg_metrics
    from seg_suite.io.coco import read_coco

    weights, results, inference = trained
    data, out = synthetic_dataset, tmp_path / "pred"
    # Categories from the config's training set (registered from DATASETS.SYNTHETIC_ROOT).
    code = main(["predict", "--config-file", CONFIG, "--weights", str(weights), "--input", str(data / "images" / "val"),
                 "--output", str(out), "--no-progress", "--workers", "0",
                 "DATASETS.SYNTHETIC_ROOT", str(data), *MODEL_OPTS])
    assert code == 0, capsys.readouterr().err
    record = json.loads((out / "predict.json").read_text())["counts"]
    assert record["images"] == 6 and record["segments"] > 0 and record["instances"] > 0

    # PQ: the same numbers as the in-training PanopticEvaluator, to float precision.
    gt_pan = json.loads((data / "annotations" / "panoptic_val.json").read_text())
    pred_pan = _by_gt_ids(out / "panoptic.json", gt_pan, tmp_path / "panoptic_gt_ids.json")
    pq = pq_compute(str(data / "annotations" / "panoptic_val.json"), str(pred_pan), str(data / "panoptic" / "val"),
                    str(out / "panoptic"), progress=False)
    expected = results["panoptic_seg"]
    for suffix, name in (("", "All"), ("_th", "Things"), ("_st", "Stuff")):
        for m in ("pq", "sq", "rq"):
            assert 100 * pq[name][m] == pytest.approx(expected[m.upper() + suffix], abs=1e-9)
    assert json.loads((inference / "panoptic_results.json").read_text())["All"]["n"] == pq["All"]["n"]

    # Instances: the evaluator's own COCO results, mask for mask (predict leaves out empty masks, which
    # match nothing), and they load in the class-agnostic AP.
    gt_inst = read_coco(data / "annotations" / "instances_val.json")
    ours = _by_gt_ids(out / "instances.json", gt_inst, tmp_path / "instances_gt_ids.json")
    key = lambda a: (a["image_id"], a["category_id"], round(a["score"], 6), a["segmentation"]["counts"])  # noqa: E731
    theirs = [a for a in json.loads((inference / "coco_instances_results.json").read_text())
              if mask_util.area(a["segmentation"]) > 0]
    assert sorted(map(key, json.loads(ours.read_text())["annotations"])) == sorted(map(key, theirs))
    ap = evaluate_class_agnostic(read_coco(out / "instances.json"), gt_inst)
    assert 0 <= ap["AP"] <= 100 and np.isfinite(ap["AR100"])

    # Semantic PNGs: the evaluator's mIoU.
    conf = sum(confusion_matrix(np.asarray(Image.open(p)), np.asarray(Image.open(data / "semantic" / "val" / p.name)),
                                6) for p in sorted((out / "semantic").glob("*.png")))
    assert sem_seg_metrics(conf)["mIoU"] == pytest.approx(results["sem_seg"]["mIoU"], abs=1e-9)


def test_semantic_only_model_writes_what_it_makes(trained, synthetic_dataset, tmp_path):
    from seg_suite.workflows.predict import predict_images

    weights, _, _ = trained
    written = predict_images(CONFIG, weights, synthetic_dataset / "images" / "val", tmp_path / "sem",
                             categories=synthetic_dataset / "annotations" / "panoptic_val.json", max_images=2,
                             opts=["MODEL.MASK_FORMER.TEST.PANOPTIC_ON", "False",
                                   "MODEL.MASK_FORMER.TEST.INSTANCE_ON", "False"], progress=False, workers=0)
    assert written["complete"] and written["images"] == 2 and written["instances"] == 0
    assert written["panoptic_json"] is None and written["panoptic_dir"] is None
    assert len(list(Path(written["semantic_dir"]).glob("*.png"))) == 2
    assert json.loads(Path(written["instances_json"]).read_text())["annotations"] == []


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_missing_weights_is_one_line(synthetic_dataset, tmp_path, capsys):
    code = main(["predict", "--config-file", CONFIG, "--weights", str(tmp_path / "nope.pth"),
                 "--input", str(synthetic_dataset / "images" / "val"), "--output", str(tmp_path / "out")])
    assert code == 2 and "nope.pth" in _one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_unknown_input_is_one_line(tmp_path, capsys):
    (tmp_path / "w.pth").write_bytes(b"")
    code = main(["predict", "--config-file", CONFIG, "--weights", str(tmp_path / "w.pth"),
                 "--input", str(tmp_path / "no_such_folder"), "--output", str(tmp_path / "out")])
    assert code == 2 and "input not found" in _one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_categories_that_do_not_fit_the_model_are_one_line(synthetic_dataset, tmp_path, capsys):
    (tmp_path / "w.pth").write_bytes(b"")
    (tmp_path / "cats.json").write_text(json.dumps({"categories": [{"id": 1, "name": "object"}]}))
    common = ["predict", "--config-file", CONFIG, "--weights", str(tmp_path / "w.pth"),
              "--input", str(synthetic_dataset / "images" / "val"), "--output", str(tmp_path / "out")]
    assert main([*common, "--categories", str(tmp_path / "cats.json")]) == 2
    assert "1 categories but the model has 6 classes" in _one_error_line(capsys)
    # Without --categories, a training set that is not registered names no classes.
    assert main([*common, "DATASETS.TRAIN", "('h13_unregistered_set',)"]) == 2
    assert "--categories" in _one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_two_shards_merged_equal_one_run(trained, synthetic_dataset, tmp_path, one_thread):
    from seg_suite.data.synthetic import SYNTHETIC_CATEGORIES
    from seg_suite.pseudo.shards import ShardSpec
    from seg_suite.workflows.predict import merge_prediction_shards, predict_images

    def predict(out, shard=ShardSpec()):  # a shard task of the recipe runner
        return predict_images(CONFIG, trained[0], synthetic_dataset / "images" / "val", out,
                              categories=SYNTHETIC_CATEGORIES, opts=MODEL_OPTS, shard=shard, resume=True,
                              progress=False, workers=0)

    one, two = tmp_path / "one", tmp_path / "two"
    whole = predict(one)
    shards = [predict(two, ShardSpec(2, i)) for i in range(2)]
    assert whole["complete"] and not any(s["complete"] or s["instances_json"] for s in shards)
    merged = merge_prediction_shards(two, 2)
    assert {k: v for k, v in merged.items() if k != "record" and not k.endswith(("_json", "_dir"))} == \
        {k: v for k, v in whole.items() if k != "record" and not k.endswith(("_json", "_dir"))}
    assert merged["panoptic_json"] == str(two / "panoptic.json")
    files = lambda root: {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))  # noqa: E731
                          if p.suffix == ".png" or p.name in ("instances.json", "panoptic.json")}
    assert files(one) == files(two) and len(files(one)) == 2 + 2 * 6
    assert merge_prediction_shards(two, 2) == merged  # joined once; a rerun leaves it
