"""Mask overlays: draw masks on an image, and render a whole COCO mask file to PNGs.

Works for any COCO mask file: ground truth or pseudo-labels (``images`` + ``annotations``, RLE or
polygons) and detectron2-style result lists (``[{image_id, segmentation, score}]``, which need the
ground-truth file to know image file names).

The file may come from anyone, so its structure is checked as a whole first
(:func:`seg_suite.io.coco.check_coco` / :func:`~seg_suite.io.coco.check_results`: a broken file is
one :class:`~seg_suite.errors.UserError`), and then each image on its own: a ``file_name`` that
leaves the image root (read) or the output folder (written), an unreadable image, or a mask that
does not fit its image (checked before anything is decoded) skips that image with the reason.
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
from seg_suite.io.coco import check_coco, check_results
from seg_suite.io.files import atomic_write_png, check_writable_dir
from seg_suite.io.images import ImageReadError, load_image
from seg_suite.io.masks import MaskFormatError, mask_to_bbox, rle_to_mask
from seg_suite.io.paths import PathEscapeError, output_path_under, resolve_under, safe_relative


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


def _image_table(annotations, gt, source: str, gt_source: str) -> tuple[list[dict], list[dict], dict]:
    """-> (images, annotations, category names) for a COCO dict or a results list (+ gt), both checked."""
    if isinstance(annotations, list):
        if gt is None:
            raise UserError("a prediction list has no image file names; pass --annotations with the ground truth")
        check_coco(gt, gt_source, "ground-truth file")
        check_results(annotations, source)
        known = {im["id"] for im in gt["images"]}
        if annotations and not any(r["image_id"] in known for r in annotations):
            raise UserError(f"no result in {source} is for an image of {gt_source} (first image id "
                            f"{annotations[0]['image_id']}); pass the ground truth the predictions were made on")
        images, anns, cats = gt["images"], annotations, gt.get("categories", [])
    else:
        check_coco(annotations, source)
        images, anns, cats = annotations["images"], annotations["annotations"], annotations.get("categories", [])
    names = {c["id"]: c.get("name", str(c["id"])) for c in cats}
    return images, anns, names


def render_coco(annotations, images_root, output_dir, max_images: int | None = None,
                score_threshold: float = 0.0, gt: dict | None = None, alpha: float = 0.5,
                progress: bool = True, source: str = "the annotation file",
                gt_source: str = "the ground-truth file") -> dict:
    """Write one overlay PNG per image of a COCO mask file to ``output_dir``.

    Output names mirror each image's ``file_name`` with a ``.png`` suffix. Images whose name leaves
    ``images_root`` or ``output_dir``, whose file is missing or unreadable, or whose masks do not
    fit the image are reported and skipped. Annotations scoring below ``score_threshold`` are not
    drawn. ``source``/``gt_source`` name the inputs in error messages. Returns
    {"written": [...], "missing": [reason, ...]}.
    """
    images, anns, names = _image_table(annotations, gt, source, gt_source)
    if not images:
        raise UserError(f"{source} lists no images")
    by_image = defaultdict(list)
    for a in anns:
        if a.get("score", 1.0) >= score_threshold:
            by_image[a["image_id"]].append(a)
    if max_images is not None:
        images = images[: max(0, int(max_images))]
    images_root, output_dir = Path(images_root), Path(output_dir)
    check_writable_dir(output_dir, "output folder")
    show_labels = len(names) > 1
    written, missing, taken = [], [], set()
    for im in tqdm(images, desc="visualize", unit="img", disable=not progress):
        name = im["file_name"]
        try:
            src = resolve_under(images_root, name, "file_name")
            dest = output_path_under(output_dir, safe_relative(name).with_suffix(".png").as_posix(), "file_name")
        except PathEscapeError as err:
            missing.append(f"image {im['id']}: {err}")
            continue
        if dest in taken:  # x.jpg and x.png both draw to x.png: keep the first, say so
            missing.append(f"image {im['id']}: {name} would overwrite the overlay of another image ({dest})")
            continue
        try:
            image = load_image(src)
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
            try:
                m = rle_to_mask(seg, h, w)  # at the image's own size, checked against it before decoding
            except MaskFormatError as err:
                what = f"annotation {a['id']}" if "id" in a else "a result"
                missing.append(f"{name}: {what}: {err}")
                masks = None
                break
            masks.append(m)
            labels.append(names.get(a.get("category_id")) if show_labels else None)
            scores.append(a.get("score"))
        if masks is None:
            continue
        have_scores = any(s is not None for s in scores)
        vis = overlay_masks(image, masks, labels if show_labels else None, scores if have_scores else None, alpha)
        atomic_write_png(dest, vis)
        taken.add(dest)
        written.append(os.fspath(dest))
    return {"written": written, "missing": missing}
