"""The ``seg-suite`` command.

Each module in this package that defines ``register(subparsers)`` adds one subcommand;
the parser it creates must ``set_defaults(func=...)`` with a callable taking the parsed
``argparse.Namespace`` and returning an exit code. Subcommands parse flags and call
library functions, nothing else.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from seg_suite import __version__
from seg_suite.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seg-suite",
        description=(
            "Unsupervised segmentation toolkit: generate pseudo-masks without labels "
            "(MaskCut, clustering, motion, SAM), visualise and evaluate them. "
            "Training goes through tools/train_net.py (detectron2)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"seg_suite {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun with --resume to continue where it stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
