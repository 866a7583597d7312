"""Binary masks <-> COCO RLE, boxes, areas and IoU, with every decode checked first.

COCO conventions throughout: RLE is ``{"size": [height, width], "counts": str}`` in
column-major order (pycocotools), boxes are ``[x, y, width, height]`` in pixels.

pycocotools trusts its input: an RLE whose ``size`` is 60000x60000 allocates 3.6 GB, and
compressed ``counts`` whose runs add up to more than the size write past the buffer. So
:func:`check_segmentation` validates a segmentation against the image it belongs to and a pixel
limit before anything is allocated, and :func:`rle_to_mask` always calls it.
"""

from __future__ import annotations

import math

import numpy as np
from pycocotools import mask as mask_utils

# The most pixels a mask may cover: the same limit as for images (seg_suite.io.images).
MAX_MASK_PIXELS = 200_000_000


class MaskFormatError(ValueError):
    """A segmentation that cannot be decoded safely; ``str(err)`` is a one-line reason."""


def _rle_counts_total(counts: str) -> int:
    """Sum of the runs of compressed COCO RLE counts (pycocotools' ``rleFrString`` format), validated.

    Each run is a little-endian group of 5-bit digits in characters 48..111; bit 0x20 continues
    the group and bit 0x10 of the last digit is the sign; from the third run on, each is stored
    as a difference to the run two places before. Raises MaskFormatError for characters out of
    range, an unterminated last group, a group too long for 64 bits or a negative run.
    """
    if not counts:
        return 0
    try:
        raw = np.frombuffer(counts.encode("ascii"), np.uint8).astype(np.int64) - 48
    except UnicodeEncodeError:
        raise MaskFormatError("RLE counts hold non-ASCII characters") from None
    if raw.min() < 0 or raw.max() > 63:
        raise MaskFormatError("RLE counts hold characters outside the COCO alphabet")
    more = (raw & 0x20) != 0
    if more[-1]:
        raise MaskFormatError("RLE counts end in the middle of a number (truncated)")
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > 12:
        raise MaskFormatError("RLE counts hold a number too long for 64 bits")
    group = np.repeat(np.arange(len(ends)), lengths)
    digit = np.arange(len(raw)) - starts[group]
    values = np.zeros(len(ends), np.int64)
    np.add.at(values, group, (raw & 0x1F) << (5 * digit))
    negative = (raw[ends] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * lengths[negative])
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])
    runs[2::2] = np.cumsum(values[2::2])
    if runs.min() < 0:
        raise MaskFormatError("RLE counts decode to a negative run length (corrupt counts)")
    return int(runs.sum())


def check_segmentation(segmentation, height: int, width: int, max_pixels: int = MAX_MASK_PIXELS) -> None:
    """Raise :class:`MaskFormatError` unless ``segmentation`` decodes safely to a ``height`` x ``width`` mask.

    Accepts compressed RLE (``counts`` a string), uncompressed RLE (``counts`` a list of run
    lengths) and polygons (a list of flat ``[x1, y1, x2, y2, ...]`` lists). The image size is
    checked against ``max_pixels``; an RLE's ``size`` must equal ``[height, width]`` and its runs
    must cover exactly ``height * width`` pixels. Nothing is decoded.
    """
    if not (isinstance(height, int) and isinstance(width, int)) or isinstance(height, bool) \
            or isinstance(width, bool) or height < 1 or width < 1:
        raise MaskFormatError(f"image size {height!r}x{width!r} is not two positive integers")
    if height * width > max_pixels:
        raise MaskFormatError(f"mask size {height}x{width} is over the {max_pixels / 1e6:.0f} MP limit")
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if not (isinstance(size, (list, tuple)) and len(size) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in size)):
            raise MaskFormatError(f"RLE size {size!r} is not [height, width]")
        if list(size) != [height, width]:
            raise MaskFormatError(f"RLE size {list(size)} differs from its image's {height}x{width}")
        if isinstance(counts, str):
            total = _rle_counts_total(counts)
        elif isinstance(counts, list):
            if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32 for v in counts):
                raise MaskFormatError("uncompressed RLE counts must be non-negative integers")
            total = sum(counts)
        else:
            raise MaskFormatError(f"RLE counts must be a string or a list, got {type(counts).__name__}")
        if total != height * width:
            raise MaskFormatError(f"RLE runs cover {total} pixels, not the {height}x{width} = {height * width} "
                                  f"of its size (corrupt counts)")
        return
    if isinstance(segmentation, list):
        if not segmentation:
            raise MaskFormatError("polygon segmentation is an empty list")
        for poly in segmentation:
            # pycocotools reads a 4-number list as a box, not a polygon: a polygon needs 3 points.
            if not (isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                            for v in poly)):
                raise MaskFormatError("a polygon must be a flat list of at least 3 finite x, y pairs")
        return
    raise MaskFormatError(f"segmentation must be RLE (a dict) or polygons (a list), got {type(segmentation).__name__}")


