"""seg_suite.io: image reading across modes, RLE round trips, atomic writes."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from seg_suite.io import (
    ImageReadError,
    atomic_write,
    atomic_write_json,
    bbox_iou,
    image_size,
    load_image,
    mask_iou,
    mask_to_bbox,
    mask_to_rle,
    rle_area,
    rle_to_mask,
)


def test_rle_roundtrip_non_square():
    rng = np.random.default_rng(0)
    mask = rng.random((37, 53)) > 0.6
    rle = mask_to_rle(mask)
    assert rle["size"] == [37, 53]
    assert isinstance(rle["counts"], str)
    json.dumps(rle)  # JSON-serialisable as written to COCO files
    np.testing.assert_array_equal(rle_to_mask(rle), mask)
    assert rle_area(rle) == mask.sum()


def test_polygon_and_uncompressed_rle_decode():
    poly = [[10.0, 10.0, 30.0, 10.0, 30.0, 20.0, 10.0, 20.0]]
    m = rle_to_mask(poly, 40, 50)
    assert m.shape == (40, 50)
    ys, xs = np.nonzero(m)
    assert xs.min() == 10 and ys.min() == 10 and xs.max() in (29, 30) and ys.max() in (19, 20)
    # uncompressed RLE: column-major runs; 2x3 image, first 2 pixels off then 4 on
    unc = {"size": [2, 3], "counts": [2, 4]}
    expected = np.array([[False, True, True], [False, True, True]])
    np.testing.assert_array_equal(rle_to_mask(unc), expected)


def test_bbox_and_iou():
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True
    assert mask_to_bbox(m) == [3.0, 2.0, 6.0, 3.0]
    assert mask_to_bbox(np.zeros((4, 4), bool)) == [0.0, 0.0, 0.0, 0.0]
    n = np.zeros_like(m)
    n[2:5, 6:12] = True
    assert mask_iou(m, n) == pytest.approx(9 / 27)
    assert mask_iou(np.zeros_like(m), np.zeros_like(m)) == 0.0
    assert bbox_iou([0, 0, 2, 2], [1, 1, 2, 2]) == pytest.approx(1 / 7)


@pytest.mark.parametrize(
    "mode,maker",
    [
        ("L", lambda a: Image.fromarray(a[..., 0])),
        ("RGBA", lambda a: Image.fromarray(np.dstack([a, np.full(a.shape[:2], 255, np.uint8)]))),
        ("P", lambda a: Image.fromarray(a).convert("P")),
        ("CMYK", lambda a: Image.fromarray(a).convert("CMYK")),
    ],
)
def test_load_image_modes_give_rgb_uint8(tmp_path, mode, maker):
    a = np.zeros((20, 30, 3), np.uint8)
    a[5:15, 10:20] = 200
    ext = "jpg" if mode == "CMYK" else "png"
    path = tmp_path / f"x.{ext}"
    maker(a).save(path)
    out = load_image(path)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    # the bright square is still the brightest region whatever the mode
    assert out[10, 15].mean() > out[0, 0].mean() + 100


def test_load_16bit_rescaled(tmp_path):
    a = np.zeros((8, 8), np.uint16)
    a[:, 4:] = 65535
    path = tmp_path / "d.png"
    Image.fromarray(a).save(path)
    out = load_image(path)
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 7].tolist() == [255, 255, 255]


def test_exif_rotation_applied(tmp_path):
    a = np.zeros((10, 30, 3), np.uint8)  # landscape pixels
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    path = tmp_path / "r.jpg"
    im.save(path, exif=exif)
    assert load_image(path).shape == (30, 10, 3)
    assert image_size(path) == (10, 30)


def test_bad_files_raise_one_line_reason(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    good = tmp_path / "good.jpg"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(good)
    truncated = tmp_path / "trunc.jpg"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    cases = {empty: "empty", text: "not a readable image", tmp_path / "missing.png": "not found"}
    for path, words in cases.items():
        with pytest.raises(ImageReadError) as err:
            load_image(path)
        assert words in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ImageReadError):
        load_image(truncated)
    with pytest.raises(ImageReadError, match="too large"):
        load_image(good, max_pixels=100)


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"a": np.int64(3), "b": np.float32(0.5), "c": np.arange(2)})
    assert json.loads(target.read_text()) == {"a": 3, "b": 0.5, "c": [0, 1]}
    with pytest.raises(RuntimeError):
        with atomic_write(target) as fh:
            fh.write('{"partial": ')
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text())["a"] == 3  # old content intact
    assert [p for p in os.listdir(tmp_path) if p != "out.json"] == []  # temp file removed
