"""``seg-suite motion-masks``: weight-free motion pseudo-masks for unlabeled videos."""

from __future__ import annotations

import argparse

from seg_suite.cli import _common


def register(subparsers) -> None:
    from seg_suite.pseudo.motion.flow import DIS_PRESETS, FLOW_BACKENDS
    from seg_suite.pseudo.motion.grouping import GroupingParams
    from seg_suite.pseudo.motion.pipeline import MotionMaskParams

    g, m = GroupingParams(), MotionMaskParams()
    parser = subparsers.add_parser(
        "motion-masks",
        help="motion-grouping pseudo-masks (PNG per frame + COCO JSON) for videos",
        description=(
            "Segment moving objects in unlabeled videos without weights: optical flow (forward and "
            "backward), a mixture of K parametric motions fitted per frame by EM with a spatial "
            "smoothness prior, the segment holding the image border taken as the camera motion, the "
            "rest split into connected components, temporal fusion along the flow. Writes one COCO "
            "instance file (one image entry per frame, category 'object') and 0/255 PNG masks per "
            "frame (DAVIS-2016 encoding). Unusable videos are listed in OUT.failures.jsonl and the "
            "run goes on. See seg_suite/pseudo/motion/grouping.py for the method and its sources."
        ),
    )
    parser.add_argument(
        "--input", required=True, metavar="VIDEO|DIR",
        help="a video file, a folder of frames, a folder of videos or frame folders, a DAVIS root "
             "(JPEGImages/480p/<seq>/) or a seg-suite synthetic root (videos/JPEGImages/<seq>/)",
    )
    parser.add_argument(
        "--output", required=True, metavar="OUT.json",
        help="COCO pseudo-mask file, written atomically at the end (beside it: OUT.failures.jsonl, "
             "OUT.journal.jsonl while running, OUT.log.jsonl)",
    )
    parser.add_argument(
        "--masks-dir", default=None, metavar="DIR",
        help="where per-frame PNG masks go, as DIR/<seq>/<frame>.png (default: OUT_masks beside OUT.json)",
    )
    parser.add_argument(
        "--frames-dir", default=None, metavar="DIR",
        help="frames of video FILES are exported here as JPEG so the COCO file can train a model "
             "(default: OUT_frames beside OUT.json; frame folders are referenced in place)",
    )
    parser.add_argument("--method", default="grouping", choices=("grouping", "rcf"),
                        help="grouping = weight-free parametric motion grouping; rcf = a segmenter trained by "
                             "`seg-suite train-motion` (needs --checkpoint; inference uses no flow) (default: %(default)s)")
    parser.add_argument("--checkpoint", default=None, metavar="RCF.pth",
                        help="with --method rcf: the checkpoint written by train-motion (no default)")
    parser.add_argument("--max-videos", type=int, default=None, metavar="N",
                        help="process only the first N sequences in sorted order (default: all)")
    flow = parser.add_argument_group("optical flow")
    flow.add_argument("--flow", default=m.flow_backend, choices=FLOW_BACKENDS,
                      help="flow backend (default: %(default)s, OpenCV DIS, no weights)")
    flow.add_argument("--flow-preset", default=m.flow_preset, choices=DIS_PRESETS,
                      help="DIS preset (default: %(default)s; measured the best speed/quality at 854x480 on "
                           "2 cores, see seg_suite/pseudo/motion/flow.py)")
    flow.add_argument("--flow-weights", default=None, metavar="PATH",
                      help="local torchvision RAFT state dict, needed by raft_small/raft_large (no default: "
                           "nothing is downloaded)")
    flow.add_argument("--gaps", default="1", metavar="1[,2]",
                      help="frame gaps at which forward and backward flow are computed (and cached); "
                           "grouping uses gap 1 (default: %(default)s)")
    flow.add_argument("--flow-cache", default=None, metavar="DIR",
                      help="cache flows as DIR/<seq>/<src>_<dst>.npz and reuse them on later runs (default: no cache)")
    flow.add_argument("--flow-cache-format", default="npz", choices=("npz", "flo"),
                      help="cache file format: compressed numpy or Middlebury .flo (default: %(default)s)")
    _common.add_device_arg(parser)
    grp = parser.add_argument_group("motion grouping (defaults: seg_suite.pseudo.motion.grouping.GroupingParams)")
    grp.add_argument("--num-models", type=int, default=g.num_models,
                     help="K, parametric motions per frame incl. the background (default: %(default)s)")
    grp.add_argument("--motion-model", default=g.model, choices=("affine", "quadratic"),
                     help="parametric motion per segment (default: %(default)s)")
    grp.add_argument("--background", default=g.background, choices=("border", "largest"),
                     help="which segment is the camera motion: the one holding most of the image border, or "
                          "the largest (default: %(default)s)")
    grp.add_argument("--min-motion", type=float, default=g.min_motion, metavar="PX",
                     help="segments moving less than this (pixels/frame) relative to the background are "
                          "background (default: %(default)s)")
    grp.add_argument("--min-area", type=float, default=g.min_area, metavar="FRAC",
                     help="drop foreground components smaller than this fraction of the frame (default: %(default)s)")
    grp.add_argument("--temporal-alpha", type=float, default=g.temporal_alpha,
                     help="weight of the previous frame's mask warped along the flow (default: %(default)s; 0 = off)")
    grp.add_argument("--crf", action=argparse.BooleanOptionalAction, default=m.crf,
                     help="refine each frame's mask with a dense CRF on the image (seg_suite.pseudo.crf, "
                          "CutLER's parameters); sharper masks, ~0.2-0.4 s per frame (default: off)")
    grp.add_argument("--seed", type=int, default=g.seed, help="seed of the EM initialisation (default: %(default)s)")
    _common.add_run_args(parser, what="videos")
    parser.set_defaults(func=run)


