"""Mask overlays: draw masks on an image, and render a whole COCO mask file to PNGs.

Works for any COCO mask file: ground truth or pseudo-labels (``images`` + ``annotations``, RLE or
polygons) and detectron2-style result lists (``[{image_id, segmentation, score}]``, which need the
ground-truth file to know image file names).
"""

from __future__ import annotations

import colorsys
import os
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from seg_suite.errors import UserError
from seg_suite.io.files import atomic_write_png
from seg_suite.io.images import ImageReadError, load_image
from seg_suite.io.masks import mask_to_bbox, rle_to_mask


def mask_colors(n: int) -> np.ndarray:
    """n distinct saturated RGB colours (n x 3 uint8): hues stepped by the golden ratio."""
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    rgb = np.array([colorsys.hsv_to_rgb(h, 0.85, 1.0) for h in hues], np.float64).reshape(-1, 3)
    return np.round(rgb * 255).astype(np.uint8)


def overlay_masks(image: np.ndarray, masks, labels=None, scores=None, alpha: float = 0.5,
                  contours: bool = True) -> np.ndarray:
    """Blend each mask in its own colour over ``image`` and outline it.

    Args:
      image: HxWx3 uint8 RGB. masks: sequence of HxW bool (drawn in order, later on top).
      labels: optional per-mask strings; scores: optional per-mask floats; both are written as
        text at the mask's top-left corner (text may cover pixels outside the mask).
      alpha: mask opacity. contours: outline each mask (on its own boundary pixels).
    Returns HxWx3 uint8; pixels outside every mask are unchanged unless text is drawn.
    """
    out = image.copy()
    colors = mask_colors(len(masks))
    for m, c in zip(masks, colors):
        m = np.asarray(m, bool)
        if m.shape != image.shape[:2]:
            raise ValueError(f"mask shape {m.shape} does not match image {image.shape[:2]}")
        out[m] = np.round(out[m] * (1 - alpha) + c * alpha).astype(np.uint8)
        if contours:
            # findContours returns pixels of the mask itself, so outlines stay inside the mask
            cs, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            outline = np.zeros(m.shape, np.uint8)
            cv2.drawContours(outline, cs, -1, 1, 1)
            out[(outline > 0) & m] = c
    if labels is not None or scores is not None:
        for i, (m, c) in enumerate(zip(masks, colors)):
            parts = []
            if labels is not None and labels[i] is not None:
                parts.append(str(labels[i]))
            if scores is not None and scores[i] is not None:
                parts.append(f"{float(scores[i]):.2f}")
            if not parts or not np.any(m):
                continue
            x, y, _, _ = mask_to_bbox(np.asarray(m, bool))
            org = (int(x) + 2, max(int(y) + 12, 12))
            cv2.putText(out, " ".join(parts), org, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(out, " ".join(parts), org, cv2.FONT_HERSHEY_SIMPLEX, 0.4, tuple(int(v) for v in c), 1,
                        cv2.LINE_AA)
    return out


def _image_table(annotations, gt) -> tuple[list[dict], list[dict], dict]:
    """-> (images, annotations, category names) for a COCO dict or a results list (+ gt)."""
    if isinstance(annotations, dict):
        images, anns = annotations.get("images", []), annotations.get("annotations", [])
        cats = annotations.get("categories", [])
    elif isinstance(annotations, list):
        if gt is None:
            raise UserError("a prediction list has no image file names; pass --gt-json with the ground truth")
        images, anns, cats = gt.get("images", []), annotations, gt.get("categories", [])
    else:
        raise UserError(f"unsupported annotation file content: {type(annotations).__name__}")
    names = {c["id"]: c.get("name", str(c["id"])) for c in cats}
    return images, anns, names


def render_coco(annotations, images_root, output_dir, max_images: int | None = None,
                score_threshold: float = 0.0, gt: dict | None = None, alpha: float = 0.5,
                progress: bool = True) -> dict:
    """Write one overlay PNG per image of a COCO mask file to ``output_dir``.

    Output names mirror each image's ``file_name`` with a ``.png`` suffix. Images whose file is
    missing or unreadable are reported and skipped. Annotations scoring below
    ``score_threshold`` are not drawn. Returns {"written": [...], "missing": [reason, ...]}.
    """
    images, anns, names = _image_table(annotations, gt)
    if not images:
        raise UserError("the annotation file lists no images")
    by_image = defaultdict(list)
    for a in anns:
        if a.get("score", 1.0) >= score_threshold:
            by_image[a["image_id"]].append(a)
    if max_images is not None:
        images = images[: max(0, int(max_images))]
    images_root, output_dir = Path(images_root), Path(output_dir)
    show_labels = len(names) > 1
    written, missing = [], []
    for im in tqdm(images, desc="visualize", unit="img", disable=not progress):
        try:
            image = load_image(images_root / im["file_name"])
        except ImageReadError as err:
            missing.append(str(err))
            continue
        h, w = image.shape[:2]
        items = sorted(by_image.get(im["id"], []), key=lambda a: a.get("score", 1.0))  # best drawn last
        masks, labels, scores = [], [], []
        for a in items:
            seg = a.get("segmentation")
            if not seg:
                continue
            m = rle_to_mask(seg, h, w)
            if m.shape != (h, w):
                missing.append(f"mask size {m.shape} differs from image {(h, w)}: {im['file_name']}")
                masks = None
                break
            masks.append(m)
            labels.append(names.get(a.get("category_id")) if show_labels else None)
            scores.append(a.get("score"))
        if masks is None:
            continue
        have_scores = any(s is not None for s in scores)
        vis = overlay_masks(image, masks, labels if show_labels else None, scores if have_scores else None, alpha)
        rel = Path(im["file_name"])
        if rel.is_absolute():  # keep outputs inside output_dir
            rel = rel.relative_to(images_root) if rel.is_relative_to(images_root) else Path(rel.name)
        dest = output_dir / rel.with_suffix(".png")
        atomic_write_png(dest, vis)
        written.append(os.fspath(dest))
    return {"written": written, "missing": missing}