def mask_to_rle(mask: np.ndarray) -> dict:
    """Encode an HxW boolean mask as compressed COCO RLE with a ``str`` counts field."""
    if mask.ndim != 2:
        raise ValueError(f"expected an HxW mask, got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"]}


def rle_to_mask(rle: dict | list, height: int | None = None, width: int | None = None,
                max_pixels: int = MAX_MASK_PIXELS) -> np.ndarray:
    """Decode COCO RLE (compressed or uncompressed) or polygons to an HxW bool mask.

    ``height`` and ``width`` are the image's size; without them an RLE's own ``size`` is taken
    (polygons need them). The segmentation is validated first (:func:`check_segmentation`);
    raises :class:`MaskFormatError` with a one-line reason instead of decoding a bad one.
    """
    if height is None or width is None:
        if isinstance(rle, list):
            raise MaskFormatError("polygon segmentation needs the image's height and width")
        size = rle.get("size") if isinstance(rle, dict) else None
        if not (isinstance(size, (list, tuple)) and len(size) == 2):
            raise MaskFormatError(f"RLE size {size!r} is not [height, width]")
        height, width = size
    check_segmentation(rle, height, width, max_pixels)
    if isinstance(rle, list):  # polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(rle, height, width))
    elif isinstance(rle["counts"], list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(rle, height, width)
    else:
        rle = {"size": [height, width], "counts": rle["counts"].encode("ascii")}
    return mask_utils.decode(rle).astype(bool)


def rle_area(rle: dict) -> int:
    r = dict(rle)
    if isinstance(r.get("counts"), str):
        r["counts"] = r["counts"].encode("ascii")
    return int(mask_utils.area(r))


def mask_area(mask: np.ndarray) -> int:
    return int(np.count_nonzero(mask))


def mask_to_bbox(mask: np.ndarray) -> list[float]:
    """Tight ``[x, y, w, h]`` box of a mask (pixel extents, so a 1-pixel mask is 1x1)."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs[0]), float(ys[0]), float(xs[-1] - xs[0] + 1), float(ys[-1] - ys[0] + 1)]


def masks_to_boxes(masks):
    """Tight boxes (x1, y1, x2, y2) of (N, H, W) boolean torch masks, x2/y2 exclusive; empty -> zeros.

    The convention of detectron2's ``BitMasks.get_bounding_boxes``. torch is imported here, not at
    module level, so the numpy-only users of this module never load it.
    """
    import torch

    n, h, w = masks.shape
    if n == 0:
        return torch.zeros(0, 4, dtype=torch.float32, device=masks.device)
    cols = masks.any(1)  # (N, W)
    rows = masks.any(2)  # (N, H)
    x1 = cols.int().argmax(1)
    x2 = w - cols.flip(1).int().argmax(1)
    y1 = rows.int().argmax(1)
    y2 = h - rows.flip(1).int().argmax(1)
    boxes = torch.stack([x1, y1, x2, y2], 1).float()
    return boxes * cols.any(1, keepdim=True)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks of the same shape (0 when both are empty)."""
    inter = np.count_nonzero(a & b)
    union = np.count_nonzero(a | b)
    return float(inter) / union if union else 0.0


def bbox_iou(a: list[float], b: list[float]) -> float:
    """IoU of two ``[x, y, w, h]`` boxes."""
    ax2, ay2 = a[0] + a[2], a[1] + a[3]
    bx2, by2 = b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0
