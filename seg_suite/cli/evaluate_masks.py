"""`seg-suite evaluate-masks`: class-agnostic COCO mask AP of pseudo-masks against ground truth."""

from __future__ import annotations

from seg_suite.cli import _common


COMMAND = "evaluate-masks"
HELP = "class-agnostic mask AP/AP50/AR100 of pseudo-masks against ground truth"


def register(subparsers) -> None:
    p = _common.add_command(
        subparsers, COMMAND, run,
        help=HELP,
        description="All categories are merged into one before pycocotools COCOeval runs (the CutLER "
                    "protocol: AP over IoU 0.50:0.95, 101-point interpolation, maxDets 100). Images are "
                    "matched by file_name. Predictions that are not COCO instances or results (a panoptic "
                    "file, say), that share no image with the ground truth, or whose masks do not fit the "
                    "ground-truth images are refused before scoring.",
        pred=("P.json", "predictions: COCO JSON with images[] or a result list"),
        gt=("GT.json", "ground-truth COCO instances JSON"),
    )
    _common.add_renamed(p, "--images", "--images-root", default=None, metavar="ROOT",
                   help="make absolute prediction file names relative to this folder before matching "
                        "(default: use file names as written)")
    p.add_argument("--iou-type", choices=("segm", "bbox"), default="segm", help="masks or boxes (default: %(default)s, as CutLER reports)")
    p.add_argument("--output", default=None, metavar="R.json", help="also write the metrics as JSON here (default: print only)")
    p.add_argument("--verbose", action="store_true", help="print COCOeval's full summary (default: off)")


def run(args) -> int:
    from seg_suite.evaluation.class_agnostic import evaluate_class_agnostic, format_table
    from seg_suite.io.files import atomic_write_json, load_json

    if args.output:
        _common.check_output(args.output)
    pred = load_json(args.pred, "prediction file")
    gt = load_json(args.gt, "ground-truth file")
    stats = evaluate_class_agnostic(pred, gt, iou_type=args.iou_type, verbose=args.verbose, pred_source=args.pred,
                                    gt_source=args.gt, images_root=args.images)
    print(format_table(stats))
    if args.output:
        # strict JSON has no NaN: metrics COCO could not compute (-1) are written as null
        atomic_write_json(args.output, {k: (None if v != v else v) for k, v in stats.items()}, indent=2)
    return 0
