"""`seg-suite visualize`: overlay PNGs of any COCO mask file."""

from __future__ import annotations

import argparse
from pathlib import Path

from seg_suite.errors import EXIT_ITEMS_FAILED, EXIT_OK, UserError
from seg_suite.io.coco import read_coco
from seg_suite.io.files import load_json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "visualize",
        help="draw the masks of a COCO file over its images",
        description="Write one overlay PNG per image (distinct colour and outline per mask; score and "
                    "category text when present). Accepts COCO instance files, pseudo-label files and "
                    "detectron2 result lists (the latter with --gt-json). Images that are missing, whose "
                    "file_name leaves --images or --output, or whose masks do not fit the image are "
                    "reported and skipped; the exit code is 3 when no overlay could be written.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--annotations", required=True, help="COCO JSON (images + annotations) or a result list")
    p.add_argument("--images", required=True, help="root folder that the file_name entries are relative to")
    p.add_argument("--output", required=True, help="folder for the overlay PNGs (mirrors file_name)")
    p.add_argument("--gt-json", default=None,
                   help="ground-truth COCO file giving file names for a result list (default: none)")
    p.add_argument("--max-images", type=int, default=None, help="render only the first N images (default: all)")
    p.add_argument("--score-threshold", type=float, default=0.0,
                   help="hide masks scoring below this (0 = draw all; annotations without a score count as 1)")
    p.add_argument("--alpha", type=float, default=0.5, help="mask opacity")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from seg_suite.visualization import render_coco

    anns = load_json(args.annotations, "annotation file")
    gt = read_coco(args.gt_json, "ground-truth file") if args.gt_json else None
    if not Path(args.images).is_dir():
        raise UserError(f"image folder not found: {args.images}")
    res = render_coco(anns, args.images, args.output, max_images=args.max_images,
                      score_threshold=args.score_threshold, gt=gt, alpha=args.alpha,
                      progress=not args.no_progress, source=args.annotations,
                      gt_source=args.gt_json or "the ground-truth file")
    for reason in res["missing"]:
        print(f"skipped: {reason}")
    print(f"wrote {len(res['written'])} overlays to {args.output}; {len(res['missing'])} images skipped")
    return EXIT_ITEMS_FAILED if res["missing"] and not res["written"] else EXIT_OK
