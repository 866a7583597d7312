"""The report of a COCO mask file: pseudo-labels or predictions, and the clusters of `seg-suite cluster`.

Sections: images without masks (first, in red), the overlay gallery (prediction beside the ground
truth), a sortable per-image table, histograms of masks per image, mask area and score, and the
failures file's entries. A clustered file (``info.clustering``, written by
:func:`seg_suite.pseudo.cluster.assign_clusters`) adds a gallery per cluster, the cluster sizes
and, with ground truth, each cluster's majority class and purity.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from seg_suite.io.coco import annotations_by_file, decode_image_masks
from seg_suite.io.masks import MaskFormatError, mask_iou, rle_area
from seg_suite.report import plots
from seg_suite.report.assets import Assets
from seg_suite.report.overlays import ImageSource, crop, draw, side_by_side
from seg_suite.report.page import Gallery, Page, Section, Table, cell
from seg_suite.report.selection import choose

CROPS_PER_CLUSTER = 6  # the most confident masks of each cluster
MAX_CLUSTER_GALLERIES = 60  # the largest clusters get a gallery; every cluster is in the table and plot
MAX_TABLE_ROWS = 2000  # keeps the page light for large datasets
MATCH_IOU = 0.5  # a mask counts as showing a ground-truth object from this IoU (COCO's AP50 threshold)


def is_clustered(coco: dict) -> bool:
    info = coco.get("info")
    return isinstance(info, dict) and isinstance(info.get("clustering"), dict)


class _Image:
    """One image of the file: its record, annotations and (decoded on demand) masks."""

    def __init__(self, record: dict, anns: list[dict], gt_anns: list[dict] | None):
        self.record, self.anns, self.gt_anns = record, anns, gt_anns
        self.name = record["file_name"]
        self.h, self.w = int(record.get("height") or 0), int(record.get("width") or 0)
        self.problem: str | None = None

    def masks(self, gt: bool = False) -> list[np.ndarray]:
        anns = self.gt_anns if gt else self.anns
        if not anns or not self.h or not self.w:
            return []
        try:
            return decode_image_masks(self.name, anns, self.h, self.w)
        except MaskFormatError as err:
            self.problem = str(err)
            return []

    @property
    def areas(self) -> list[float]:
        size = max(1, self.h * self.w)
        return [float(a.get("area", 0)) / size for a in self.anns]

    @property
    def scores(self) -> list[float]:
        return [float(a["score"]) for a in self.anns if isinstance(a.get("score"), (int, float))]


def _best_iou(pred: list[np.ndarray], gt: list[np.ndarray]) -> float:
    """Mean over ground-truth masks of the best IoU any prediction reaches (NaN without ground truth)."""
    if not gt:
        return math.nan
    return float(np.mean([max((mask_iou(g, p) for p in pred), default=0.0) for g in gt]))


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _category_names(coco: dict) -> dict[int, str]:
    return {c["id"]: str(c.get("name", c["id"])) for c in coco.get("categories", []) if isinstance(c, dict)}


def _failures(path: Path | None) -> list[dict]:
    if path is None or not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


def results_as_coco(results: list[dict], gt: dict) -> dict:
    """A detectron2 result list as a COCO file on the ground truth's images and categories."""
    anns = []
    for r in results:
        if not r.get("segmentation"):  # a box-only result has no mask to show
            continue
        seg = r["segmentation"]
        area = r.get("area")
        if area is None and isinstance(seg, dict) and isinstance(seg.get("counts"), str):
            area = rle_area(seg)
        anns.append(dict(r, id=len(anns) + 1, iscrowd=0, area=area or 0))
    return {"images": gt["images"], "annotations": anns, "categories": gt.get("categories", [])}


