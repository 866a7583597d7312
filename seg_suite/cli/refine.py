"""``seg-suite refine``: sharpen the masks of a COCO pseudo-label file with SAM."""

from __future__ import annotations


def register(subparsers) -> None:
    from seg_suite.cli import _common, _sam
    from seg_suite.pseudo.sam_refine import RefineParams

    d = RefineParams()
    parser = subparsers.add_parser(
        "refine",
        help="refine the masks of a COCO pseudo-label file (MaskCut, motion, self-training) with SAM",
        description=(
            "For every mask in --input, prompt SAM with the mask's box, positive points inside it and "
            "negative points on a ring just outside it (all masks of an image in one batch, one image "
            "embedding per image). Of SAM's four outputs the one with the highest IoU to the coarse mask is "
            "chosen; it replaces the coarse mask when that IoU is at least --iou-thresh, otherwise the coarse "
            "mask is kept. The output keeps the input's ids, categories and fields, and adds per annotation "
            "refined_by (sam|coarse), refine_iou and sam_score; info.refined counts both. Images that cannot "
            "be read, whose file_name leaves --images, or whose masks do not fit the image are listed in "
            "OUT.failures.jsonl with the reason and left out. The point-sampling defaults are "
            "seg_suite's own (there is no published recipe); the 0.5 IoU rule keeps SAM's mask only where it agrees with the coarse one."
        ),
    )
    _common.add_renamed(parser, "--input", "--input-json", required=True, metavar="P.json",
                        help="the COCO pseudo-label file to refine (RLE or polygon segmentations), e.g. the "
                             "output of `seg-suite maskcut`")
    parser.add_argument("--images", required=True, metavar="ROOT",
                        help="folder the input's file_name entries are relative to (the --input of the run that "
                             "made it)")
    parser.add_argument(
        "--output", required=True, metavar="OUT.json",
        help="the refined file, written atomically when the run is complete. Beside it: OUT.failures.jsonl, "
             "OUT.journal.jsonl while running (for --resume), OUT.log.jsonl (timings)",
    )
    _sam.add_sam_args(parser)
    _common.add_device_arg(parser)
    ref = parser.add_argument_group("prompts and keep rule (seg_suite.pseudo.sam_refine.RefineParams)")
    ref.add_argument("--num-positive", type=int, default=d.num_positive, metavar="K",
                     help="positive points per mask: its most interior pixel, then farthest-point sampling "
                          "(default: %(default)s)")
    ref.add_argument("--num-negative", type=int, default=d.num_negative, metavar="K",
                     help="negative points per mask, spread on a ring outside it (default: %(default)s)")
    ref.add_argument("--ring-inner", type=float, default=d.ring_inner, metavar="F",
                     help="the ring starts F * sqrt(mask area) pixels (at least 2) outside the mask "
                          "(default: %(default)s)")
    ref.add_argument("--ring-outer", type=float, default=d.ring_outer, metavar="F",
                     help="the ring ends F * sqrt(mask area) pixels (at least 4) outside the mask "
                          "(default: %(default)s)")
    ref.add_argument("--iou-thresh", type=float, default=d.iou_thresh, metavar="T",
                     help="keep SAM's mask when its IoU with the coarse mask is >= T, else the coarse mask "
                          "(default: %(default)s, seg_suite's rule)")
    ref.add_argument("--prompts-per-batch", type=int, default=64, metavar="P",
                     help="masks per decoder call, to bound memory only; results are the same up to float "
                          "rounding (default: "
                          "%(default)s, segment-anything's points_per_batch)")
    _common.add_run_args(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from seg_suite.cli import _common, _sam
    from seg_suite.errors import UserError
    from seg_suite.pseudo.runner import run_job
    from seg_suite.pseudo.sam_jobs import SamRefineJob
    from seg_suite.pseudo.sam_refine import RefineParams

    if args.prompts_per_batch < 1:
        raise UserError("--prompts-per-batch must be at least 1")
    params = RefineParams(num_positive=args.num_positive, num_negative=args.num_negative,
                          ring_inner=args.ring_inner, ring_outer=args.ring_outer, iou_thresh=args.iou_thresh)
    kwargs = _common.run_kwargs(args)
    _common.check_output(args.output)
    job = SamRefineJob(args.input, params, prompts_per_batch=args.prompts_per_batch, **_sam.sam_kwargs(args))
    items = job.items(args.images)
    job.load()
    summary = run_job(job, items, args.output, **kwargs)
    return _common.finish(summary, args)
