"""Flags shared by the dataset-generation subcommands (maskcut, sam-masks, motion-masks, cluster...),
so each one spells and documents them the same way.

    add_input_output_args(parser)   --input --output --max-images
    add_max_pixels_arg(parser)      --max-pixels (max_pixels(args): the value, checked)
    add_device_arg(parser)          --device (device_from_args: cuda -> cuda:LOCAL_RANK under torchrun)
    add_precision_arg(group, model) --precision fp32|bf16|fp16 (add_backbone_args adds it)
    add_run_args(parser)            --num-shards --shard-id --resume --overwrite
                                    --retry-failed --batch-size --workers --max-failed --no-progress
    run_kwargs(args)                -> keyword arguments for seg_suite.pseudo.runner.run_job
    select_items(args)              -> the sorted work items of --input (first --max-images)
    check_output(path)              -> a one-line error now if the output's folder cannot be written
    finish(summary, args)           -> prints the closing line, returns the command's exit code
    input_root(spec)                -> the folder an --input's file names are relative to
    print_report_hint(output, ...)  the last line: the `seg-suite report` command that shows the output
    add_renamed(parser, new, *old)  a flag whose older spellings still work, with a warning line
    add_command(subparsers, name, run, help, description, input=(METAVAR, help, *old), ...)
                                    a subcommand's parser with its required file flags

Every subcommand's parser is a :class:`CommandParser`: its help lists a flag once, under its
current name, and states a default only where the flag's help text does.

Flag names are one per idea across commands: ``--images`` (an image root), ``--input`` (what
the command turns into its output), ``--annotations`` (a COCO file consulted beside it),
``--pred``/``--gt`` (evaluation), ``--output`` (what is written).

Exit codes of a generator command (seg_suite.errors): 0 when the run finished and few enough
items failed; 3 (EXIT_ITEMS_FAILED) when it finished but no item succeeded, or more than
``--max-failed`` of them failed; 2 for a user error found before or during the run.
"""

from __future__ import annotations

import argparse
import copy
import sys

from seg_suite.errors import EXIT_ITEMS_FAILED, EXIT_OK, UserError

IMAGE_ROOT = ("ROOT", "folder the file_name entries are relative to")  # --images beside a COCO --input
DEFAULT_WORKERS = 2  # decoding overlaps compute on 2+ cores; 0 reads in the main process


class HelpFormatter(argparse.HelpFormatter):
    """Lists each flag under its current spelling only (older ones stay accepted, unlisted)."""

    def _format_action_invocation(self, action):
        hidden = getattr(action, "deprecated_option_strings", ())
        if hidden:
            action = copy.copy(action)
            action.option_strings = [s for s in action.option_strings if s not in hidden]
        return super()._format_action_invocation(action)


class RawDescriptionHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """:class:`HelpFormatter` that keeps the description's and epilog's line breaks."""


