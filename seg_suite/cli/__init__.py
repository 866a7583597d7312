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
from seg_suite.errors import EXIT_USER_ERROR, UserError


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
    from seg_suite.cli._common import CommandParser

    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns its exit code (the table is in the README and seg_suite.errors)."""
    from seg_suite import signals

    signals.install()
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as err:
        print(f"stopped ({'SIGTERM' if isinstance(err, signals.Terminated) else 'interrupted'}); finished work "
              f"is kept: rerun the same command with --resume to continue", file=sys.stderr)
        return signals.exit_code(err)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
