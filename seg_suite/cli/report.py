"""``seg-suite report``: a static HTML report (index.html and its assets) of any output of seg_suite."""

from __future__ import annotations


COMMAND = "report"
HELP = "write a static HTML report of pseudo-labels, clusters, evaluations, videos or training runs"


def register(subparsers) -> None:
    from seg_suite.report.selection import DEFAULT_MAX_IMAGES

    parser = subparsers.add_parser(
        COMMAND, help=HELP,
        description=(
            "Write DIR/index.html and its assets: one folder that opens from disk in a browser, with no server "
            "and no internet. What it shows depends on the input, found from its files: a COCO mask file "
            "(pseudo-labels, predictions or `cluster` output; --images for the pictures, --gt to compare), a "
            "`seg-suite evaluate` or `evaluate-video` result JSON, `motion-masks` output (its JSON or masks "
            "folder; --images for the frames, --gt for the DAVIS annotation root), a detectron2 training "
            "folder (metrics.json), or a recipe run folder (a page per stage). Several inputs get a front page "
            "linking each one's page."
        ),
    )
    parser.set_defaults(func=run)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", metavar="PATH",
                        help="what to report on, one or more files or folders (required) unless --annotations is given")
    source.add_argument("--annotations", metavar="FILE",
                        help="a COCO mask file to report on, the same as --input FILE (default: none, give this "
                             "or --input)")
    parser.add_argument("--images", default=None, metavar="ROOT",
                        help="folder the file names of a COCO file are relative to (video: the folder of frame "
                             "folders) (default: none, masks are drawn on grey)")
    parser.add_argument("--gt", default=None, metavar="FILE|DIR",
                        help="ground truth: a COCO file for mask files, the annotation root for video masks "
                             "(default: none)")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="the report folder; a new or empty folder, or an earlier report, which is replaced")
    parser.add_argument("--max-images", type=int, default=DEFAULT_MAX_IMAGES, metavar="N",
                        help="most images shown in a gallery, chosen deterministically: those without masks, the "
                             "worst and the best by the shown metric, the rest spread in between "
                             "(default: %(default)s)")


def run(args) -> int:
    import sys

    from seg_suite.report import build_report

    index = build_report(args.input or [args.annotations], args.output, images=args.images, gt=args.gt,
                         max_images=args.max_images)
    print(f"wrote {index}; open it in a browser", file=sys.stderr)
    return 0

