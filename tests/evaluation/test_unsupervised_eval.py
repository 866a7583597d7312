"""Cluster -> class mappings and the metrics under them (seg_suite.evaluation.unsupervised)."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from seg_suite.errors import UserError
from seg_suite.evaluation import unsupervised as U


def stego_miou(conf: np.ndarray, mapping: np.ndarray) -> float:
    """Independent oracle: STEGO's formula on the class x class histogram of a full mapping."""
    c = conf.shape[1]
    hist = np.zeros((c, c))
    for k, m in enumerate(mapping):
        hist[m] += conf[k]  # rows: predicted class, columns: true class, as STEGO's histogram
    tp = np.diag(hist)
    fp = hist.sum(1) - tp
    fn = hist.sum(0) - tp
    with np.errstate(invalid="ignore"):
        iou = tp / (tp + fp + fn)
    return 100 * np.nanmean(iou)


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6])
def test_hungarian_equals_brute_force_permutation_search(k):
    rng = np.random.default_rng(k)
    for _ in range(5):
        conf = rng.integers(0, 1000, size=(k, k))
        # brute force: the permutation with the most matched pixels (STEGO's objective)
        best = max(itertools.permutations(range(k)), key=lambda p: sum(conf[i, p[i]] for i in range(k)))
        mapping = U.hungarian_mapping(conf)
        assert sum(conf[i, mapping[i]] for i in range(k)) == sum(conf[i, best[i]] for i in range(k))
        got = U.semantic_metrics(conf, mapping)["mIoU"]
        assert got == pytest.approx(stego_miou(conf, np.array(best)), abs=1e-9)
        assert got == pytest.approx(stego_miou(conf, mapping), abs=1e-9)


def test_hungarian_rectangular_brute_force():
    rng = np.random.default_rng(0)
    for k, c in ((2, 4), (3, 5), (5, 3)):
        conf = rng.integers(0, 500, size=(k, c))
        n = min(k, c)
        # best injective matching of min(k, c) pairs
        best = max(sum(conf[r, q] for r, q in zip(rows, cols))
                   for rows in itertools.combinations(range(k), n) for cols in itertools.permutations(range(c), n))
        m = U.hungarian_mapping(conf, extra="none")
        assert sum(conf[i, m[i]] for i in range(k) if m[i] >= 0) == best
        assert (m >= 0).sum() == n and len(set(m[m >= 0])) == n  # 1:1, extra clusters unmapped


def test_extra_clusters_assigned_by_further_rounds():
    conf = np.array([[9, 0], [0, 8], [5, 1], [1, 4], [0, 0]])
    m = U.hungarian_mapping(conf)  # round 1: 0->0, 1->1; round 2: 2->0, 3->1; cluster 4 has no data
    assert m.tolist() == [0, 1, 0, 1, -1]
    assert U.hungarian_mapping(conf, extra="none").tolist() == [0, 1, -1, -1, -1]


def test_majority_and_hungarian_differ_as_expected():
    # cluster 1 is mostly class 0: majority sends both clusters to class 0, Hungarian keeps 1:1.
    conf = np.array([[50, 0], [40, 10]])
    hung, maj = U.hungarian_mapping(conf), U.majority_mapping(conf)
    assert hung.tolist() == [0, 1] and maj.tolist() == [0, 0]
    h, m = U.semantic_metrics(conf, hung), U.semantic_metrics(conf, maj)
    # by hand: Hungarian IoU0 = 50/90, IoU1 = 10/50, pAcc 60/100; majority IoU0 = 90/100, IoU1 = 0, pAcc 90
    assert h["mIoU"] == pytest.approx(100 * (50 / 90 + 10 / 50) / 2)
    assert h["pAcc"] == pytest.approx(60.0)
    assert m["mIoU"] == pytest.approx(100 * (0.9 + 0.0) / 2)
    assert m["pAcc"] == pytest.approx(90.0)


def test_unlabelled_and_unmapped_pixels_count_as_wrong():
    pred = np.array([[0, 0, 255, 2]])
    gt = np.array([[0, 0, 0, 1]])
    conf = U.semantic_confusion(pred, gt, num_clusters=3, num_classes=2)
    assert conf.tolist() == [[2, 0], [0, 0], [0, 1], [1, 0]]  # last row: unlabelled predictions
    res = U.semantic_metrics(conf, np.array([0, 1, -1]))  # cluster 2 unmapped
    assert res["pAcc"] == pytest.approx(50.0)
    assert res["IoU"]["0"] == pytest.approx(200 / 3) and res["IoU"]["1"] == 0.0


def test_cocostuff_182_to_27_table():
    t = U.COCOSTUFF_FINE_TO_27
    assert len(t) == 182 and t.min() == 0 and t.max() == 26 and len(set(t.tolist())) == 27
    assert set(t[:91].tolist()) == set(range(12)) and set(t[91:].tolist()) == set(range(12, 27))
    # spot checks against STEGO src/data.py CocoSeg.fine_to_coarse
    assert [t[0], t[1], t[9], t[71], t[91], t[119], t[181]] == [9, 11, 8, 0, 17, 26, 24]
    assert U.cocostuff_to_27(np.array([0, 255, 181])).tolist() == [9, 255, 24]


