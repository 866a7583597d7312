"""`seg-suite visualize`: overlay PNGs of any COCO mask file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seg_suite.cli import _common
from seg_suite.errors import EXIT_ITEMS_FAILED, EXIT_OK, UserError


COMMAND = "visualize"
HELP = "draw the masks of a COCO file over its images"


def register(subparsers) -> None:
    p = _common.add_command(
        subparsers, COMMAND, run,
        help=HELP,
        description="Write one overlay PNG per image (distinct colour and outline per mask; score and "
                    "category text when present). Draws COCO instance files, pseudo-label files and "
                    "detectron2 result lists (the latter with --annotations giving the image file names). "
                    "Images that are missing, whose file_name leaves --images or --output, or whose masks "
                    "do not fit the image are reported and skipped; the exit code is 3 when no overlay "
                    "could be written.",
    )
    p.add_argument("--input", default=None, metavar="FILE.json",
                   help="the file to draw: COCO JSON (images + annotations) or a result list (required)")
    p.add_argument("--images", required=True, metavar="ROOT",
                   help="root folder that the file_name entries are relative to")
    p.add_argument("--output", required=True, metavar="DIR", help="folder for the overlay PNGs (mirrors file_name)")
    p.add_argument("--annotations", default=None, metavar="GT.json",
                   help="COCO file (e.g. the ground truth) giving the image file names of a result list "
                        "(default: none)")
    # Older releases called the file to draw --annotations and the file-name source --gt-json;
    # _resolve_old_spellings maps such a command line onto the current flags.
    p.add_argument("--gt-json", default=None, help=argparse.SUPPRESS, action=_GtJson)
    p.add_argument("--max-images", type=int, default=None, metavar="N",
                   help="render only the first N images (default: all)")
    p.add_argument("--score-threshold", type=float, default=0.0, metavar="S",
                   help="hide masks scoring below this; annotations without a score count as 1 "
                        "(default: %(default)s, draw all)")
    p.add_argument("--alpha", type=float, default=0.5, help="mask opacity (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar (default: shown)")


class _GtJson(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        _common.deprecation_warning(option_string, "--annotations")
        setattr(namespace, self.dest, values)


def _resolve_old_spellings(args) -> None:
    if args.input is None:
        if args.annotations is None:
            raise UserError("--input is required: the COCO file or result list to draw")
        print("warning: the file to draw is now given with --input; --annotations without --input is the "
              "older spelling (--annotations now names the COCO file that gives a result list its image "
              "file names)", file=sys.stderr)
        args.input, args.annotations = args.annotations, args.gt_json
    elif args.gt_json is not None:
        if args.annotations is not None:
            raise UserError("--gt-json is the older spelling of --annotations; give only --annotations")
        args.annotations = args.gt_json


def run(args) -> int:
    from seg_suite.io.coco import read_coco
    from seg_suite.io.files import load_json
    from seg_suite.visualization import render_coco

    _resolve_old_spellings(args)
    anns = load_json(args.input, "file to draw")
    gt = read_coco(args.annotations, "annotation file") if args.annotations else None
    if not Path(args.images).is_dir():
        raise UserError(f"image folder not found: {args.images}")
    res = render_coco(anns, args.images, args.output, max_images=args.max_images,
                      score_threshold=args.score_threshold, gt=gt, alpha=args.alpha,
                      progress=not args.no_progress, source=args.input,
                      gt_source=args.annotations or "the annotation file")
    for reason in res["missing"]:
        print(f"skipped: {reason}")
    print(f"wrote {len(res['written'])} overlays to {args.output}; {len(res['missing'])} images skipped")
    return EXIT_ITEMS_FAILED if res["missing"] and not res["written"] else EXIT_OK
