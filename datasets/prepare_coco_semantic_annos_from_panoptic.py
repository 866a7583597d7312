#!/usr/bin/env python
"""Semantic maps from COCO panoptic annotations, as Mask2Former's semantic evaluation of COCO needs.

For each ``panoptic_{train,val}2017/*.png`` (RGB ids) this writes
``panoptic_semseg_{train,val}2017/*.png``: uint8, each pixel the contiguous index of its segment's
category in detectron2's COCO_CATEGORIES order (0..132, things and stuff together), 255 where the
panoptic map is void or the segment is not listed. Same output as Mask2Former's
``datasets/prepare_coco_semantic_annos_from_panoptic_annos.py``; panopticapi is not needed.

    python datasets/prepare_coco_semantic_annos_from_panoptic.py            # $DETECTRON2_DATASETS/coco
    python datasets/prepare_coco_semantic_annos_from_panoptic.py --root /data --workers 8

Existing outputs are overwritten (each file is written atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial
from multiprocessing import Pool

import numpy as np
from PIL import Image
from tqdm import tqdm

from seg_suite.io.panoptic import rgb_to_id
from seg_suite.io.files import atomic_write_png


def semantic_from_panoptic(panoptic_png: str, segments_info: list[dict], id_map: dict[int, int]) -> np.ndarray:
    """HxW uint8 semantic map: ``id_map[category_id]`` on each listed segment, 255 elsewhere."""
    with Image.open(panoptic_png) as im:
        ids = rgb_to_id(np.asarray(im.convert("RGB")))
    out = np.full(ids.shape, 255, np.uint8)
    for seg in segments_info:
        out[ids == seg["id"]] = id_map[seg["category_id"]]
    return out


def _convert(job, id_map):
    src, dst, segments = job
    atomic_write_png(dst, semantic_from_panoptic(src, segments, id_map))


def convert_split(panoptic_json: str, panoptic_root: str, sem_seg_root: str, categories: list[dict],
                  workers: int = 1, progress: bool = True) -> int:
    """Write one semantic PNG per annotation of ``panoptic_json``; returns how many."""
    if len(categories) > 255:
        raise ValueError("uint8 semantic maps hold at most 255 categories (255 is void)")
    id_map = {c["id"]: i for i, c in enumerate(categories)}
    with open(panoptic_json) as f:
        anns = json.load(f)["annotations"]
    jobs = [(os.path.join(panoptic_root, a["file_name"]), os.path.join(sem_seg_root, a["file_name"]),
             a["segments_info"]) for a in anns]
    os.makedirs(sem_seg_root, exist_ok=True)
    fn = partial(_convert, id_map=id_map)
    bar = tqdm(total=len(jobs), desc=os.path.basename(sem_seg_root), disable=not progress)
    if workers > 1:
        with Pool(workers) as pool:
            for _ in pool.imap_unordered(fn, jobs, chunksize=64):
                bar.update(1)
    else:
        for job in jobs:
            fn(job)
            bar.update(1)
    bar.close()
    return len(jobs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=os.getenv("DETECTRON2_DATASETS", "datasets"),
                        help="datasets root holding coco/ (default: $DETECTRON2_DATASETS, else 'datasets', "
                             "detectron2's convention)")
    parser.add_argument("--splits", nargs="+", default=["val2017", "train2017"],
                        help="COCO splits to convert (default: val2017 train2017)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default: 1)")
    args = parser.parse_args(argv)
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    coco = os.path.join(args.root, "coco")
    for split in args.splits:
        pan_json = os.path.join(coco, "annotations", f"panoptic_{split}.json")
        if not os.path.isfile(pan_json):
            print(f"error: {pan_json} not found (see datasets/README.md for the COCO layout)", file=sys.stderr)
            return 2
        n = convert_split(pan_json, os.path.join(coco, f"panoptic_{split}"),
                          os.path.join(coco, f"panoptic_semseg_{split}"), COCO_CATEGORIES, args.workers)
        print(f"{split}: wrote {n} semantic maps to {os.path.join(coco, f'panoptic_semseg_{split}')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
