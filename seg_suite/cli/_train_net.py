"""The command line of ``tools/train_net.py`` (detectron2's ``default_argument_parser``).

Flags: ``--config-file``, ``--num-gpus`` (0: this process, on the CPU; N with ``MODEL.DEVICE cpu``:
N CPU processes over gloo), ``--num-machines``,
``--machine-rank``, ``--dist-url``, ``--resume``, ``--eval-only``, ``--allow-untrained`` and
trailing ``KEY VALUE`` overrides. :func:`run` parses them and calls
:func:`seg_suite.engine.api.train` or :func:`seg_suite.engine.api.evaluate`.

Exit codes of :func:`run` (:mod:`seg_suite.errors`): 0 done, 2 a user mistake (one ``error:``
line: bad config, missing weights or data, unwritable OUTPUT_DIR), 130 Ctrl-C, 143 SIGTERM (both
keep the checkpoints written so far: rerun with ``--resume``), 1 a bug (with its traceback).
"""

from __future__ import annotations

import argparse
import gc
import sys

from seg_suite import signals
from seg_suite.engine.api import build_config, evaluate, train
from seg_suite.errors import EXIT_OK, EXIT_USER_ERROR, UserError


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's line breaks and appends each option's default unless its help names one."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or "(default" in text or action.default in (None, argparse.SUPPRESS) \
                or not action.option_strings:
            return text
        if action.default is False:
            return text + " (default: off)"
        if action.default == "":
            return text + " (default: none)"
        return text + " (default: %(default)s)"


def parse_args(argv: list[str] | None = None):
    from detectron2.engine import default_argument_parser

    parser = default_argument_parser(
        epilog="Defaults of every config key: seg_suite/config/ (the official Mask2Former YAML values and "
               "seg_suite's own keys); configs/ holds the official schedules. Example:\n"
               "  tools/train_net.py --config-file configs/synthetic/maskformer2_R50_tiny_cpu.yaml --num-gpus 0\n"
               "Exit codes: 0 done, 2 a mistake in the command or its files (one error line), 130 Ctrl-C, "
               "143 SIGTERM (checkpoints are kept: rerun with --resume)."
    )
    parser.add_argument("--allow-untrained", action="store_true",
                        help="with --eval-only and no MODEL.WEIGHTS, evaluate the randomly initialised model: the "
                             "scores are those of a random model, for checking the evaluation set-up only "
                             "(default: refused)")
    parser._option_string_actions["--num-gpus"].help = (
        "processes per machine: one per GPU; 0 trains in this process on the CPU; with MODEL.DEVICE cpu, "
        "N CPU processes over gloo (distributed training without GPUs)")
    parser.formatter_class = _HelpFormatter
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and train or evaluate; returns the exit code of the module docstring."""
    signals.install()
    args = parse_args(argv)
    launch_args = {"num_gpus": args.num_gpus, "num_machines": args.num_machines, "machine_rank": args.machine_rank,
                   "dist_url": args.dist_url, "config_file": args.config_file}
    code = EXIT_OK
    try:
        cfg = build_config(args.config_file, args.opts, args.num_gpus, args.num_machines)
        if args.eval_only:
            evaluate(cfg, resume=args.resume, allow_untrained=args.allow_untrained, **launch_args)
        else:
            train(cfg, resume=args.resume, **launch_args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except FileNotFoundError as err:  # e.g. a dataset JSON that detectron2's own loaders open
        print(f"error: file not found: {err.filename or err} (see datasets/README.md)", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as err:
        code = signals.exit_code(err)
        print(f"stopped ({'SIGTERM' if isinstance(err, signals.Terminated) else 'interrupted'}); the checkpoints "
              f"written so far are kept: rerun the same command with --resume to continue", file=sys.stderr)
    # The traceback is gone now: collect the trainer, so its DataLoader workers are joined while
    # this process is still in charge rather than at interpreter exit.
    gc.collect()
    return code
