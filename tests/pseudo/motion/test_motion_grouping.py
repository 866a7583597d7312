"""Parametric motion grouping on flows with a known answer."""

import numpy as np

from seg_suite.data.synthetic import generate_video
from seg_suite.evaluation.davis import jaccard
from seg_suite.pseudo.motion.grouping import (
    GroupingParams,
    MotionGrouper,
    design_matrix,
    fit_motion_mixture,
    split_components,
    warp_backward,
)


def test_exact_flow_gives_near_perfect_masks():
    # Exact flow of the synthetic videos (no flow error): grouping alone must find the objects.
    js = []
    for seed in range(3):
        v = generate_video(np.random.default_rng(seed), num_frames=4, height=96, width=128)
        g = MotionGrouper(GroupingParams(temporal_alpha=0.0))
        for t in range(3):
            seg = g.segment(v["flows"][t], None)
            js.append(jaccard(v["instance_masks"][t] > 0, seg.mask))
    # measured: every frame J = 1.0 (the flow is piecewise constant and exact)
    assert min(js) > 0.95


def test_static_video_and_pure_camera_motion_give_empty_masks():
    g = MotionGrouper()
    zero = np.zeros((60, 80, 2), np.float32)
    assert not g.segment(zero, zero).mask.any()
    # A global affine camera motion (zoom + pan) is explained by one model: nothing moves on its own.
    ys, xs = np.mgrid[0:60, 0:80].astype(np.float32)
    cam = np.stack([0.02 * (xs - 40) + 1.5, 0.02 * (ys - 30) - 0.5], axis=2)
    assert not MotionGrouper().segment(cam, -cam).mask.any()


def test_quadratic_model_fits_a_quadratic_field_exactly():
    h, w = 20, 30
    A = design_matrix(h, w, "quadratic")
    theta = np.array([[1.0, -2.0], [0.5, 0.3], [-0.2, 0.1], [0.4, 0.0], [0.0, -0.3], [0.2, 0.2]], np.float32)
    field = (A @ theta).reshape(h, w, 2)
    p = GroupingParams(model="quadratic", iterations=3)
    resp, preds = fit_motion_mixture(field, p, np.random.default_rng(0))
    best = resp.reshape(p.num_models, -1).sum(axis=1).argmax()
    assert np.abs(preds[best] - field).max() < 1e-2


def test_object_with_affine_background_and_two_objects_with_more_models():
    h, w = 64, 96
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    flow = np.stack([0.01 * xs + 0.5, np.full_like(xs, -0.3)], axis=2)
    gt = np.zeros((h, w), bool)
    gt[10:30, 10:30] = True
    flow[gt] = [4.0, 0.0]
    gt2 = np.zeros((h, w), bool)
    gt2[35:55, 60:85] = True
    flow[gt2] = [-3.0, 2.0]
    seg = MotionGrouper(GroupingParams(num_models=3, temporal_alpha=0.0)).segment(flow, None)
    assert jaccard(gt | gt2, seg.mask) > 0.95  # measured 1.0
    assert len(seg.instances) == 2  # two components, one per object


def test_warp_and_components():
    prev = np.zeros((10, 10), np.float32)
    prev[2:4, 2:4] = 1.0
    back = np.zeros((10, 10, 2), np.float32)
    back[..., 0] = -3.0  # frame t pixel x came from x - 3 in frame t-1: object moved right by 3
    warped = warp_backward(prev, back)
    assert np.allclose(warped[2:4, 5:7], 1.0) and warped[2:4, 2:4].max() == 0.0
    m = np.zeros((20, 20), bool)
    m[0:5, 0:5] = True
    m[10:11, 10:11] = True  # 1 px < min_area 0.01 * 400 px = 4 px: dropped
    cleaned, inst = split_components(m, m.astype(np.float32), min_area=0.01)
    assert len(inst) == 1 and not cleaned[10, 10] and inst[0][1] == 1.0