class CommandParser(argparse.ArgumentParser):
    """The parser of every subcommand: :class:`HelpFormatter` unless another formatter is given."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


def deprecation_warning(old: str, new: str) -> None:
    print(f"warning: {old} is a deprecated spelling of {new}; use {new} (it works the same)", file=sys.stderr)


class _StoreRenamed(argparse.Action):
    """Stores the value like a plain option; an older spelling also prints one warning line."""

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in self.deprecated_option_strings:
            deprecation_warning(option_string, self.option_strings[0])
        setattr(namespace, self.dest, values)


def add_renamed(parser, new: str, *old: str, **kwargs) -> argparse.Action:
    """``parser.add_argument(new, ...)`` that also accepts the older spellings ``old``.

    They are left out of --help and print a line naming ``new`` when used, so scripts written
    for an older release keep running while they are updated.
    """
    action = parser.add_argument(new, *old, action=_StoreRenamed, **kwargs)
    action.deprecated_option_strings = frozenset(old)
    return action


def add_command(subparsers, name: str, run, help: str, description: str, **files) -> argparse.ArgumentParser:
    """The parser of subcommand ``name``, which calls ``run(args)``, with its required file flags:
    ``input=(METAVAR, help, *older spellings)`` adds ``--input`` (likewise images, output, gt, pred)."""
    parser = subparsers.add_parser(name, help=help, description=description)
    parser.set_defaults(func=run)
    add_files(parser, **files)
    return parser


def add_files(parser, **files) -> None:
    """Required file flags: ``input=(METAVAR, help, *older spellings)`` adds ``--input``."""
    for flag, (metavar, text, *old) in files.items():
        add_renamed(parser, f"--{flag}", *old, required=True, metavar=metavar, help=text)


def add_input_output_args(parser: argparse.ArgumentParser, what: str = "images") -> None:
    add_files(
        parser,
        input=("DIR|GLOB|LIST.txt", f"the {what}: a folder (searched recursively; flat or nested), a quoted glob "
                                    f"pattern (e.g. 'data/**/*.jpg'), or a .txt list with one path per line "
                                    f"(relative to the list's folder, # comments). file_name in the output is "
                                    f"relative to this input root"),
        output=("OUT.json", "the output file, written atomically when the run is complete. Beside it: "
                            "OUT.failures.jsonl (items that could not be processed, with the reason), "
                            "OUT.journal.jsonl while running (for --resume), OUT.log.jsonl (timings)"),
    )
    add_max_images_arg(parser, "inputs")


def add_max_images_arg(parser, what: str) -> None:
    parser.add_argument("--max-images", type=int, default=None, metavar="N",
                        help=f"process only the first N {what} in sorted order (default: all)")


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="cpu", metavar="cpu|cuda",
        help="where the model runs: cpu, cuda or cuda:N; plain cuda under torchrun means cuda:LOCAL_RANK "
             "(default: cpu, which always exists)",
    )


def add_max_pixels_arg(parser) -> None:
    from seg_suite.io.images import DEFAULT_MAX_PIXELS

    parser.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
        help="larger images are refused and listed in the failures (default: %(default)s, "
             "seg_suite.io.images.DEFAULT_MAX_PIXELS)",
    )


def max_pixels(args) -> int:
    """``--max-pixels``, checked."""
    if args.max_pixels < 1:
        raise UserError("--max-pixels must be positive")
    return args.max_pixels


def device_from_args(args) -> str:
    """``--device``, checked (:func:`seg_suite.devices.resolve_device`), with plain ``cuda`` mapped to
    this process's GPU under torchrun."""
    from seg_suite.devices import local_device, resolve_device

    device = local_device(args.device)
    resolve_device(device)
    return device


def add_backbone_args(parser: argparse.ArgumentParser, default_backbone: str, source: str,
                      handcrafted_hint: str = "", output: str = "outputs") -> None:
    """--backbone --weights --random-init --device, one group for every feature-based command."""
    from seg_suite.features.backbones import BACKBONE_NAMES, HANDCRAFTED

    group = parser.add_argument_group("features")
    group.add_argument(
        "--backbone", default=default_backbone, choices=BACKBONE_NAMES, metavar="NAME",
        help=f"feature backbone: {', '.join(BACKBONE_NAMES)} (default: %(default)s, {source}). '{HANDCRAFTED}' is a "
             f"weight-free stand-in for DINO features that runs offline{handcrafted_hint}",
    )
    group.add_argument(
        "--weights", default=None, metavar="PATH",
        help="local checkpoint in the official DINO/DINOv2 format (default: looked up in $SEG_SUITE_WEIGHTS "
             "and ~/.cache/seg_suite/weights by its official file name)",
    )
    group.add_argument("--random-init", action="store_true",
                       help=f"random backbone weights, for timing and tests only: the {output} are meaningless "
                            f"(default: off)")
    add_precision_arg(group, "backbone")
    add_device_arg(parser)


