"""Flags shared by `seg-suite sam-masks` and `seg-suite refine`: which SAM model, from where, and
how many prompts go through the decoder at once."""

from __future__ import annotations

import argparse

from seg_suite.cli import _common

# segment-anything's SamAutomaticMaskGenerator points_per_batch
PROMPTS_PER_BATCH = 64


def add_sam_args(parser: argparse.ArgumentParser) -> None:
    from seg_suite.pseudo.sam import DEFAULT_SAM_TYPE, SAM_ARCHS, SAM_TYPES

    group = parser.add_argument_group("SAM model (segment-anything)")
    files = ", ".join(f"{t}: {a.checkpoint_file}" for t, a in SAM_ARCHS.items())
    group.add_argument("--sam-type", default=DEFAULT_SAM_TYPE, choices=SAM_TYPES,
                       help=f"SAM image encoder size (default: %(default)s, the smallest official model; "
                            f"segment-anything's own default is vit_h). Official checkpoints: {files}")
    group.add_argument("--sam-checkpoint", default=None, metavar="PATH",
                       help="local SAM checkpoint (.pth, loaded with weights_only) (default: the official file "
                            "name looked up in $SEG_SUITE_WEIGHTS, ~/.cache/seg_suite/weights and torch.hub's "
                            "checkpoints folder; nothing is downloaded)")
    group.add_argument("--random-init", action="store_true",
                       help="random SAM weights instead of a checkpoint, for timing and tests only: the masks are "
                            "meaningless (default: off)")
    _common.add_precision_arg(group, "image encoder")
    _common.add_max_pixels_arg(group)
    _common.add_device_arg(parser)


def add_batch_arg(group, flag: str, what: str) -> None:
    """``flag``: how many ``what`` go through SAM's mask decoder in one call."""
    group.add_argument(flag, type=int, default=PROMPTS_PER_BATCH, metavar="P",
                       help=f"{what} per decoder call; memory versus speed only, the masks are the same up to "
                            f"float rounding (default: %(default)s, segment-anything's points_per_batch)")


def batch_from_args(args, flag: str) -> int:
    value = getattr(args, flag.lstrip("-").replace("-", "_"))
    if value < 1:
        from seg_suite.errors import UserError

        raise UserError(f"{flag} must be at least 1")
    return value


def sam_kwargs(args) -> dict:
    """Keyword arguments shared by SamMasksJob and SamRefineJob."""
    from seg_suite.errors import UserError

    max_pixels = _common.max_pixels(args)
    if args.random_init and args.sam_checkpoint is not None:
        raise UserError("--random-init and --sam-checkpoint exclude each other")
    return {"sam_type": args.sam_type, "checkpoint": args.sam_checkpoint, "random_init": args.random_init,
            "device": _common.device_from_args(args), "max_pixels": max_pixels, "precision": args.precision}