def test_fit_split_is_disjoint_and_seeded():
    names = [f"{i:03d}.png" for i in range(10)]
    fit, score = U.split_fit_score(names, 0.3, seed=1)
    assert len(fit) == 3 and len(score) == 7 and not set(fit) & set(score) and sorted(fit + score) == names
    assert U.split_fit_score(names, 0.3, seed=1) == (fit, score)
    with pytest.raises(UserError):
        U.split_fit_score(names[:1])


# ---------------------------------------------------------- perfect, relabelled predictions
def _permuted_prediction(root, tmp_path, seed=3):
    """The synthetic ground truth with its category ids shuffled (things among things, stuff among stuff)."""
    rng = np.random.default_rng(seed)
    out = tmp_path / "pred"
    # semantic: contiguous 0..5 -> a random permutation of 0..5
    perm = rng.permutation(6)
    for p in sorted((root / "semantic" / "val").glob("*.png")):
        sem = np.asarray(Image.open(p))
        (out / "semantic").mkdir(parents=True, exist_ok=True)
        relabelled = np.where(sem == 255, 255, perm[np.minimum(sem, 5)]).astype(np.uint8)
        Image.fromarray(relabelled).save(out / "semantic" / p.name)
    # instances: thing ids 1..4 -> cluster ids 1..4 shuffled, plus unused clusters 5..7
    inst = json.loads((root / "annotations" / "instances_val.json").read_text())
    tperm = {k: int(v) + 1 for k, v in zip(range(1, 5), rng.permutation(4))}
    pred = dict(inst, categories=[{"id": k, "name": f"c{k}"} for k in range(1, 8)],
                annotations=[dict(a, category_id=tperm[a["category_id"]], score=1.0) for a in inst["annotations"]])
    # panoptic: same PNGs, segments relabelled (things 1..4 shuffled, stuff 5..6 swapped)
    pan = json.loads((root / "annotations" / "panoptic_val.json").read_text())
    pmap = {**tperm, 5: 6, 6: 5}
    pan_pred = dict(pan, annotations=[dict(a, segments_info=[dict(s, category_id=pmap[s["category_id"]])
                                                            for s in a["segments_info"]]) for a in pan["annotations"]])
    shutil.copytree(root / "panoptic" / "val", out / "panoptic")
    (out / "panoptic.json").write_text(json.dumps(pan_pred))
    return out, pred


def test_perfect_prediction_under_a_permutation_scores_100_everywhere(synthetic_dataset, tmp_path):
    root = synthetic_dataset
    out, pred = _permuted_prediction(root, tmp_path)
    gt = json.loads((root / "annotations" / "instances_val.json").read_text())
    for protocol in U.PROTOCOLS:
        inst = U.evaluate_instances(pred, gt, protocol=protocol)
        for kind in ("segm", "bbox"):
            assert inst[kind]["AP"] == pytest.approx(100.0) and inst[kind]["AP50"] == pytest.approx(100.0)
        ca = inst["class_agnostic"]
        assert (ca["AP"], ca["AP50"], ca["AR100"]) == pytest.approx((100.0, 100.0, 100.0))
        assert "disjoint" in inst["fit"]

        sem = U.evaluate_semantic(out / "semantic", root / "semantic" / "val", protocol=protocol)
        assert sem["mIoU"] == pytest.approx(100.0) and sem["pAcc"] == pytest.approx(100.0)

        pq = U.evaluate_panoptic(out / "panoptic.json", root / "annotations" / "panoptic_val.json",
                                 pred_dir=out / "panoptic", gt_dir=root / "panoptic" / "val", protocol=protocol)
        for part in ("All", "Things", "Stuff"):
            assert (pq[part]["pq"], pq[part]["sq"], pq[part]["rq"]) == pytest.approx((100.0, 100.0, 100.0))
        assert pq["Stuff"]["n"] == 2


def test_a_wrong_mapping_is_penalised(synthetic_dataset, tmp_path):
    """The same prediction, with two thing clusters merged, loses exactly those classes' AP."""
    root = synthetic_dataset
    _, pred = _permuted_prediction(root, tmp_path)
    gt = json.loads((root / "annotations" / "instances_val.json").read_text())
    merged = dict(pred, annotations=[dict(a, category_id=min(a["category_id"], 3)) for a in pred["annotations"]])
    res = U.evaluate_instances(merged, gt, fit=U.ScoredSplit())
    assert res["segm"]["AP"] < 100.0
    assert "optimistic" in res["fit"]