def add_precision_arg(group, model: str) -> None:
    """--precision: the autocast of the ``model``'s forward (seg_suite.features.precision)."""
    from seg_suite.features.precision import DEFAULT_PRECISION, PRECISION_SOURCE, PRECISIONS

    group.add_argument(
        "--precision", default=DEFAULT_PRECISION, choices=PRECISIONS,
        help=f"floating point of the {model} forward: fp32; bf16 on a CPU with AMX-BF16 or AVX512-BF16 "
             f"and on CUDA; fp16 on CUDA only. Everything after the {model} stays float32 "
             f"(default: %(default)s, {PRECISION_SOURCE})",
    )

def add_run_args(parser: argparse.ArgumentParser, default_batch_size: int = 1, what: str = "images",
                 batch_source: str = "seg_suite's choice") -> None:
    """The runner's flags; ``batch_source`` says where the --batch-size default comes from."""
    group = parser.add_argument_group("scale-out and restarts (seg_suite.pseudo.runner)")
    group.add_argument(
        "--num-shards", type=int, default=None, metavar="K",
        help="split the inputs into K shards (batch j of the sorted list goes to shard j %% K, so merged "
             "shards equal an unsharded run with the same --batch-size); "
             "shard I writes OUT.shard-IIIII-of-KKKKK.json, joined by `seg-suite merge` "
             "(default: SLURM_ARRAY_TASK_COUNT (or _MIN/_MAX) in a SLURM job array, WORLD_SIZE under "
             "torchrun, else 1)",
    )
    group.add_argument(
        "--shard-id", type=int, default=None, metavar="I",
        help="which shard to run, 0..K-1 (default: SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN, "
             "torchrun's RANK, else 0)",
    )
    group.add_argument(
        "--resume", action="store_true",
        help="continue a killed or interrupted run from its journal (the result is identical to an "
             "uninterrupted run); with a finished output it does nothing (default: off, and an "
             "existing journal or output is then an error)",
    )
    group.add_argument(
        "--overwrite", action="store_true",
        help="discard an existing output and journal and start over (default: off)",
    )
    group.add_argument(
        "--retry-failed", action="store_true",
        help="with --resume, process again the items recorded as failed (default: off, failures are final)",
    )
    group.add_argument(
        "--batch-size", type=int, default=default_batch_size, metavar="B",
        help=f"{what} per model call; keep it when resuming or sharding one run (default: {default_batch_size}, "
             f"{batch_source})",
    )
    group.add_argument(
        "--workers", type=int, default=DEFAULT_WORKERS, metavar="W",
        help=f"DataLoader worker processes reading and decoding {what} while the model runs "
             f"(default: {DEFAULT_WORKERS}; 0 reads in the main process)",
    )
    add_max_failed_arg(group, what)
    group.add_argument(
        "--no-progress", action="store_true",
        help="hide the progress bar (default: shown on stderr, with items/s)",
    )


def add_max_failed_arg(parser, what: str = "items") -> None:
    parser.add_argument(
        "--max-failed", type=float, default=None, metavar="FRACTION",
        help=f"exit with code 3 when more than this fraction (0..1) of the {what} failed, e.g. 0.05; the "
             f"output is written either way and the failures are listed in OUT.failures.jsonl (default: none, "
             f"only a run in which every item failed exits with 3)",
    )


def check_max_failed(args) -> None:
    value = getattr(args, "max_failed", None)
    if value is not None and not 0 <= value <= 1:
        raise UserError(f"--max-failed is a fraction of the items, from 0 to 1; got {value}")


def select_items(args):
    from seg_suite.pseudo.inputs import discover_inputs

    items = discover_inputs(args.input)
    if args.max_images is not None:
        if args.max_images < 1:
            raise UserError(f"--max-images must be at least 1, got {args.max_images}")
        items = items[: args.max_images]
    return items


