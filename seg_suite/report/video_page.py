"""The report of video masks (``motion-masks`` output, or any ``<root>/<seq>/<frame>.png`` folder),
optionally scored against DAVIS-2016 ground truth, or of a ``seg-suite evaluate-video`` result.

Sections: J and F per sequence (with ground truth), a strip of frames per sequence with the mask
drawn in, J per frame, and the frames where J drops the most from the frame before.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from seg_suite.errors import UserError
from seg_suite.report import plots
from seg_suite.report.assets import Assets
from seg_suite.report.overlays import ImageSource, draw, side_by_side
from seg_suite.report.page import Gallery, Page, Section, Table, cell

FRAMES_PER_STRIP = 8
WORST_FRAMES = 8
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


def _masks_root(kind: str, content, path: Path) -> Path | None:
    if kind == "video_eval":
        return None
    if isinstance(content, dict):  # the COCO file of motion-masks: its masks are in <stem>_masks beside it
        root = path.with_name(path.stem + "_masks")
        if not root.is_dir():
            raise UserError(f"{path} is motion-masks output but its masks folder {root} is missing; pass the masks "
                            f"folder itself as --input")
        return root
    return path


def _frames(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.iterdir() if p.suffix.lower() == ".png")


def _read_mask(path: Path) -> np.ndarray:
    from seg_suite.evaluation.davis import read_binary_mask

    return read_binary_mask(path)


def _frame_image(reader: ImageSource, seq: str, stem: str, shape) -> np.ndarray:
    root = reader.root
    if root is not None:
        for suffix in FRAME_SUFFIXES:
            if (Path(root) / seq / (stem + suffix)).is_file():
                return reader.read(f"{seq}/{stem}{suffix}", *shape)
        reader.problems[f"{seq}/{stem}"] = f"no frame {seq}/{stem} (.jpg/.png) under {root}"
    return reader.read(f"{seq}/{stem}", *shape) if root is None else np.full((*shape, 3), 96, np.uint8)


def video_page(kind: str, content, path: Path, assets: Assets, *, frames_root=None, gt_root=None,
               max_images: int = 200) -> Page:
    path = Path(path)
    masks_root = _masks_root(kind, content, path)
    page = Page(f"Video masks: {path.name}")
    seqs = sorted(p.name for p in masks_root.iterdir() if p.is_dir()) if masks_root else []
    if kind == "video_eval":
        res = content
        page.intro = [f"{path}: a {res.get('protocol', 'video')} evaluation result; the masks themselves are not "
                      f"in it (report on the masks folder with --gt to see them)"]
    elif gt_root is not None:
        from seg_suite.evaluation.davis import evaluate_davis

        gt_root = Path(gt_root)
        names = sorted(p.name for p in gt_root.iterdir() if p.is_dir()) if gt_root.is_dir() else []
        common = [s for s in seqs if s in names]
        if not common:
            raise UserError(f"no sequence of {masks_root} has ground truth under {gt_root}")
        res = evaluate_davis(gt_root, masks_root, common, allow_missing=True)
        page.intro = [f"{masks_root}: {len(seqs)} sequences, scored against {gt_root} (DAVIS-2016: first and last "
                      f"frames excluded)"]
    else:
        res = None
        page.intro = [f"{masks_root}: {len(seqs)} sequences; pass --gt with the annotation root for J and F"]
    if res is not None and "global" in res:
        page.intro.append("  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                    for k, v in res["global"].items()))
    per_seq = (res or {}).get("sequences", {})

    sec = page.add(Section("sequences", "Per sequence"))
    if per_seq:
        names = list(per_seq)
        cols = [k for k in ("J_mean", "J_recall", "J_decay", "F_mean", "F_recall", "F_decay", "IoU", "num_frames")
                if any(k in r for r in per_seq.values())]
        sec.table = Table(["sequence", *cols], [[cell(n), *[cell(per_seq[n].get(k), 3) for k in cols]] for n in names])
        series = {k: [per_seq[n].get(k) for n in names] for k in ("J_mean", "F_mean") if k in cols}
        if series:
            sec.plots.append(assets.figure(plots.grouped_bars(names, series, "J and F per sequence", "mean"),
                                           "jf_per_sequence", "J and F per sequence"))
        curves = {n: (list(range(1, len(r["J"]) + 1)), r["J"]) for n, r in per_seq.items() if r.get("J")}
        if curves:
            sec.plots.append(assets.figure(plots.curves(curves, "J per frame", "frame"), "j_per_frame",
                                           "J per frame of each sequence"))
    else:
        sec.notes = ["no ground truth given: J and F need --gt (the DAVIS annotation root)"]
        rows = []
        for s in seqs:
            frames = _frames(masks_root / s)
            rows.append([cell(s), cell(len(frames))])
        sec.table = Table(["sequence", "frames"], rows)

    if masks_root is None:
        return page
    reader = ImageSource(frames_root)
    gt_dir = Path(gt_root) if gt_root is not None else None
    strips = page.add(Section("strips", "Frames with the mask drawn in"))
    per_strip = max(2, min(FRAMES_PER_STRIP, max_images // max(1, len(seqs))))
    counter = 0

    def panel(seq: str, stem: str) -> np.ndarray:
        mask = _read_mask(masks_root / seq / f"{stem}.png")
        picture = _frame_image(reader, seq, stem, mask.shape)
        out = draw(picture, [mask])
        gt_path = gt_dir / seq / f"{stem}.png" if gt_dir is not None else None
        if gt_path is not None and gt_path.is_file():
            gt = _read_mask(gt_path)
            if gt.shape == mask.shape:
                out = side_by_side(out, draw(picture, [gt]))
        return out

    def scored_frames(seq: str) -> list[str]:  # J is indexed by the annotated frames
        folder = gt_dir / seq if gt_dir is not None else None
        return _frames(folder) if folder is not None and folder.is_dir() else _frames(masks_root / seq)

    for seq in seqs:
        frames = _frames(masks_root / seq)
        picks = sorted({frames[int(i)] for i in np.linspace(0, len(frames) - 1, num=min(per_strip, len(frames)))})
        items = []
        j_of = _j_by_frame(per_seq.get(seq), scored_frames(seq))
        for stem in picks:
            caption = f"{seq}/{stem}" + (f": J {j_of[stem]:.2f}" if stem in j_of else "")
            items.append(assets.thumbnail(panel(seq, stem), f"strip_{counter:05d}", caption, wide=gt_dir is not None))
            counter += 1
        strips.galleries.append(Gallery(items, title=f"{seq} ({len(frames)} frames)"))
    strips.notes = ["prediction" + (" (left) beside the ground truth (right)" if gt_dir is not None else "")
                    + "; frames spread evenly over each sequence"]

    worst = page.add(Section("worst-frames", "Where J drops the most"))
    drops = []
    for seq in seqs:
        j_of = _j_by_frame(per_seq.get(seq), scored_frames(seq))
        stems = list(j_of)
        for a, b in zip(stems, stems[1:]):
            drops.append((j_of[a] - j_of[b], seq, b, j_of[b]))
    drops.sort(key=lambda d: (-d[0], d[1], d[2]))
    if drops:
        worst.notes = ["the frames whose J fell the most from the frame before, largest fall first"]
        worst.galleries = [Gallery([assets.thumbnail(panel(seq, stem), f"worst_{i:03d}",
                                                     f"{seq}/{stem}: J {j:.2f} (fell {d:.2f})", wide=gt_dir is not None)
                                    for i, (d, seq, stem, j) in enumerate(drops[:WORST_FRAMES])])]
    else:
        worst.notes = ["needs ground truth (--gt) and sequences of at least 4 frames"]
    if reader.problems:
        strips.alert = True
        strips.notes.append(f"{len(reader.problems)} frames are drawn on grey: "
                            + "; ".join(sorted(reader.problems.values())[:10]))
    return page


def _j_by_frame(result: dict | None, frames: list[str]) -> dict[str, float]:
    """Frame stem -> J, for the interior frames DAVIS scores (J[i] is frame i + 1)."""
    if not result or not result.get("J"):
        return {}
    return {frames[i + 1]: float(j) for i, j in enumerate(result["J"])
            if i + 1 < len(frames) and j is not None and math.isfinite(j)}
