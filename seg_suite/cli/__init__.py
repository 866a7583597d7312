"""The ``seg-suite`` command.

Each module in this package that defines ``register(subparsers)`` adds one subcommand;
the parser it creates must ``set_defaults(func=...)`` with a callable taking the parsed
``argparse.Namespace`` and returning an exit code. Subcommands parse flags and call
library functions, nothing else.

Each such module also names its command (``COMMAND``) and the command's line in
``seg-suite --help`` (``HELP``), and imports nothing heavy at its top: ``main`` builds the full
parser of the command being run only, so ``seg-suite --help`` loads no library module, and
torch, OpenCV or detectron2 load only when a command needs them.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from seg_suite import __version__
from seg_suite.errors import EXIT_USER_ERROR, UserError


ALL = "*"  # build_parser(ALL): every command's full parser


def command_modules() -> list:
    """The modules of this package that define a subcommand, sorted by module name."""
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    modules = [importlib.import_module(f"{__name__}.{name}") for name in names]
    return [m for m in modules if getattr(m, "register", None) is not None]


def build_parser(only: str | None = ALL) -> argparse.ArgumentParser:
    """The ``seg-suite`` parser with the full parser of command ``only`` (ALL: of every command).

    The other commands get a parser holding their ``HELP`` line only, so that they are listed and
    named in errors without importing what their flags are derived from.
    """
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
    for module in command_modules():
        command, help_line = getattr(module, "COMMAND", None), getattr(module, "HELP", None)
        if only in (ALL, command) or command is None or help_line is None:  # one without them: built in full
            module.register(sub)
        else:
            sub.add_parser(command, help=help_line)
    return parser


def command_in(argv: list[str]) -> str | None:
    """The command ``argv`` runs: its first word that is not an option (the top level has no valued flags)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns its exit code (the table is in the README and seg_suite.errors)."""
    from seg_suite import signals

    signals.install()
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(command_in(argv))
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