def coco_page(coco: dict, source: str, assets: Assets, *, images_root=None, gt: dict | None = None,
              max_images: int = 200, failures: Path | None = None, title: str | None = None) -> Page:
    """The page of the (checked) COCO file ``coco``; ``gt`` a (checked) ground-truth COCO file."""
    preds = annotations_by_file(coco)
    gts = annotations_by_file(gt) if gt is not None else None
    images = [_Image(im, preds[im["file_name"]], gts.get(im["file_name"], []) if gts is not None else None)
              for im in coco["images"]]
    clustered = is_clustered(coco)
    page = Page(title or f"{'Clusters' if clustered else 'Masks'}: {Path(source).name}")
    total = sum(len(im.anns) for im in images)
    empty = [im.name for im in images if not im.anns]
    page.intro = [f"{source}: {len(images)} images, {total} masks, "
                  f"{total / max(1, len(images)):.2f} masks per image, {len(empty)} images without any mask."]
    if gts is not None:
        metric_name = "IoU with ground truth"
        metric = {im.name: _best_iou(im.masks(), im.masks(gt=True)) for im in images}
        page.intro.append("IoU with ground truth: for each ground-truth mask the best IoU of any predicted mask, "
                          "averaged over the image's ground-truth masks.")
    elif any(im.scores for im in images):
        metric_name, metric = "mean score", {im.name: _mean(im.scores) for im in images}
    else:
        metric_name, metric = "masks", {im.name: float(len(im.anns)) for im in images}
    shown = choose(metric, max_images, first=empty)
    if len(shown) < len(images):
        page.intro.append(f"The gallery shows {len(shown)} of the {len(images)} images: those without masks, the "
                          f"worst and the best by {metric_name}, and the rest spread evenly in between.")
    by_name = {im.name: im for im in images}
    reader = ImageSource(images_root)

    zero = page.add(Section("zero-masks", f"Images without masks ({len(empty)})", alert=bool(empty)))
    zero.notes = ([", ".join(empty[:500]) + (f" and {len(empty) - 500} more" if len(empty) > 500 else "")]
                  if empty else ["every image has at least one mask"])

    gallery = page.add(Section("overlays", "Overlays"))
    gallery.notes = ["Predicted masks" + (" (left) beside the ground truth (right)" if gts is not None else "")
                     + ", worst first by " + metric_name + "; click a thumbnail for the full size."]
    cat_names = _category_names(coco)
    gt_names = _category_names(gt) if gt is not None else {}
    show_labels = len(cat_names) > 1
    items = []
    for i, name in enumerate(shown):
        im = by_name[name]
        if not im.h or not im.w:
            continue
        picture = reader.read(name, im.h, im.w)
        masks = im.masks()
        labels = [cat_names.get(a.get("category_id"), "") for a in im.anns] if show_labels and masks else None
        panel = draw(picture, masks, labels)
        if gts is not None:
            gt_labels = [gt_names.get(a.get("category_id"), "") for a in im.gt_anns] if len(gt_names) > 1 else None
            panel = side_by_side(panel, draw(picture, im.masks(gt=True), gt_labels))
        value = metric[name]
        caption = f"{name}: {len(im.anns)} mask{'' if len(im.anns) == 1 else 's'}" + (f", {metric_name} {value:.2f}" if metric_name != "masks"
                                                       and not math.isnan(value) else "")
        items.append(assets.thumbnail(panel, f"overlay_{i:05d}", caption, wide=gts is not None))
    gallery.galleries = [Gallery(items)]
    problems = dict(reader.problems)
    problems.update({im.name: im.problem for im in images if im.problem})
    if problems:
        gallery.alert = True
        gallery.notes.append(f"{len(problems)} images are drawn on grey: " +
                             "; ".join(v for _, v in sorted(problems.items())[:20]))

    table = page.add(Section("per-image", "Per image"))
    table.notes = ["Click a column header to sort."]
    headers = ["image", "masks", "mean area %", "largest area %", "mean score", "best score"]
    if gts is not None:
        headers += ["ground-truth masks", "IoU with ground truth"]
    listed = images
    if len(images) > MAX_TABLE_ROWS:
        keep = set(choose(metric, MAX_TABLE_ROWS, first=empty))
        listed = [im for im in images if im.name in keep]
        table.notes.append(f"{len(listed)} of {len(images)} images are listed, chosen as for the gallery")
    rows = []
    for im in listed:
        areas, scores = im.areas, im.scores
        row = [cell(im.name), cell(len(im.anns)), cell(100 * _mean(areas)), cell(100 * max(areas, default=math.nan)),
               cell(_mean(scores), 3), cell(max(scores, default=math.nan), 3)]
        if gts is not None:
            row += [cell(len(im.gt_anns)), cell(metric[im.name], 3)]
        rows.append(row)
    table.table = Table(headers, rows)

    hist = page.add(Section("histograms", "Distributions"))
    hist.plots = [
        assets.figure(plots.histogram([len(im.anns) for im in images], "masks per image", "masks", integer=True),
                      "hist_masks", "histogram of masks per image"),
        assets.figure(plots.histogram([100 * a for im in images for a in im.areas], "mask area",
                                      "% of the image"), "hist_area", "histogram of mask areas"),
    ]
    all_scores = [s for im in images for s in im.scores]
    if all_scores:
        hist.plots.append(assets.figure(plots.histogram(all_scores, "mask score", "score"), "hist_score",
                                        "histogram of mask scores"))
    else:
        hist.notes = ["the masks carry no score"]

    fails = _failures(failures)
    fsec = page.add(Section("failures", f"Failures ({len(fails)})", alert=bool(fails)))
    if fails:
        fsec.table = Table(["item", "reason"], [[cell(f.get("key", "")), cell(f.get("reason", ""))] for f in fails])
    else:
        fsec.notes = [f"no failures recorded ({failures.name} is empty)" if failures is not None and failures.is_file()
                      else "no failures file beside the input"]
    if clustered:
        _cluster_sections(page, coco, images, reader, assets, gt_names if gts is not None else None)
    return page


