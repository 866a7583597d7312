"""Stuff pseudo-labels (seg_suite.pseudo.semantic, seg-suite semantic-pseudo)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from seg_suite.pseudo.semantic import assign_stuff


def test_nearest_centroid_assignment_is_upsampled_to_the_image():
    # a 4x4 grid: left half feature e0, right half e1 (one patch per 8 px)
    grid = torch.zeros(4, 4, 3)
    grid[:, :2, 0] = 1
    grid[:, 2:, 1] = 1
    cent = torch.tensor([[0.0, 5.0, 0.0], [2.0, 0.1, 0.0], [0.0, 0.0, 1.0]])  # norms differ: cosine decides
    labels = assign_stuff(grid, cent, (32, 32))
    assert labels.shape == (32, 32) and labels.dtype == np.uint8
    assert (labels[:, :16] == 1).all() and (labels[:, 16:] == 0).all()


def test_crf_snaps_a_blurry_boundary_to_the_image_edge():
    pytest.importorskip("pydensecrf")
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, 12:] = 255  # the true edge is at column 12
    grid = torch.zeros(4, 4, 2)
    grid[:, :2, 0] = 1  # the patch grid puts it at column 16
    grid[:, 2:, 1] = 1
    cent = torch.eye(2)
    plain = assign_stuff(grid, cent, (32, 32))
    refined = assign_stuff(grid, cent, (32, 32), image=image, crf=True)
    truth = np.where(np.arange(32) < 12, 0, 1)[None].repeat(32, 0)
    assert (plain != truth).sum() == 32 * 4  # columns 12..15 wrong without the CRF
    assert (refined != truth).sum() < (plain != truth).sum() / 4  # measured: 0 wrong pixels


def test_cli_semantic_pseudo_separates_sky_and_ground_and_reuses_centroids(synthetic_dataset, tmp_path):
    from seg_suite.cli import main
    from seg_suite.evaluation.unsupervised import ScoredSplit, evaluate_semantic

    root = synthetic_dataset
    out = tmp_path / "stuff"
    common = ["--backbone", "handcrafted", "--input-size", "160", "--workers", "0", "--no-progress"]
    assert main(["semantic-pseudo", "--input", str(root / "images" / "train"), "--output", str(out),
                 "--k", "3", "--samples-per-image", "200", *common]) == 0
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == sorted(p.name for p in (root / "images" / "train").glob("*.png"))
    maps = [np.asarray(Image.open(p)) for p in pngs]
    assert all(m.shape == (256, 320) and m.max() < 3 for m in maps)
    centroids = np.load(out / "centroids.npy")
    samples = json.loads((out / "samples.json").read_text())
    assert centroids.shape == (3, samples["dim"]) and samples["num_rows"] == 8 * 200
    index = json.loads((out / "semantic.json").read_text())
    assert index["num_clusters"] == 3 and len(index["images"]) == 8
    # Sky vs ground only (objects ignored): the clusters must separate them.
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    for p in sorted((root / "semantic" / "train").glob("*.png")):
        sem = np.asarray(Image.open(p))
        Image.fromarray(np.where(sem == 4, 0, np.where(sem == 5, 1, 255)).astype(np.uint8)).save(gt_dir / p.name)
    res = evaluate_semantic(out, gt_dir, num_clusters=3, num_classes=2, protocol="majority", fit=ScoredSplit())
    assert res["pAcc"] >= 85.0  # measured 96.6 (sky/ground pixel accuracy, majority mapping; mIoU 93.5)
    # The saved centroids on new images: same maps for an image seen before.
    again = tmp_path / "again"
    assert main(["semantic-pseudo", "--input", str(root / "images" / "train"), "--output", str(again),
                 "--centroids", str(out / "centroids.npy"), "--max-images", "2", *common]) == 0
    for p in sorted(again.glob("*.png")):
        assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(out / p.name)))
    assert not (again / "samples.json").exists()
