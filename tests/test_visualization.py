"""Overlays: colours per mask, untouched background, COCO rendering incl. result lists."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from seg_suite.cli import main
from seg_suite.io.masks import mask_to_rle
from seg_suite.visualization import mask_colors, overlay_masks, render_coco

H, W = 30, 50


def _image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def _masks():
    a = np.zeros((H, W), bool)
    a[2:12, 3:20] = True
    b = np.zeros((H, W), bool)
    b[15:28, 25:45] = True
    return a, b


def test_overlay_colours_differ_and_background_unchanged():
    img = _image()
    a, b = _masks()
    out = overlay_masks(img, [a, b], alpha=0.5)
    assert out.shape == img.shape and out.dtype == np.uint8
    outside = ~(a | b)
    assert np.array_equal(out[outside], img[outside])
    ca, cb = mask_colors(2)
    assert not np.array_equal(ca, cb)
    # interior pixels are the exact 50/50 blend with the mask's own colour
    inner = np.zeros_like(a)
    inner[4:10, 5:18] = True
    assert np.array_equal(out[inner], np.round(img[inner] * 0.5 + ca * 0.5).astype(np.uint8))
    # outlines are drawn in the full colour on the mask's own boundary pixels
    assert np.all(out[2, 3:20] == ca) and np.all(out[27, 25:45] == cb)


def test_many_colours_are_distinct():
    c = mask_colors(20)
    assert len({tuple(x) for x in c}) == 20


def test_render_coco_file_and_result_list(tmp_path):
    img = _image()
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(img).save(root / "sub" / "x.png")
    a, b = _masks()
    poly_b = [[25, 15, 44.9, 15, 44.9, 27.9, 25, 27.9]]  # polygon for b
    gt = {"images": [{"id": 1, "file_name": "sub/x.png", "height": H, "width": W},
                     {"id": 2, "file_name": "gone.png", "height": H, "width": W}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": mask_to_rle(a)},
                          {"id": 2, "image_id": 1, "category_id": 1, "segmentation": poly_b}],
          "categories": [{"id": 1, "name": "object"}]}
    res = render_coco(gt, root, tmp_path / "out", progress=False)
    assert len(res["written"]) == 1 and len(res["missing"]) == 1 and "gone.png" in res["missing"][0]
    vis = np.asarray(Image.open(tmp_path / "out" / "sub" / "x.png"))
    assert not np.array_equal(vis[a], img[a]) and not np.array_equal(vis[b], img[b])
    assert np.array_equal(vis[~(a | b)], img[~(a | b)])

    # result list: image names come from the ground truth; low scores are hidden
    preds = [{"image_id": 1, "segmentation": mask_to_rle(a), "score": 0.9},
             {"image_id": 1, "segmentation": mask_to_rle(b), "score": 0.1}]
    res = render_coco(preds, root, tmp_path / "out2", score_threshold=0.5, gt=gt, max_images=1,
                      progress=False)
    vis = np.asarray(Image.open(res["written"][0]))
    assert np.array_equal(vis[b], img[b])  # hidden by the threshold
    assert not np.array_equal(vis[a], img[a])


def test_cli_visualize(tmp_path):
    img = _image()
    Image.fromarray(img).save(tmp_path / "x.png")
    a, _ = _masks()
    ann = {"images": [{"id": 3, "file_name": "x.png", "height": H, "width": W}],
           "annotations": [{"id": 1, "image_id": 3, "category_id": 1, "segmentation": mask_to_rle(a),
                            "score": 0.7}]}
    (tmp_path / "p.json").write_text(json.dumps(ann))
    rc = main(["visualize", "--input", str(tmp_path / "p.json"), "--images", str(tmp_path),
               "--output", str(tmp_path / "vis"), "--no-progress"])
    assert rc == 0 and (tmp_path / "vis" / "x.png").exists()
    assert main(["visualize", "--input", str(tmp_path / "p.json"), "--images", str(tmp_path / "no"),
                 "--output", str(tmp_path / "vis")]) == 2
