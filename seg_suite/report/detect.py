"""What an input of ``seg-suite report`` is, from its files alone.

Kinds:
  recipe      a recipe run folder: ``recipe.lock.yaml`` and ``results.json``
  training    a detectron2 output folder holding ``metrics.json`` (or that file itself)
  evaluation  a ``seg-suite evaluate`` result JSON (``protocol``, ``fit``, ``mapping``)
  video_eval  a ``seg-suite evaluate-video`` result JSON (``sequences``, ``global``)
  video       ``motion-masks`` output: its COCO file (images carry ``sequence``) or its masks folder
  coco        a COCO mask file: pseudo-labels, predictions or clusters
  results     a detectron2 result list ([{image_id, segmentation, score...}]); needs the ground truth
"""

from __future__ import annotations

from pathlib import Path

from seg_suite.errors import UserError
from seg_suite.io.files import load_json

MASK_SUFFIX = ".png"


def _is_mask_root(folder: Path) -> bool:
    """A folder of sequence folders of PNG masks (``motion-masks``' OUT_masks, DAVIS Annotations)."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    subs = [p for p in entries if p.is_dir()]
    if len(subs) != len(entries):  # files beside the folders: an output folder (predict/...), not a mask root
        return False
    return bool(subs) and all(any(q.suffix.lower() == MASK_SUFFIX for q in p.iterdir()) for p in subs[:20])


def detect(path: str | Path) -> tuple[str, object]:
    """(kind, loaded content or the path) of ``path``; one-line UserError when it is none of the kinds."""
    path = Path(path)
    if path.is_dir():
        if (path / "results.json").is_file() and (path / "recipe.lock.yaml").is_file():
            return "recipe", path
        if (path / "metrics.json").is_file():
            return "training", path / "metrics.json"
        if _is_mask_root(path):
            return "video", path
        raise UserError(f"{path} is not a folder seg-suite report can show: expected a recipe run (recipe.lock.yaml, "
                        f"results.json), a training folder (metrics.json) or a folder of per-sequence mask folders")
    if not path.exists():
        raise UserError(f"report input not found: {path}")
    if path.name == "metrics.json":
        return "training", path
    if path.suffix.lower() != ".json":
        raise UserError(f"{path}: seg-suite report reads JSON files and folders, not {path.suffix or 'this file'}")
    doc = load_json(path, "report input")
    if isinstance(doc, dict):
        if {"protocol", "fit", "mapping"} <= doc.keys():
            return "evaluation", doc
        if {"sequences", "global"} <= doc.keys():
            return "video_eval", doc
        if isinstance(doc.get("images"), list) and isinstance(doc.get("annotations"), list):
            first = doc["images"][0] if doc["images"] else {}
            if isinstance(first, dict) and "sequence" in first and "frame_index" in first:
                return "video", doc
            return "coco", doc
    if isinstance(doc, list) and all(isinstance(r, dict) and "image_id" in r for r in doc[:100]):
        return "results", doc
    raise UserError(f"{path} is not a COCO mask file, a seg-suite evaluate or evaluate-video result, or a "
                    f"detectron2 metrics.json; seg-suite report cannot show it")
