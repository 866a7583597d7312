"""Self-training: the CutLER merge rule on hand-made predictions, and a tiny 2-round CPU run on the
synthetic set through the train_net code path, with --resume skipping finished rounds and
continuing an interrupted one from its last checkpoint."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seg_suite.workflows.self_training import merge_pseudo_labels, pairwise_mask_iou, round_thresholds
from seg_suite.errors import UserError
from seg_suite.io.masks import mask_iou, mask_to_rle, rle_to_mask

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "configs/synthetic/maskformer2_R50_tiny_cpu.yaml"
H, W = 20, 30


def _box(y0, y1, x0, x1):
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_round_thresholds():
    assert round_thresholds(2) == [0.7, 0.65]  # CutLER's README
    assert round_thresholds(1) == [0.7]  # the defaults fit any number of rounds
    assert round_thresholds(3) == [0.7, 0.65, 0.65]
    assert round_thresholds(4, [0.8, 0.6]) == [0.8, 0.6, 0.6, 0.6]
    with pytest.raises(UserError, match="2 thresholds given for 1 round"):
        round_thresholds(1, [0.7, 0.65])
    with pytest.raises(UserError):
        round_thresholds(2, [1.5])
    with pytest.raises(UserError):
        round_thresholds(0)


def test_pairwise_mask_iou_equals_pairwise_oracle():
    rng = np.random.default_rng(0)
    a = rng.random((4, H, W)) > 0.6
    b = rng.random((3, H, W)) > 0.4
    b[2] = False  # empty mask: IoU 0 with everything
    segs_b = [mask_to_rle(m) for m in b]
    segs_b[0] = {"size": [H, W], "counts": _uncompressed_counts(b[0])}  # uncompressed RLE input too
    got = pairwise_mask_iou([mask_to_rle(m) for m in a], segs_b, H, W)
    want = np.array([[mask_iou(x, y) for y in b] for x in a])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert pairwise_mask_iou([], segs_b, H, W).shape == (0, 3)


def _uncompressed_counts(mask):
    """COCO uncompressed RLE counts (column-major runs, starting with a run of zeros)."""
    flat = mask.T.reshape(-1).astype(np.int8)
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    runs = np.diff(np.concatenate([[0], change]))
    return [int(r) for r in runs]


def test_merge_rule_on_hand_made_predictions():
    a, b, c, d = _box(0, 10, 0, 10), _box(0, 10, 15, 25), _box(12, 20, 0, 8), _box(5, 15, 5, 15)
    p1 = _box(0, 10, 0, 6)  # IoU with A = 60 / 100 = 0.6 >= 0.5: A is replaced
    p2 = _box(0, 10, 19, 29)  # IoU with B = 60 / 140 = 0.43 < 0.5: B stays
    p3 = c.copy()  # covers C exactly, but its score is below the threshold: ignored, C stays
    p4 = _box(2, 8, 2, 8)
    assert mask_iou(p1, a) == pytest.approx(0.6) and mask_iou(p2, b) == pytest.approx(60 / 140)
    previous = {
        "info": {"description": "round 1"},
        "categories": [{"id": 1, "name": "fg"}],
        "images": [{"id": i, "file_name": f"{i}.png", "height": H, "width": W} for i in (1, 2, 3)],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "segmentation": mask_to_rle(a), "iscrowd": 0},
            # B as a polygon (x, y corners of the pixel block 15..24 x 0..9)
            {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0,
             "segmentation": [[15, 0, 25, 0, 25, 10, 15, 10]]},
            {"id": 12, "image_id": 1, "category_id": 1, "segmentation": mask_to_rle(c), "iscrowd": 0},
            {"id": 13, "image_id": 3, "category_id": 1, "segmentation": mask_to_rle(d), "iscrowd": 0},
        ],
    }
    assert mask_iou(rle_to_mask(previous["annotations"][1]["segmentation"], H, W), b) > 0.8  # polygon rasterised ~ B
    preds = [
        {"image_id": 1, "category_id": 1, "segmentation": mask_to_rle(p1), "score": 0.9},
        {"image_id": 1, "category_id": 1, "segmentation": mask_to_rle(p2), "score": 0.7},  # == threshold: kept
        {"image_id": 1, "category_id": 1, "segmentation": mask_to_rle(p3), "score": 0.69},
        {"image_id": 2, "category_id": 1, "segmentation": mask_to_rle(p4), "score": 0.75},
        {"image_id": 99, "category_id": 1, "segmentation": mask_to_rle(p4), "score": 0.99},
    ]
    merged, counts = merge_pseudo_labels(previous, preds, score_threshold=0.7)

    assert counts == {"kept_predictions": 3, "kept_pseudo_masks": 3, "dropped_pseudo_masks": 1,
                      "ignored_predictions": 1, "annotations": 6}
    anns = merged["annotations"]
    assert [x["id"] for x in anns] == [1, 2, 3, 4, 5, 6]
    assert [x["image_id"] for x in anns] == [1, 1, 1, 1, 2, 3]
    # Image 1: kept predictions first, then the pseudo-masks B and C in their original order.
    for ann, want in zip(anns, [p1, p2, b, c, p4, d]):
        got = rle_to_mask(ann["segmentation"], H, W)
        assert mask_iou(got, want) > (0.8 if ann.get("id") == 3 else 0.999)
    assert [x.get("score") for x in anns] == [0.9, 0.7, None, None, 0.75, None]
    # New annotations carry the true mask area and tight box.
    assert anns[0]["area"] == 60 and anns[0]["bbox"] == [0, 0, 6, 10]
    assert anns[4]["area"] == 36 and anns[4]["bbox"] == [2, 2, 6, 6]
    assert merged["images"] == previous["images"] and merged["categories"] == previous["categories"]
    assert merged["info"] == previous["info"]
    # A lower merge IoU also drops B (0.43 >= 0.4).
    _, counts = merge_pseudo_labels(previous, preds, score_threshold=0.7, merge_iou=0.4)
    assert counts["kept_pseudo_masks"] == 2 and counts["annotations"] == 5


# --- tiny end-to-end run ---------------------------------------------------------------------

# 3 iterations per round at batch 2 on 6 images of 256x320 (tiny R18 config); 1 class, as CutLER.
OPTS = ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "1", "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "2", "DATASETS.TEST", "()"]
# Round 1 keeps every prediction so the merge sees real predictions (a 3-iteration model scores
# all of them below CutLER's 0.7); round 2 uses 0.5.
THRESHOLDS = [0.0, 0.5]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from seg_suite.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("synth_selftrain")
    make_synthetic_dataset(root, num_train=6, num_val=0, num_videos=0, seed=0, progress=False)
    return root / "annotations" / "instances_train.json", root / "images" / "train"


def _self_train(synth, out, rounds, resume=False):
    from seg_suite.workflows.self_training import self_train

    return self_train(CONFIG, str(synth[0]), str(synth[1]), str(out), rounds=rounds, thresholds=THRESHOLDS[:rounds],
                      resume=resume, opts=OPTS, num_gpus=0)


def _predictions(folder: Path) -> list:
    """The round's predictions on its training images (COCO results written by the evaluator)."""
    [path] = (folder / "predict" / "inference").glob("*/coco_instances_results.json")
    return json.loads(path.read_text())


