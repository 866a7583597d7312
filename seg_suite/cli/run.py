"""``seg-suite run RECIPE --output DIR``: a published method end to end on your data, from a recipe file."""

from __future__ import annotations

import argparse

from seg_suite.cli import _common


COMMAND = "run"
HELP = "run a recipe (cutler, u2seg, rcf or a recipe file) end to end into one folder, resumable"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        COMMAND,
        help=HELP,
        description=(
            "Run a recipe: its datasets, weights and stages are data in a YAML file (configs/recipes/*.yaml; "
            "see seg_suite.workflows.recipe). Writes DIR/recipe.lock.yaml (everything resolved, versions, "
            "weights' sha256), one folder per stage, and DIR/results.json + DIR/results.md. A rerun skips "
            "finished stages and continues an interrupted one; a changed parameter reruns its stage and "
            "those after it. Missing weights or datasets are listed before anything runs."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=run)
    parser.add_argument("recipe", metavar="RECIPE",
                        help="a recipe file, or the name of a shipped one: cutler, u2seg, rcf")
    parser.add_argument("--output", required=True, metavar="DIR", help="the run's folder (created if missing)")
    parser.add_argument("--preset", default=None, metavar="NAME",
                        help="apply the recipe's preset NAME first, e.g. smoke: the synthetic set on CPU in "
                             "minutes (default: none, the published settings)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override one recipe key, e.g. stages.maskcut.tau=0.2 or "
                             "datasets.train.path=/data/photos; repeatable; the value is YAML data; an "
                             "unknown key is refused with the valid ones (default: none, the recipe as written)")
    parser.add_argument("--executor", default=None, choices=("local", "slurm"),
                        help="where stages run: local processes, or SLURM through submitit (default: the "
                             "recipe's executor.kind)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the stages, their keys, what would run where and the sbatch parameters; "
                             "run nothing (default: off)")
    _common.add_device_arg(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (default: shown)")


def run(args) -> int:
    from seg_suite.workflows.recipe import load_recipe
    from seg_suite.workflows.run import describe_run, format_results, run_recipe

    recipe = load_recipe(args.recipe, args.sets, args.preset)
    if args.dry_run:
        print(describe_run(recipe, args.output, executor=args.executor))
        return 0
    results = run_recipe(recipe, args.output, device=_common.device_from_args(args), progress=not args.no_progress,
                         executor=args.executor)
    print(format_results(results))
    print(f"\nwrote {args.output}/results.json and results.md")
    _common.print_report_hint(args.output)
    return 0
