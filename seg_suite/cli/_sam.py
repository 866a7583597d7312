"""Flags shared by `seg-suite sam-masks` and `seg-suite refine`: which SAM model, from where."""

from __future__ import annotations

import argparse


def add_sam_args(parser: argparse.ArgumentParser) -> None:
    from seg_suite.io.images import DEFAULT_MAX_PIXELS
    from seg_suite.pseudo.sam import DEFAULT_SAM_TYPE, SAM_ARCHS, SAM_TYPES

    group = parser.add_argument_group("SAM model (segment-anything)")
    files = ", ".join(f"{t}: {a.checkpoint_file}" for t, a in SAM_ARCHS.items())
    group.add_argument(
        "--sam-type", default=DEFAULT_SAM_TYPE, choices=SAM_TYPES,
        help=f"SAM image encoder size (default: %(default)s, the smallest official model; "
             f"segment-anything's own default is vit_h). Official checkpoints: {files}",
    )
    group.add_argument(
        "--sam-checkpoint", default=None, metavar="PATH",
        help="local SAM checkpoint (.pth, loaded with weights_only) (default: the official file name "
             "looked up in $SEG_SUITE_WEIGHTS, ~/.cache/seg_suite/weights and torch.hub's checkpoints "
             "folder; nothing is downloaded)",
    )
    group.add_argument(
        "--random-init", action="store_true",
        help="random SAM weights instead of a checkpoint, for timing and tests only: the masks are meaningless "
             "(default: off)",
    )
    group.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
        help="larger images are refused and listed in the failures (default: %(default)s, "
             "seg_suite.io.images.DEFAULT_MAX_PIXELS)",
    )


def sam_kwargs(args) -> dict:
    """Keyword arguments shared by SamMasksJob and SamRefineJob."""
    from seg_suite.cli import _common
    from seg_suite.errors import UserError
    if args.max_pixels < 1:
        raise UserError("--max-pixels must be positive")
    if args.random_init and args.sam_checkpoint is not None:
        raise UserError("--random-init and --sam-checkpoint exclude each other")
    return {"sam_type": args.sam_type, "checkpoint": args.sam_checkpoint, "random_init": args.random_init,
            "device": _common.device_from_args(args), "max_pixels": args.max_pixels}