def run(args) -> int:
    from dataclasses import replace
    from pathlib import Path

    from seg_suite.errors import UserError
    from seg_suite.pseudo.motion.grouping import GroupingParams
    from seg_suite.pseudo.motion.job import MotionMasksJob, sequence_items
    from seg_suite.pseudo.motion.pipeline import MotionMaskParams
    from seg_suite.pseudo.runner import run_job

    try:
        gaps = tuple(sorted({int(x) for x in args.gaps.split(",") if x.strip()}))
    except ValueError:
        raise UserError(f"--gaps must be comma-separated positive integers, got {args.gaps!r}") from None
    if not gaps or gaps[0] < 1 or 1 not in gaps:
        raise UserError(f"--gaps must include 1 and be positive, got {args.gaps!r}")
    if args.num_models < 2:
        raise UserError("--num-models must be at least 2 (background + one object)")
    if not 0 <= args.temporal_alpha < 1 or args.min_motion < 0 or not 0 <= args.min_area < 1:
        raise UserError("need 0 <= --temporal-alpha < 1, --min-motion >= 0 and 0 <= --min-area < 1")
    grouping = replace(GroupingParams(), num_models=args.num_models, model=args.motion_model,
                       background=args.background, min_motion=args.min_motion, min_area=args.min_area,
                       temporal_alpha=args.temporal_alpha, seed=args.seed)
    params = MotionMaskParams(flow_backend=args.flow, flow_preset=args.flow_preset, gaps=gaps, crf=args.crf,
                              grouping=grouping)
    out = Path(args.output)
    stem = out.with_suffix("")
    kwargs = _common.run_kwargs(args)
    items = sequence_items(args.input)
    if args.max_videos is not None:
        if args.max_videos < 1:
            raise UserError(f"--max-videos must be at least 1, got {args.max_videos}")
        items = items[: args.max_videos]
    _common.check_output(out)
    if args.method == "rcf":
        from seg_suite.pseudo.motion.job import RCFMasksJob

        if not args.checkpoint:
            raise UserError("--method rcf needs --checkpoint (train one with `seg-suite train-motion`)")
        job = RCFMasksJob(args.checkpoint, min_area=args.min_area, masks_dir=args.masks_dir or f"{stem}_masks",
                          frames_dir=args.frames_dir or f"{stem}_frames", device=_common.device_from_args(args))
        job.load()  # fail early on a missing or foreign checkpoint
    else:
        job = MotionMasksJob(
            params,
            masks_dir=args.masks_dir or f"{stem}_masks",
            frames_dir=args.frames_dir or f"{stem}_frames",
            flow_cache=args.flow_cache,
            flow_cache_format=args.flow_cache_format,
            flow_weights=args.flow_weights,
            device=_common.device_from_args(args),
        )
        job._flow_fn()  # fail early (missing RAFT weights, bad preset) before any work starts
    summary = run_job(job, items, out, **kwargs)
    return _common.finish(summary, args)
