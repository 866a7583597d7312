"""``seg-suite motion-masks``: weight-free motion pseudo-masks for unlabeled videos."""

from __future__ import annotations

from seg_suite.cli import _common
from seg_suite.cli._params import add_params, params_from_args

FLAGS = {"flow_backend": "--flow", "model": "--motion-model"}


COMMAND = "motion-masks"
HELP = "motion-grouping pseudo-masks (PNG per frame + COCO JSON) for videos"


def register(subparsers) -> None:
    from seg_suite.pseudo.motion.grouping import GroupingParams
    from seg_suite.pseudo.motion.pipeline import MotionMaskParams

    parser = _common.add_command(
        subparsers, COMMAND, run,
        help=HELP,
        description=(
            "Segment moving objects in unlabeled videos without weights: optical flow (forward and "
            "backward), a mixture of K parametric motions fitted per frame by EM with a spatial "
            "smoothness prior, the segment holding the image border taken as the camera motion, the "
            "rest split into connected components, temporal fusion along the flow. Writes one COCO "
            "instance file (one image entry per frame, category 'object') and 0/255 PNG masks per "
            "frame (DAVIS-2016 encoding). Unusable videos are listed in OUT.failures.jsonl and the "
            "run goes on. See seg_suite/pseudo/motion/grouping.py for the method and its sources."
        ),
        input=("VIDEO|DIR", "a video file, a folder of frames, a folder of videos or frame folders, a DAVIS root "
                            "(JPEGImages/480p/<seq>/) or a seg-suite synthetic root (videos/JPEGImages/<seq>/)"),
        output=("OUT.json", "COCO pseudo-mask file, written atomically at the end (beside it: OUT.failures.jsonl, "
                            "OUT.journal.jsonl while running, OUT.log.jsonl)"),
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
    flow = parser.add_argument_group("optical flow (seg_suite.pseudo.motion.pipeline.MotionMaskParams)")
    add_params(flow, MotionMaskParams, "flow_backend", "flow_preset", flags=FLAGS)
    flow.add_argument("--flow-weights", default=None, metavar="PATH",
                      help="local torchvision RAFT state dict, needed by raft_small/raft_large (no default: "
                           "nothing is downloaded)")
    add_params(flow, MotionMaskParams, "gaps")
    flow.add_argument("--flow-cache", default=None, metavar="DIR",
                      help="cache flows as DIR/<seq>/<src>_<dst>.npz and reuse them on later runs (default: no cache)")
    flow.add_argument("--flow-cache-format", default="npz", choices=("npz", "flo"),
                      help="cache file format: compressed numpy or Middlebury .flo (default: %(default)s)")
    _common.add_device_arg(parser)
    grp = parser.add_argument_group("motion grouping (seg_suite.pseudo.motion.grouping.GroupingParams)")
    add_params(grp, GroupingParams, "num_models", "model", "background", "min_motion", "min_area", "temporal_alpha",
               flags=FLAGS)
    add_params(grp, MotionMaskParams, "crf")
    add_params(grp, GroupingParams, "seed")
    _common.add_run_args(parser, what="videos")


def run(args) -> int:
    from pathlib import Path

    from seg_suite.errors import UserError
    from seg_suite.pseudo.motion.grouping import GroupingParams
    from seg_suite.pseudo.motion.job import MotionMasksJob, sequence_items
    from seg_suite.pseudo.motion.pipeline import MotionMaskParams
    from seg_suite.pseudo.runner import run_job

    params = params_from_args(args, MotionMaskParams, FLAGS, grouping=params_from_args(args, GroupingParams, FLAGS))
    out = Path(args.output)
    stem = out.with_suffix("")
    kwargs = _common.run_kwargs(args)
    items = sequence_items(args.input)
    if args.max_videos is not None:
        if args.max_videos < 1:
            raise UserError(f"--max-videos must be at least 1, got {args.max_videos}")
        items = items[: args.max_videos]
    _common.check_output(out)
    if args.method == "rcf" and not args.checkpoint:
        raise UserError("--method rcf needs --checkpoint (train one with `seg-suite train-motion`)")
    where = {"masks_dir": args.masks_dir or f"{stem}_masks", "frames_dir": args.frames_dir or f"{stem}_frames",
             "device": _common.device_from_args(args)}
    if args.method == "rcf":
        from seg_suite.pseudo.motion.job import RCFMasksJob

        job = RCFMasksJob(args.checkpoint, min_area=params.grouping.min_area, **where)
        job.load()  # fail early on a missing or foreign checkpoint
    else:
        job = MotionMasksJob(params, flow_cache=args.flow_cache, flow_cache_format=args.flow_cache_format,
                             flow_weights=args.flow_weights, **where)
        job._flow_fn()  # fail early (missing RAFT weights, bad preset) before any work starts
    summary = run_job(job, items, out, **kwargs)
    code = _common.finish(summary, args)
    if summary.num_failed < summary.num_items and summary.output == out:
        frames = _common.input_root(args.input) if Path(args.input).is_dir() else where["frames_dir"]
        _common.print_report_hint(out, images=frames)
    return code
