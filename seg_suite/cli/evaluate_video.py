"""``seg-suite evaluate-video``: DAVIS-2016 J/F (+ RCF's J-FrameMean) or SegTrackv2/FBMS59 pooled IoU."""

from __future__ import annotations

from seg_suite.cli import _common


COMMAND = "evaluate-video"
HELP = "score per-frame video masks (DAVIS-2016 J&F, SegTrackv2/FBMS59 IoU)"


def register(subparsers) -> None:
    parser = _common.add_command(
        subparsers, COMMAND, run,
        help=HELP,
        description=(
            "Compare predicted masks PRED/<seq>/<frame>.png with annotations GT/<seq>/<frame>.png. "
            "Masks are binary: grey > 127 is foreground (DAVIS-2016's 0/255, where 255 is the object, "
            "never void); palette PNGs count every non-zero index (objects merged). Protocol 'davis' "
            "follows github.com/fperazzi/davis: J and boundary F (tolerance ceil(0.008 x diagonal)), "
            "first and last frames excluded, mean/recall/decay per sequence, means over sequences, plus "
            "RCF's frame-weighted J-FrameMean. Protocol 'pooled' follows RCF's SegTrackv2/FBMS59 tool: "
            "IoU over all annotated frames pooled across sequences (sparse annotations allowed)."
        ),
        gt=("DIR", "annotation root holding one folder of PNG masks per sequence (e.g. DAVIS/Annotations/480p, or a "
                   "synthetic root's videos/Annotations; not the JPEG frames)"),
        pred=("DIR", "prediction root with the same layout (e.g. motion-masks' OUT_masks)"),
    )
    parser.add_argument("--protocol", default="davis", choices=("davis", "pooled"),
                        help="davis = DAVIS-2016 J/F; pooled = SegTrackv2/FBMS59 IoU (default: %(default)s)")
    parser.add_argument("--sequences", default=None, metavar="A,B,...",
                        help="evaluate only these sequences (default: every folder under --gt)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="score a missing prediction frame as an empty mask (default: error)")
    parser.add_argument("--output", default=None, metavar="RESULT.json",
                        help="also write the full results (per sequence, per frame) as JSON (default: print only)")


def run(args) -> int:
    from seg_suite.evaluation.davis import evaluate_davis, evaluate_pooled
    from seg_suite.io.files import atomic_write_json

    if args.output:
        _common.check_output(args.output)
    seqs = [s for s in args.sequences.split(",") if s] if args.sequences else None
    if args.protocol == "davis":
        res = evaluate_davis(args.gt, args.pred, seqs, allow_missing=args.allow_missing, progress=True)
        print(f"{'sequence':24s} {'J-Mean':>7s} {'F-Mean':>7s}")
        for name, r in res["sequences"].items():
            print(f"{name:24s} {r['J_mean']:7.3f} {r['F_mean']:7.3f}")
    else:
        res = evaluate_pooled(args.gt, args.pred, seqs, allow_missing=args.allow_missing, progress=True)
        print(f"{'sequence':24s} {'IoU':>7s} {'frames':>7s}")
        for name, r in res["sequences"].items():
            print(f"{name:24s} {r['IoU']:7.3f} {r['num_frames']:7d}")
    print("  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in res["global"].items()))
    if args.output:
        atomic_write_json(args.output, res, indent=1)
    return 0
