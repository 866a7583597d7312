"""``seg-suite sam-masks``: COCO pseudo-masks for a folder of images from SAM's automatic mask generator."""

from __future__ import annotations


def register(subparsers) -> None:
    from seg_suite.cli import _common, _sam
    from seg_suite.pseudo.sam import SamGeneratorParams

    d = SamGeneratorParams()
    parser = subparsers.add_parser(
        "sam-masks",
        help="Segment Anything automatic masks (COCO JSON) for a folder of images",
        description=(
            "Prompt SAM with a grid of points on every image (segment-anything's "
            "SamAutomaticMaskGenerator), filter by predicted IoU and stability, remove duplicates by box "
            "NMS, and write one COCO instance file: category {\"id\": 1, \"name\": \"object\"}, RLE masks "
            "with bbox and area, score = SAM's predicted IoU clipped to [0, 1] (raw predicted_iou and "
            "stability_score kept beside it), true image sizes, and the resolved parameters, checkpoint "
            "digest and library versions in info. Bad inputs are listed in OUT.failures.jsonl and the run "
            "goes on. Generator defaults are segment-anything's (automatic_mask_generator.py), chosen by "
            "its authors for ViT-H."
        ),
    )
    _common.add_input_output_args(parser)
    _sam.add_sam_args(parser)
    _common.add_device_arg(parser)
    gen = parser.add_argument_group("generator (defaults: segment-anything automatic_mask_generator.py)")
    gen.add_argument("--points-per-side", type=int, default=d.points_per_side, metavar="N",
                     help="an N x N grid of point prompts per image (crop layer 0) (default: %(default)s)")
    gen.add_argument("--pred-iou-thresh", type=float, default=d.pred_iou_thresh, metavar="T",
                     help="drop masks whose predicted IoU is below T (default: %(default)s)")
    gen.add_argument("--stability-score-thresh", type=float, default=d.stability_score_thresh, metavar="T",
                     help="drop masks whose stability score (IoU of the mask thresholded at +-offset) is below T "
                          "(default: %(default)s)")
    gen.add_argument("--stability-score-offset", type=float, default=d.stability_score_offset, metavar="O",
                     help="logit offset used by the stability score (default: %(default)s)")
    gen.add_argument("--box-nms-thresh", type=float, default=d.box_nms_thresh, metavar="T",
                     help="box IoU above which duplicate masks within one crop are suppressed (default: %(default)s)")
    gen.add_argument("--crop-n-layers", type=int, default=d.crop_n_layers, metavar="L",
                     help="also run on crops: layer i splits the image into 2^i x 2^i overlapping crops "
                          "(default: %(default)s, whole image only)")
    gen.add_argument("--crop-nms-thresh", type=float, default=d.crop_nms_thresh, metavar="T",
                     help="cross-crop NMS: with --crop-n-layers > 0, box IoU above which a mask duplicated by "
                          "another crop is suppressed (the smaller crop's mask wins); 1.0 turns it off "
                          "(default: %(default)s)")
    gen.add_argument("--crop-overlap-ratio", type=float, default=d.crop_overlap_ratio, metavar="R",
                     help="overlap of neighbouring crops in layer 1, as a fraction of the image side "
                          "(default: 512/1500 = %(default).4f)")
    gen.add_argument("--crop-n-points-downscale-factor", type=int, default=d.crop_n_points_downscale_factor,
                     metavar="F", help="points per side in crop layer i are divided by F^i (default: %(default)s)")
    gen.add_argument("--min-mask-region-area", type=int, default=d.min_mask_region_area, metavar="A",
                     help="remove holes and islands smaller than A pixels from each mask, then re-run NMS "
                          "(default: %(default)s, off)")
    gen.add_argument("--points-per-batch", type=int, default=64, metavar="P",
                     help="point prompts per decoder call; memory versus speed only, the masks are the same up "
                          "to float rounding "
                          "(default: %(default)s, segment-anything's)")
    _common.add_run_args(parser, batch_source="one image per call, as segment-anything's "
                                                "SamAutomaticMaskGenerator.generate")
    parser.set_defaults(func=run)


def run(args) -> int:
    from seg_suite.cli import _common, _sam
    from seg_suite.errors import UserError
    from seg_suite.pseudo.runner import run_job
    from seg_suite.pseudo.sam import SamGeneratorParams
    from seg_suite.pseudo.sam_jobs import SamMasksJob

    if args.points_per_batch < 1:
        raise UserError("--points-per-batch must be at least 1")
    params = SamGeneratorParams(
        points_per_side=args.points_per_side, pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=args.stability_score_thresh, stability_score_offset=args.stability_score_offset,
        box_nms_thresh=args.box_nms_thresh, crop_n_layers=args.crop_n_layers, crop_nms_thresh=args.crop_nms_thresh,
        crop_overlap_ratio=args.crop_overlap_ratio, crop_n_points_downscale_factor=args.crop_n_points_downscale_factor,
        min_mask_region_area=args.min_mask_region_area,
    )
    kwargs = _common.run_kwargs(args)
    items = _common.select_items(args)
    _common.check_output(args.output)
    job = SamMasksJob(params, points_per_batch=args.points_per_batch, **_sam.sam_kwargs(args)).load()
    summary = run_job(job, items, args.output, **kwargs)
    return _common.finish(summary, args)
