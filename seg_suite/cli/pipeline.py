"""``seg-suite pipeline``: the whole unsupervised pipeline on the synthetic set, then its score table."""

from __future__ import annotations

from seg_suite.cli import _common


COMMAND = "pipeline"
HELP = "end to end on the synthetic set: MaskCut -> clusters -> panoptic pseudo-labels -> training -> scores"


def register(subparsers) -> None:
    from seg_suite.workflows import pipeline as P
    from seg_suite.workflows.recipe_schema import DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL

    parser = subparsers.add_parser(
        COMMAND,
        help=HELP,
        description=(
            "The u2seg recipe's smoke preset with these sizes: the same as `seg-suite run u2seg --preset smoke "
            "--output DIR --set ...` (seg_suite.workflows.pipeline). Makes the synthetic set, MaskCut pseudo-masks "
            "(weight-free handcrafted backbone), k-means of the masks into K thing clusters, stuff clusters, "
            "U2Seg's panoptic merge, Mask2Former training on the panoptic pseudo-labels (tiny CPU config), "
            "predictions, and the evaluation against the synthetic ground truth with the cluster -> class "
            "mapping (Hungarian) fitted on the train split and scored on val. Prints instance AP, Hungarian "
            "mIoU and PQ. Each stage writes DIR/<stage>/; a rerun skips finished stages (an interrupted one "
            "resumes) and a changed size reruns the stages it changes."
        ),
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for every stage's files")
    parser.add_argument("--num-train", type=int, default=DEFAULT_NUM_TRAIN,
                        help="synthetic train images: pseudo-labels, training, mapping fit (default: %(default)s, "
                             "seg_suite.workflows.recipe_schema)")
    parser.add_argument("--num-val", type=int, default=DEFAULT_NUM_VAL,
                        help="synthetic val images, the scored split (default: %(default)s, seg_suite.workflows.recipe_schema)")
    parser.add_argument("--num-things", type=int, default=P.DEFAULT_NUM_THINGS,
                        help="K, thing clusters; at least 4, the true thing categories (default: %(default)s, 2x over-clustering as U2Seg; seg_suite.workflows.pipeline)")
    parser.add_argument("--num-stuff", type=int, default=P.DEFAULT_NUM_STUFF,
                        help="S, stuff clusters (default: %(default)s: the 2 true stuff categories + 1 that the objects take; seg_suite.workflows.pipeline)")
    parser.add_argument("--max-iter", type=int, default=P.DEFAULT_MAX_ITER,
                        help="training iterations of the one round (default: %(default)s, seg_suite.workflows.pipeline: a few "
                             "minutes on 2 CPU cores)")
    parser.add_argument("--seed", type=int, default=0, help="data, clustering and training seed (default: %(default)s)")
    parser.add_argument("--config-file", default=str(P.CONFIG), metavar="YAML",
                        help="training config (default: configs/synthetic/maskformer2_R50_tiny_cpu_panoptic.yaml)")
    _common.add_device_arg(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars (default: shown)")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE",
                        help="training config overrides, applied last (as tools/train_net.py) (default: none)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from seg_suite.workflows.pipeline import run_unsupervised_pipeline
    from seg_suite.workflows.run import format_results

    results = run_unsupervised_pipeline(
        args.output, num_train=args.num_train, num_val=args.num_val, num_things=args.num_things,
        num_stuff=args.num_stuff, max_iter=args.max_iter, seed=args.seed, device=_common.device_from_args(args),
        config_file=args.config_file, opts=args.opts, progress=not args.no_progress)
    print(format_results(results))
    return 0