def _gt_class_of(images: list[_Image], gt_names: dict[int, str]) -> dict[int, str]:
    """Annotation id -> the class of the ground-truth mask it overlaps with IoU >= MATCH_IOU."""
    out = {}
    for im in images:
        if not im.anns or not im.gt_anns:
            continue
        pred, gt = im.masks(), im.masks(gt=True)
        for ann, p in zip(im.anns, pred):
            ious = [mask_iou(p, g) for g in gt]
            best = int(np.argmax(ious))
            if ious[best] >= MATCH_IOU:
                out[ann["id"]] = gt_names.get(im.gt_anns[best].get("category_id"), str(im.gt_anns[best].get("category_id")))
    return out


def _cluster_sections(page: Page, coco: dict, images: list[_Image], reader: ImageSource, assets: Assets,
                      gt_names: dict[int, str] | None) -> None:
    names = _category_names(coco)
    members = defaultdict(list)  # cluster id -> [(score, image, annotation index)]
    for im in images:
        for j, a in enumerate(im.anns):
            members[a.get("category_id")].append((float(a.get("score", 0.0) or 0.0), im, j))
    ids = sorted(names, key=lambda c: (-len(members.get(c, [])), c))
    sizes = [len(members.get(c, [])) for c in ids]
    info = coco["info"]["clustering"]
    sec = page.add(Section("cluster-sizes", f"Cluster sizes ({len(ids)} clusters)"))
    sec.notes = [f"{info.get('num_clustered', sum(sizes))} masks clustered, {info.get('num_dropped', 0)} dropped "
                 f"(no feature); {sum(1 for s in sizes if s)} clusters are non-empty, the largest holds "
                 f"{max(sizes, default=0)} masks."]
    sec.plots = [assets.figure(plots.bars([names[c] for c in ids], sizes, "masks per cluster (largest first)", "masks"),
                               "cluster_sizes", "bar chart of cluster sizes")]
    if gt_names is not None:
        gt_class = _gt_class_of(images, gt_names)
        rows = []
        for c in ids:
            matched = [gt_class[im.anns[j]["id"]] for _, im, j in members.get(c, []) if im.anns[j]["id"] in gt_class]
            top = Counter(matched).most_common(1)
            majority, count = top[0] if top else (None, 0)
            rows.append([cell(names[c]), cell(len(members.get(c, []))), cell(len(matched)), cell(majority),
                         cell(count / len(matched) if matched else math.nan, 3)])
        pur = page.add(Section("purity", "Majority class and purity per cluster"))
        pur.notes = [f"A mask counts for the class of the ground-truth mask it overlaps with IoU >= {MATCH_IOU}; "
                     f"purity = share of the cluster's matched masks in its majority class."]
        pur.table = Table(["cluster", "masks", "matched", "majority class", "purity"], rows)
    gal = page.add(Section("clusters", "Clusters: their most confident masks"))
    shown = [c for c in ids if members.get(c)][:MAX_CLUSTER_GALLERIES]
    if len(shown) < len(ids):
        gal.notes = [f"the {len(shown)} largest non-empty clusters of {len(ids)}"]
    wanted = defaultdict(list)  # image name -> [(cluster, rank, annotation index)]
    for c in shown:
        top = sorted(members[c], key=lambda m: (-m[0], m[1].name, m[2]))[:CROPS_PER_CLUSTER]
        for rank, (_, im, j) in enumerate(top):
            wanted[im.name].append((c, rank, j))
    crops = {}
    by_name = {im.name: im for im in images}
    for name in sorted(wanted):
        im = by_name[name]
        picture, masks = reader.read(name, im.h, im.w), im.masks()
        for c, rank, j in wanted[name]:
            if j < len(masks):
                score = im.anns[j].get("score")
                caption = name + (f" ({score:.2f})" if isinstance(score, (int, float)) else "")
                crops[(c, rank)] = assets.thumbnail(crop(picture, masks[j]), f"cluster_{ids.index(c):04d}_{rank}",
                                                    caption)
    for c in shown:
        items = [crops[(c, r)] for r in range(CROPS_PER_CLUSTER) if (c, r) in crops]
        gal.galleries.append(Gallery(items, title=f"{names[c]}: {len(members[c])} masks"))
