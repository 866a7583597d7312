"""``seg-suite merge``: join the shard files of a sharded run into the final output."""

from __future__ import annotations

import glob
from pathlib import Path

from seg_suite.cli import _common


COMMAND = "merge"
HELP = "join the shard files of a sharded run (maskcut, ...) into one output"


def register(subparsers) -> None:
    parser = _common.add_command(
        subparsers, COMMAND, run,
        help=HELP,
        description=(
            "Join the K shard files written by a run with --num-shards K (OUT.shard-IIIII-of-KKKKK.json) "
            "into OUT.json, identical to what an unsharded run writes, plus OUT.failures.jsonl. "
            "Missing, duplicate, corrupt, unfinished, mismatched or edited shards (each shard file carries "
            "the SHA-256 of its content) are refused with a message and nothing is written. Exit code 3 "
            "when no item of the run succeeded (or more than --max-failed failed), as for the run itself."
        ),
    )
    _common.add_renamed(
        parser, "--input", "--inputs", nargs="+", default=None, metavar="SHARD",
        help="shard files or quoted glob patterns (default: OUT.shard-*-of-*.json beside --output)",
    )
    parser.add_argument("--output", required=True, metavar="OUT.json", help="the merged output file")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output (default: off, an existing output is an error)")
    _common.add_max_failed_arg(parser)


def _expand(specs: list[str]) -> list[str]:
    from seg_suite.errors import UserError

    paths: list[str] = []
    for spec in specs:
        if any(c in spec for c in "*?["):
            matches = sorted(glob.glob(spec))
            if not matches:
                raise UserError(f"no shard files match {spec!r}")
            paths.extend(matches)
        else:
            paths.append(spec)
    return list(dict.fromkeys(paths))


def run(args) -> int:
    import sys

    from seg_suite.errors import UserError
    from seg_suite.pseudo.runner import merge_outputs

    _common.check_max_failed(args)
    output = Path(args.output)
    if args.input is None:
        stem = output.name[: -len(output.suffix)] if output.suffix else output.name
        pattern = glob.escape(str(output.with_name(stem))) + ".shard-*-of-*.json"
        paths = sorted(glob.glob(pattern))
        if not paths:
            raise UserError(f"no shard files {pattern} found; pass them with --input")
    else:
        paths = _expand(args.input)
    summary = merge_outputs(paths, output, overwrite=args.overwrite)
    line = f"merged {len(paths)} shards into {summary.output}: {summary.num_items} items"
    if summary.num_failed:
        line += f", {summary.num_failed} failed (reasons in {summary.failures})"
    print(line, file=sys.stderr)
    return _common.summary_exit_code(summary, args.max_failed)