def test_bad_inputs_are_one_line_errors(synth, tmp_path):
    from seg_suite.workflows.self_training import self_train

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="cannot read pseudo-label file"):
        self_train(CONFIG, str(bad), str(synth[1]), str(tmp_path / "o1"), num_gpus=0)
    bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}], "annotations": []}))
    with pytest.raises(UserError, match="lacks height, width"):
        self_train(CONFIG, str(bad), str(synth[1]), str(tmp_path / "o2"), num_gpus=0)
    with pytest.raises(UserError, match="image folder not found"):
        self_train(CONFIG, str(synth[0]), str(tmp_path / "nowhere"), str(tmp_path / "o3"), num_gpus=0)


def _checkpoints(folder: Path) -> list:
    return sorted(p.name for p in folder.glob("*.pth"))


@pytest.mark.slow
def test_two_rounds_on_cpu_with_resume(synth, tmp_path, one_thread, capsys, monkeypatch):
    import seg_suite.workflows.self_training as st

    out = tmp_path / "st"
    # Round 1 alone, in this process.
    [r1] = _self_train(synth, out, rounds=1)
    round1 = out / "round_1"
    for name in ("train.json", "config.yaml", "metrics.json", "model_final.pth", "round.json"):
        assert (round1 / name).is_file(), name
    # The finished round keeps its final checkpoint only (CHECKPOINT_PERIOD 2 wrote model_0000001.pth).
    assert _checkpoints(round1) == ["model_final.pth"]
    # The terminal gets the round's steps; detectron2's log goes to self_train.log and log.txt, once.
    captured = capsys.readouterr()
    assert captured.err.count("[self-train] round 1: training on") == 1
    assert "Starting training" not in captured.out + captured.err and "Environment info" not in captured.out
    log = (out / "self_train.log").read_text()
    assert log.count("Starting training from iteration 0") == 1 and log.count("Environment info") == 2
    assert (round1 / "log.txt").read_text().count("Starting training from iteration 0") == 1
    assert (round1 / "train.json").read_bytes() == synth[0].read_bytes()
    preds = _predictions(round1)
    assert len(preds) == 6 * 16  # TEST.DETECTIONS_PER_IMAGE 16 per training image, all kept at 0.0
    first = json.loads((round1 / "train.json").read_text())
    nxt = json.loads((out / "round_2" / "train.json").read_text())
    assert r1["kept_predictions"] == 96 and r1["input_annotations"] == len(first["annotations"])
    assert len(nxt["annotations"]) == 96 + r1["kept_pseudo_masks"]
    assert nxt["images"] == first["images"]
    assert sum("score" in a for a in nxt["annotations"]) == 96
    assert set(r1["train_agreement"]) == {"segm", "bbox"}  # the model scored against its own training labels
    with pytest.raises(UserError, match="--resume"):
        _self_train(synth, out, rounds=2)
    mtime = (round1 / "model_final.pth").stat().st_mtime_ns

    # Round 2 trains from round 1's model and is stopped after training, before it is finished:
    # its periodic checkpoint is still there. Then, as if stopped after its checkpoint at iteration
    # 2 (index 1), its final checkpoint is removed.
    def stop(*args, **kwargs):
        raise RuntimeError("stopped before merging")

    monkeypatch.setattr(st, "merge_pseudo_labels", stop)
    with pytest.raises(RuntimeError, match="stopped before merging"):
        _self_train(synth, out, rounds=2, resume=True)
    monkeypatch.undo()
    round2 = out / "round_2"
    assert not (round2 / "round.json").exists()
    assert _checkpoints(round2) == ["model_0000001.pth", "model_final.pth"]
    (round2 / "model_final.pth").unlink()
    (round2 / "last_checkpoint").write_text("model_0000001.pth")

    # Two rounds through the CLI with --resume: round 1 is skipped, round 2 continues its training.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "seg_suite.cli", "self-train", "--config-file", CONFIG, "--input", str(synth[0]),
           "--images", str(synth[1]), "--output", str(out), "--rounds", "2", "--thresholds", *map(str, THRESHOLDS),
           "--num-gpus", "0", "--resume", *OPTS]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [line for line in res.stdout.splitlines() if line.startswith("round ")]
    assert len(lines) == 2 and lines[0].endswith("[finished earlier: skipped]") and "skipped" not in lines[1]
    assert (round1 / "model_final.pth").stat().st_mtime_ns == mtime
    assert "Starting training from iteration 2" in (round2 / "log.txt").read_text()
    assert _checkpoints(round2) == ["model_final.pth"]
    assert "Starting training" not in res.stdout + res.stderr and "[self-train] round 2: training on" in res.stderr
    cfg = (round2 / "config.yaml").read_text()
    assert str(round1 / "model_final.pth") in cfg and str(round2 / "train.json") in cfg
    r2 = json.loads((round2 / "round.json").read_text())
    scores = [p["score"] for p in _predictions(round2)]
    assert r2["score_threshold"] == 0.5 and r2["kept_predictions"] == sum(s >= 0.5 for s in scores)
    assert r2["annotations"] == r2["kept_predictions"] + r2["kept_pseudo_masks"]
    assert (out / "round_3" / "train.json").is_file()
    assert [s["round"] for s in json.loads((out / "summary.json").read_text())] == [1, 2]
    # Every run of the three calls logged its lines once: no handler was added twice.
    log = (out / "self_train.log").read_text()
    assert log.count("Starting training from iteration 0") == 2 and log.count("Starting training from iteration 2") == 1


def test_cli_rounds_one_uses_the_first_default_threshold(monkeypatch, tmp_path):
    import seg_suite.workflows.self_training as st
    from seg_suite.cli import main as cli_main

    seen = {}

    def fake_self_train(*args, rounds, thresholds, **kwargs):
        seen["thresholds"] = round_thresholds(rounds, thresholds)
        return []

    monkeypatch.setattr(st, "self_train", fake_self_train)
    base = ["self-train", "--config-file", "c.yaml", "--input", "l.json", "--images", "im", "--output", str(tmp_path)]
    assert cli_main(base + ["--rounds", "1"]) == 0
    assert seen["thresholds"] == [0.7]
    assert cli_main(base + ["--rounds", "3", "--thresholds", "0.8"]) == 0
    assert seen["thresholds"] == [0.8, 0.8, 0.8]