def run_kwargs(args) -> dict:
    from seg_suite.pseudo.runner import ShardSpec

    if args.retry_failed and not args.resume:
        raise UserError("--retry-failed only makes sense with --resume")
    check_max_failed(args)
    return {
        "shard": ShardSpec.resolve(args.num_shards, args.shard_id),
        "resume": args.resume,
        "overwrite": args.overwrite,
        "retry_failed": args.retry_failed,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "progress": not args.no_progress,
    }


def check_output(path, what: str = "--output") -> None:
    """Fail now, in one line, if the output file ``path`` cannot be written: it is a folder, or
    its folder cannot be created or written.

    Called before a model is loaded or any work starts, so an unwritable destination costs a
    second, not the run; the runner checks again before any item is processed.
    """
    from pathlib import Path

    from seg_suite.io.files import check_writable_dir

    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; give a file name in it (e.g. {path / 'out.json'})")
    check_writable_dir(path.absolute().parent, f"folder of {what}")


def items_exit_code(num_items: int, num_failed: int, max_failed: float | None = None) -> int:
    """EXIT_ITEMS_FAILED when no item succeeded or more than ``max_failed`` of them failed, else EXIT_OK."""
    if num_failed and num_failed >= num_items:
        return EXIT_ITEMS_FAILED
    if max_failed is not None and num_failed > max_failed * num_items:
        return EXIT_ITEMS_FAILED
    return EXIT_OK


def summary_exit_code(summary, max_failed: float | None = None) -> int:
    """The exit code for a run's RunSummary; when it is not 0, also one ``error:`` line saying why."""
    code = items_exit_code(summary.num_items, summary.num_failed, max_failed)
    if code != EXIT_OK:
        if summary.num_failed >= summary.num_items:
            why = f"no item succeeded (all {summary.num_items} failed)"
        else:
            why = (f"{summary.num_failed} of {summary.num_items} items failed, more than --max-failed "
                   f"{max_failed:g} allows")
        print(f"error: {why}; the reasons are in {summary.failures}", file=sys.stderr)
    return code


def print_summary(summary, max_failed: float | None = None) -> int:
    """One closing line (what was written, how many items failed); returns the exit code.

    The code is :func:`summary_exit_code`'s. A run that found its output already complete prints
    no line of its own but returns the code of the run that wrote it.
    """
    if not summary.skipped:
        line = f"wrote {summary.output}: {summary.num_items - summary.num_failed} of {summary.num_items} items done"
        if summary.num_failed:
            line += f", {summary.num_failed} failed (reasons in {summary.failures})"
        if summary.masks and summary.masks["images"]:
            m = summary.masks
            line += f"; {m['masks'] / m['images']:.2f} masks per image, {m['empty']} of {m['images']} images got none"
        print(line, file=sys.stderr)
    return summary_exit_code(summary, max_failed)


def finish(summary, args) -> int:
    """The exit code of a generator command whose run returned ``summary`` (and its closing lines)."""
    return print_summary(summary, getattr(args, "max_failed", None))


def input_root(spec: str):
    """The folder an --input's file names are relative to: the folder itself, a list file's folder;
    None for a glob pattern (its root is not one folder the user named)."""
    from pathlib import Path

    path = Path(spec)
    if path.is_dir():
        return path
    return path.parent if path.is_file() else None


def print_report_hint(output, images=None, gt=None) -> None:
    """The closing line of a command whose output a report can show: the exact command that builds it
    (the report folder is the output's name with ``_report``)."""
    import shlex
    from pathlib import Path

    parts = ["seg-suite", "report", "--input", str(output)]
    if images is not None:
        parts += ["--images", str(images)]
    if gt is not None:
        parts += ["--gt", str(gt)]
    parts += ["--output", str(Path(output).with_suffix("")) + "_report"]
    print("to look at it: " + shlex.join(parts), file=sys.stderr)


