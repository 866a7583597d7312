"""`evaluate` results carry the confusion their mapping was fitted on (what a report draws)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from seg_suite.evaluation.fit_split import ScoredSplit
from seg_suite.evaluation.unsupervised import evaluate_semantic


def test_semantic_confusion_counts_the_fit_pixels(tmp_path, synthetic_dataset):
    gt_dir = synthetic_dataset / "semantic" / "val"
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    total = np.zeros(0)
    for path in sorted(gt_dir.glob("*.png")):
        gt = np.asarray(Image.open(path))
        Image.fromarray(np.where(gt == 255, 255, (gt + 1) % 7).astype(np.uint8)).save(pred_dir / path.name)
        total = np.concatenate([total, gt[gt != 255].ravel()])
    res = evaluate_semantic(pred_dir, gt_dir, num_clusters=7, num_classes=int(total.max()) + 1, fit=ScoredSplit())
    conf = res["confusion"]
    counts = np.asarray(conf["counts"])
    assert counts.shape == (7, len(conf["classes"])) and conf["clusters"] == [str(k) for k in range(7)]
    assert counts.sum() == total.size
    for k, row in enumerate(counts):  # cluster k holds class k - 1, and the mapping says so
        if row.sum():
            assert int(np.argmax(row)) == (k - 1) % 7 and res["mapping"][str(k)] == (k - 1) % 7
