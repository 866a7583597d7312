"""Reading COCO instance files (ground truth, pseudo-labels, results) with their structure checked.

Annotation files come from other people and other tools, so everything that reads one goes
through :func:`read_coco` (an ``images`` + ``annotations`` file), :func:`read_named_coco` (one whose
images are work items keyed by file name) or :func:`read_results` (a detectron2/COCO result list). They refuse, with one line naming the file, what would otherwise
fail later with a traceback or succeed silently with wrong numbers:

- a file that is missing, truncated, not JSON, or JSON of the wrong shape (a list where an
  object is expected);
- image records without an integer ``id`` and a string ``file_name``, or whose ``height`` and
  ``width`` are not positive integers within the pixel limit;
- duplicate image ids or annotation ids, annotations pointing to an image that is not listed, and
  (when the file lists categories) annotations of a category it does not list;
- with ``check_masks=True``, any segmentation that does not fit its image
  (:func:`seg_suite.io.masks.check_segmentation`), and ``file_name`` values that leave the
  image root (:func:`seg_suite.io.paths.safe_relative`).

Commands that go on past a bad image (visualize, cluster, refine) read with ``check_masks=False``:
:func:`seg_suite.io.masks.rle_to_mask` and :func:`seg_suite.io.paths.resolve_under` then refuse
the bad item alone, and it is listed as failed with the reason.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from seg_suite.errors import UserError
from seg_suite.io.files import load_json
from seg_suite.io.masks import MAX_MASK_PIXELS, MaskFormatError, check_segmentation, rle_to_mask
from seg_suite.io.paths import PathEscapeError, safe_relative


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        return f"an object with keys {sorted(map(str, obj))[:6]}"
    return f"a JSON {type(obj).__name__}"


def _first_duplicate(values) -> Any:
    counts = Counter(values)
    return next((v for v, n in counts.items() if n > 1), None)


def check_coco(coco: Any, path: str | os.PathLike, what: str = "annotation file", *,
               check_masks: bool = False, max_pixels: int = MAX_MASK_PIXELS) -> dict:
    """Validate an already loaded COCO instance dict (see the module docstring); returns it."""
    if not (isinstance(coco, dict) and isinstance(coco.get("images"), list)
            and isinstance(coco.get("annotations"), list)):
        hint = " (a result list needs the ground-truth file beside it)" if isinstance(coco, list) else ""
        raise UserError(f"{path} is not a COCO {what}: expected an object with 'images' and 'annotations' "
                        f"lists, found {_describe(coco)}{hint}")
    images = coco["images"]
    for im in images:
        if not (isinstance(im, dict) and _is_int(im.get("id")) and isinstance(im.get("file_name"), str)):
            raise UserError(f"{path}: every image needs an integer 'id' and a string 'file_name' (found {im!r:.120})")
        h, w = im.get("height"), im.get("width")
        if h is not None or w is not None:
            if not (_is_int(h) and _is_int(w) and h >= 1 and w >= 1):
                raise UserError(f"{path}: image {im['id']} has height/width {h!r}/{w!r}, not positive integers")
            if h * w > max_pixels:
                raise UserError(f"{path}: image {im['id']} claims {w}x{h} pixels, over the "
                                f"{max_pixels / 1e6:.0f} MP limit")
        if check_masks:
            try:
                safe_relative(im["file_name"], "file_name")
            except PathEscapeError as err:
                raise UserError(f"{path}: image {im['id']}: {err}") from None
    dup = _first_duplicate(im["id"] for im in images)
    if dup is not None:
        raise UserError(f"{path}: image id {dup} appears more than once; image ids must be unique")
    cats = coco.get("categories", [])
    if not isinstance(cats, list) or not all(isinstance(c, dict) and _is_int(c.get("id")) for c in cats):
        raise UserError(f"{path}: 'categories' must be a list of objects with an integer 'id'")
    by_id = {im["id"]: im for im in images}
    cat_ids = {c["id"] for c in cats}
    anns = coco["annotations"]
    for ann in anns:
        if not (isinstance(ann, dict) and _is_int(ann.get("image_id"))):
            raise UserError(f"{path}: every annotation needs an integer 'image_id' (found {ann!r:.120})")
        if "id" in ann and not _is_int(ann["id"]):
            raise UserError(f"{path}: annotation id {ann['id']!r} is not an integer")
        if cat_ids and "category_id" in ann and ann["category_id"] not in cat_ids:
            raise UserError(f"{path}: annotation {ann.get('id')} has category_id {ann['category_id']!r}, which is "
                            f"not in 'categories'")
        im = by_id.get(ann["image_id"])
        if im is None:
            raise UserError(f"{path}: annotation {ann.get('id')} points to image id {ann['image_id']}, "
                            f"which is not in 'images'")
        if check_masks and ann.get("segmentation") is not None:
            try:
                check_segmentation(ann["segmentation"], im.get("height"), im.get("width"), max_pixels)
            except MaskFormatError as err:
                raise UserError(f"{path}: annotation {ann.get('id')} of image {im['id']}: {err}") from None
    dup = _first_duplicate(a["id"] for a in anns if "id" in a)
    if dup is not None:
        raise UserError(f"{path}: annotation id {dup} appears more than once; annotation ids must be unique")
    return coco


def read_coco(path: str | os.PathLike, what: str = "annotation file", *, check_masks: bool = False,
              max_pixels: int = MAX_MASK_PIXELS) -> dict:
    """Load and validate a COCO instance file; one-line :class:`UserError` for anything wrong."""
    return check_coco(load_json(path, what), path, what, check_masks=check_masks, max_pixels=max_pixels)


def read_named_coco(path: str | os.PathLike, what: str = "annotation file") -> dict:
    """A COCO instance file whose images are work items keyed by file name; one-line UserError otherwise.

    Beyond :func:`check_coco` (structure, unique integer ids, no annotation of a
    missing image), every annotation needs a segmentation and file names must be unique, since an
    image is one work item keyed by its file name.
    """
    path = Path(path)
    coco = load_json(path, what)
    if isinstance(coco, dict) and isinstance(coco.get("images"), list) and isinstance(coco.get("annotations"), list):
        ids = {im["id"] for im in coco["images"] if isinstance(im, dict) and isinstance(im.get("id"), int)}
        for i, ann in enumerate(coco["annotations"]):
            image_id = ann.get("image_id") if isinstance(ann, dict) else None
            if not isinstance(image_id, int) or image_id not in ids or ann.get("segmentation") is None:
                raise UserError(f"{path}: annotations[{i}] lacks a 'segmentation' or names an image_id not in images")
    check_coco(coco, path, what)
    names = set()
    for image in coco["images"]:
        if image["file_name"] in names:
            raise UserError(f"{path}: file_name {image['file_name']!r} appears twice; each image must be listed once")
        names.add(image["file_name"])
    return coco


def images_by_name(coco: dict) -> dict[str, tuple[dict, list[dict]]]:
    """file_name -> (its image record, its annotations in file order), for a :func:`read_named_coco` file."""
    by_id = {image["id"]: (image, []) for image in coco["images"]}
    for ann in coco["annotations"]:
        by_id[ann["image_id"]][1].append(ann)
    return {image["file_name"]: (image, anns) for image, anns in by_id.values()}


def annotations_by_file(coco: dict) -> dict[str, list[dict]]:
    """file_name -> that image's annotations, each with the image's height/width attached as ``_h``/``_w``
    (None where the image does not give them)."""
    by_id = {im["id"]: im for im in coco["images"]}
    out: dict[str, list[dict]] = {im["file_name"]: [] for im in coco["images"]}
    for ann in coco["annotations"]:
        im = by_id.get(ann["image_id"])
        if im is None:
            continue
        out[im["file_name"]].append({**ann, "_h": im.get("height"), "_w": im.get("width")})
    return out


def decode_image_masks(key: str, anns: list[dict], h: int, w: int) -> list[np.ndarray]:
    """The masks of one image's annotations (from :func:`annotations_by_file`) at its true size ``h`` x ``w``.

    :class:`MaskFormatError` with the reason for an annotation recorded for another image size, or
    a segmentation that cannot be decoded safely; ``key`` names the image in that message.
    """
    masks = []
    for ann in anns:
        if ann["_h"] is not None and (ann["_h"], ann["_w"]) != (h, w):
            raise MaskFormatError(f"annotation {ann.get('id')} is for a {ann['_w']}x{ann['_h']} image, "
                                  f"the file is {w}x{h}")
        try:
            masks.append(rle_to_mask(ann.get("segmentation"), h, w))
        except MaskFormatError as err:
            raise MaskFormatError(f"annotation {ann.get('id')} of {key}: {err}") from None
    return masks


def check_results(results: Any, path: str | os.PathLike, image_ids=None, what: str = "prediction file") -> list:
    """Validate a COCO result list ``[{"image_id", "segmentation" or "bbox", "score", ...}]``.

    ``image_ids``, when given, are the ground truth's: a result for another image is refused.
    """
    if not isinstance(results, list):
        raise UserError(f"{path} is not a COCO {what}: expected a list of results, found {_describe(results)}")
    for r in results:
        if not (isinstance(r, dict) and _is_int(r.get("image_id"))
                and ("segmentation" in r or "bbox" in r)):
            raise UserError(f"{path} is not a COCO {what}: each result needs an integer 'image_id' and a "
                            f"'segmentation' or 'bbox' (found {r!r:.120})")
        score = r.get("score", 1.0)
        if not isinstance(score, (int, float)) or isinstance(score, bool) or score != score:
            raise UserError(f"{path}: result for image {r['image_id']} has score {score!r}, not a number")
    if image_ids is not None:
        known = set(image_ids)
        stray = next((r["image_id"] for r in results if r["image_id"] not in known), None)
        if stray is not None:
            raise UserError(f"{path}: a result is for image id {stray}, which the ground truth does not list")
    return results


def read_results(path: str | os.PathLike, image_ids=None, what: str = "prediction file") -> list:
    """Load and validate a COCO result list (see :func:`check_results`)."""
    return check_results(load_json(path, what), path, image_ids, what)
