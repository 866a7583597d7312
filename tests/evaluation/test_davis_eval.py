"""DAVIS-2016 / pooled-IoU protocols on hand-made masks with values derived by hand."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from seg_suite.evaluation import davis as D


def box(h, w, r0, r1, c0, c1):
    m = np.zeros((h, w), bool)
    m[r0:r1, c0:c1] = True
    return m


def test_jaccard_hand_values():
    gt = box(10, 10, 2, 6, 2, 6)  # 16 px
    pred = box(10, 10, 2, 6, 4, 8)  # 16 px, overlap 4 rows x 2 cols = 8, union 24
    assert D.jaccard(gt, pred) == pytest.approx(8 / 24)
    empty = np.zeros((10, 10), bool)
    assert D.jaccard(empty, empty) == 1.0  # DAVIS: both empty counts as perfect
    assert D.jaccard(gt, empty) == 0.0


def test_seg2bmap_square():
    # Square rows/cols 2..5: boundary = own right column and bottom row, the outside column left
    # of it, the outside row above it and the outside top-left corner: 4 + 4 - 1 + 4 + 4 + 1 = 16.
    b = D.seg2bmap(box(10, 10, 2, 6, 2, 6))
    expected = set()
    expected |= {(r, 5) for r in range(2, 6)} | {(5, c) for c in range(2, 6)}
    expected |= {(r, 1) for r in range(2, 6)} | {(1, c) for c in range(2, 6)} | {(1, 1)}
    assert set(zip(*np.nonzero(b))) == expected


def test_boundary_tolerance_is_ceil_of_diagonal_fraction():
    assert D.boundary_tolerance((100, 100)) == 2  # 0.008 * 141.4 = 1.13 -> 2
    assert D.boundary_tolerance((480, 854)) == 8  # 0.008 * 979.7 = 7.84 -> 8


def test_boundary_f_hand_values():
    gt = box(100, 100, 20, 60, 20, 60)  # 40x40, boundary 2h + 2w = 160 px, tolerance radius 2
    # Shift by 2 px: every boundary pixel has its partner at offset (0, 2), inside the disk.
    assert D.boundary_f(gt, box(100, 100, 20, 60, 22, 62)) == 1.0
    # Shift by 5 px horizontally: only horizontal edges still match; just check it drops.
    assert D.boundary_f(gt, box(100, 100, 20, 60, 25, 65)) < 0.6
    # Left half (40x20, boundary 120 px). Matched predicted pixels: left col 40 + top row 20 + corner 1
    # + bottom row 20 + right col rows 20,21,57,58 (59 already counted) = 85 -> P = 85/120.
    # Matched GT pixels: left 40 + corner 1 + top row cols 20..41 (22) + bottom row cols 20..41 (22)
    # = 85 -> R = 85/160.  F = 2PR/(P+R) = 170 / 280.
    half = box(100, 100, 20, 60, 20, 40)
    assert D.boundary_f(gt, half) == pytest.approx(170 / 280)
    assert D.jaccard(gt, half) == pytest.approx(0.5)
    far = box(100, 100, 70, 90, 70, 90)
    assert D.boundary_f(gt, far) == 0.0
    empty = np.zeros_like(gt)
    assert D.boundary_f(empty, empty) == 1.0
    assert D.boundary_f(gt, empty) == 0.0


def test_boundary_f_matches_skimage_oracle():
    from scipy.ndimage import binary_dilation
    from skimage.morphology import disk

    rng = np.random.default_rng(0)
    for _ in range(5):
        gt = np.zeros((60, 80), bool)
        pred = np.zeros((60, 80), bool)
        for m in (gt, pred):
            for _ in range(3):
                r, c = rng.integers(0, 50), rng.integers(0, 70)
                m[r : r + rng.integers(3, 20), c : c + rng.integers(3, 20)] = True
        r = math.ceil(0.008 * math.hypot(60, 80))
        bp, bg = D.seg2bmap(pred), D.seg2bmap(gt)
        p = (bp & binary_dilation(bg, structure=disk(r))).sum() / bp.sum()
        rc = (bg & binary_dilation(bp, structure=disk(r))).sum() / bg.sum()
        oracle = 0.0 if p + rc == 0 else 2 * p * rc / (p + rc)
        assert D.boundary_f(gt, pred) == pytest.approx(oracle)


def test_db_statistics_hand_values():
    v = np.array([1, 1, 0.9, 0.8, 0.6, 0.4, 0.3, 0.2])
    mean, recall, decay = D.db_statistics(v)
    assert mean == pytest.approx(5.2 / 8)
    assert recall == pytest.approx(5 / 8)
    # bin edges round(linspace(1, 8, 5)) - 1 = [0, 2, 4, 5, 7]; first bin v[0:3], last bin v[5:8]
    assert decay == pytest.approx((1 + 1 + 0.9) / 3 - (0.4 + 0.3 + 0.2) / 3)


def test_sequence_excludes_first_and_last_frames():
    gt = [box(20, 20, 5, 15, 5, 15)] * 5
    empty = np.zeros((20, 20), bool)
    pred = [empty, gt[1], gt[2], gt[3], empty]  # wrong on first and last only
    res = D.evaluate_sequence("s", gt, pred)
    assert res.J == [1.0, 1.0, 1.0]
    assert res.J_mean == 1.0 and res.F_mean == 1.0 and res.J_decay == 0.0


def _write_seq(root, seq, masks, scale=255):
    (root / seq).mkdir(parents=True)
    for i, m in enumerate(masks):
        Image.fromarray((m * scale).astype(np.uint8)).save(root / seq / f"{i:05d}.png")


def test_folder_eval_and_frame_mean(tmp_path):
    gt_root, pred_root = tmp_path / "gt", tmp_path / "pred"
    g = box(16, 16, 4, 12, 4, 12)
    e = np.zeros_like(g)
    _write_seq(gt_root, "a", [g] * 10)  # 0/255 ground truth: 255 is the object, not void
    _write_seq(pred_root, "a", [g] * 10)
    _write_seq(gt_root, "b", [g] * 4)
    _write_seq(pred_root, "b", [e] * 4)
    out = D.evaluate_davis(gt_root, pred_root)
    assert out["sequences"]["a"]["J_mean"] == 1.0
    assert out["sequences"]["b"]["J_mean"] == 0.0
    assert out["global"]["J-Mean"] == pytest.approx(0.5)
    assert out["global"]["J-FrameMean"] == pytest.approx(10 / 14)  # frame-weighted (RCF)
    json.dumps(out)  # the result is plain JSON


def test_missing_prediction_is_user_error(tmp_path):
    gt_root, pred_root = tmp_path / "gt", tmp_path / "pred"
    g = box(16, 16, 4, 12, 4, 12)
    _write_seq(gt_root, "a", [g] * 3)
    (pred_root / "a").mkdir(parents=True)
    from seg_suite.errors import UserError

    with pytest.raises(UserError, match="missing prediction"):
        D.evaluate_davis(gt_root, pred_root)
    assert D.evaluate_davis(gt_root, pred_root, allow_missing=True)["global"]["J-Mean"] == 0.0


def test_pooled_protocol(tmp_path):
    gt_root, pred_root = tmp_path / "gt", tmp_path / "pred"
    g = box(10, 10, 0, 4, 0, 4)  # 16 px
    half = box(10, 10, 0, 4, 0, 2)  # 8 px -> IoU 0.5
    e = np.zeros_like(g)
    # Two objects with instance ids 1 and 2 in a palette PNG are merged into one foreground.
    (gt_root / "s1").mkdir(parents=True)
    inst = np.zeros((10, 10), np.uint8)
    inst[0:4, 0:2] = 1
    inst[0:4, 2:4] = 2
    im = Image.fromarray(inst, mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    im.save(gt_root / "s1" / "00000.png")
    Image.fromarray(g.astype(np.uint8) * 255).save(gt_root / "s1" / "00001.png")
    _write_seq(pred_root, "s1", [g, half])
    _write_seq(gt_root, "s2", [g, e])
    _write_seq(pred_root, "s2", [e, e])  # IoU 0, then both empty (NaN, skipped)
    out = D.evaluate_pooled(gt_root, pred_root)
    assert out["sequences"]["s1"]["IoU"] == pytest.approx(0.75)
    assert out["sequences"]["s2"]["IoU"] == 0.0
    assert out["global"]["IoU"] == pytest.approx(1.5 / 3)  # pooled over frames, not sequences