def test_cli_evaluate_writes_results_and_names_the_fit(synthetic_dataset, tmp_path, capsys):
    from seg_suite.cli import main

    root = synthetic_dataset
    out, _ = _permuted_prediction(root, tmp_path)
    target = tmp_path / "r.json"
    assert main(["evaluate", "--task", "semantic", "--pred", str(out / "semantic"), "--gt",
                 str(root / "semantic" / "val"), "--fit-on-scored-split", "--output", str(target),
                 "--no-progress"]) == 0
    res = json.loads(target.read_text())
    assert res["mIoU"] == pytest.approx(100.0) and "scored images themselves" in res["fit"]
    assert "fitted on the scored images themselves" in capsys.readouterr().out
    assert main(["evaluate", "--task", "semantic", "--pred", str(out / "semantic"), "--gt",
                 str(root / "semantic" / "val"), "--fit-on-scored-split", "--fit-pred", "x", "--fit-gt", "y"]) == 2


def test_hungarian_mapper_is_the_known_permutation():
    from scipy.optimize import linear_sum_assignment

    from seg_suite.evaluation.mapping import HungarianMapper
    conf = np.array([[0, 9, 1], [8, 0, 2], [1, 2, 7]])
    mapper = HungarianMapper().fit(conf)
    assert mapper.mapping_.tolist() == [1, 0, 2]
    rows, cols = linear_sum_assignment(conf, maximize=True)
    assert mapper.mapping_[rows].tolist() == cols.tolist()


def test_majority_mapper_maps_many_clusters_to_one_class():
    from seg_suite.evaluation.mapping import MajorityMapper
    conf = np.array([[5, 1], [7, 0], [0, 3], [0, 0]])
    mapper = MajorityMapper().fit(conf)
    assert mapper.mapping_.tolist() == [0, 0, 1, -1]
    assert mapper.transform(np.array([0, 1, 2, 3, 9, -1])).tolist() == [0, 0, 1, -1, -1, -1]
    assert mapper.transform(np.array([3, 9]), fill=255).tolist() == [255, 255]


def test_fit_split_default_is_not_shared_mutable_state():
    import dataclasses

    import pytest

    from seg_suite.evaluation.fit_split import HeldOut, ScoredSplit, SeparateSplit
    for split in (HeldOut(), ScoredSplit(), SeparateSplit()):
        with pytest.raises(dataclasses.FrozenInstanceError):
            split.description = "changed"
    assert HeldOut() == HeldOut(0.5, 0) and ScoredSplit().split(["b", "a"]) == (["a", "b"], ["a", "b"])


class _CountingTask:
    """A toy adapter: one cluster label per image, the class is the image's index mod 2."""

    def __init__(self, n):
        self.labels = {f"im{i}": (f"im{i}", i % 2, (i + 1) % 2) for i in range(n)}  # name -> (name, cluster, class)
        self.seen = {}

    def items(self):
        return self.labels

    def separate_items(self):
        return [("other0", 0, 1), ("other1", 1, 0), ("other2", 1, 0)]

    def fit(self, items, protocol, extra, separate):
        self.seen["fit"] = (list(items), separate)
        conf = np.zeros((2, 2), np.int64)
        for _, k, c in items:
            conf[k, c] += 1
        return U.fit_mapping(conf, protocol, extra)

    def score(self, mapping, names):
        self.seen["score"] = list(names)
        right = sum(int(mapping[self.labels[n][1]] == self.labels[n][2]) for n in names)
        return {"accuracy": 100.0 * right / len(names)}, mapping.tolist(), len(names)


def test_one_loop_fits_on_the_split_and_scores_the_rest():
    from seg_suite.evaluation.fit_score import fit_and_score

    task = _CountingTask(10)
    res = fit_and_score(task, U.HeldOut(0.3, seed=1), "hungarian", "assign")
    fit_items, separate = task.seen["fit"]
    assert not separate and len(fit_items) == 3 and len(task.seen["score"]) == 7
    fitted = {name for name, _, _ in fit_items}
    assert not fitted & set(task.seen["score"]) and fitted | set(task.seen["score"]) == set(task.labels)
    assert list(res) == ["accuracy", "protocol", "fit", "mapping"]
    assert res["accuracy"] == 100.0 and res["mapping"] == [1, 0]
    assert res["fit"].endswith("3 images fit the mapping, 7 are scored")

    task = _CountingTask(4)
    res = fit_and_score(task, U.SeparateSplit("another split"), "majority", "assign")
    assert task.seen["fit"] == (task.separate_items(), True) and task.seen["score"] == sorted(task.labels)
    assert res["fit"].startswith("another split") and res["accuracy"] == 100.0


def test_instances_with_a_repeated_file_name_are_refused(synthetic_dataset, tmp_path):
    root = synthetic_dataset
    _, pred = _permuted_prediction(root, tmp_path)
    gt = json.loads((root / "annotations" / "instances_val.json").read_text())
    gt["images"][1]["file_name"] = gt["images"][0]["file_name"]
    with pytest.raises(UserError, match="more than once"):
        U.evaluate_instances(pred, gt)
