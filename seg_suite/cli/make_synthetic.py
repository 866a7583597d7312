"""`seg-suite make-synthetic`: write the synthetic dataset (images, COCO, panoptic, semantic, videos)."""

from __future__ import annotations

from seg_suite.cli import _common


COMMAND = "make-synthetic"
HELP = "write the synthetic dataset with exact ground truth"


def register(subparsers) -> None:
    p = _common.add_command(
        subparsers, COMMAND, run,
        help=HELP,
        description="Write textured shapes on sky/ground with COCO instance, panoptic and semantic ground "
                    "truth, plus short videos of moving objects with masks and exact optical flow "
                    "(layout: datasets/README.md, 'Synthetic set'). Defaults are this project's demo sizes.",
        output=("ROOT", "dataset root folder to write"),
    )
    p.add_argument("--num-train", type=int, default=24, metavar="N",
                   help="training images (default: %(default)s, the project's demo size)")
    p.add_argument("--num-val", type=int, default=8, metavar="N",
                   help="validation images (default: %(default)s, the project's demo size)")
    p.add_argument("--height", type=int, default=256, metavar="H",
                   help="image and frame height in pixels, >= 64 (default: %(default)s)")
    p.add_argument("--width", type=int, default=320, metavar="W",
                   help="image and frame width in pixels, >= 64 (default: %(default)s)")
    p.add_argument("--max-objects", type=int, default=3, metavar="N",
                   help="at most this many objects per image (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files (default: %(default)s)")
    p.add_argument("--num-videos", type=int, default=4, metavar="N",
                   help="moving-object video sequences (default: %(default)s)")
    p.add_argument("--video-frames", type=int, default=12, metavar="N",
                   help="frames per video, >= 2 (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar (default: shown)")


def run(args) -> int:
    from seg_suite.data.synthetic import make_synthetic_dataset
    from seg_suite.io.files import check_writable_dir

    check_writable_dir(args.output, "dataset root")
    info = make_synthetic_dataset(
        args.output, num_train=args.num_train, num_val=args.num_val, height=args.height, width=args.width,
        seed=args.seed, num_videos=args.num_videos, video_frames=args.video_frames,
        max_objects=args.max_objects, progress=not args.no_progress,
    )
    c = info["counts"]
    print(f"wrote {c['train']['images']} train / {c['val']['images']} val images "
          f"({c['train']['instances']} / {c['val']['instances']} objects) and {args.num_videos} videos to {args.output}")
    return 0
