"""``seg-suite panoptic``: clustered instances + stuff maps -> COCO panoptic pseudo-labels (U2Seg's rules)."""

from __future__ import annotations

from seg_suite.cli import _common


COMMAND = "panoptic"
HELP = "assemble panoptic pseudo-labels (PNG + JSON) from clustered instances and stuff maps"


def register(subparsers) -> None:
    from seg_suite.pseudo.panoptic import MAX_STUFF_OVERLAP

    parser = _common.add_command(
        subparsers, COMMAND, run,
        help=HELP,
        description=(
            "Merge a clustered instance file (seg-suite cluster) and stuff maps (seg-suite semantic-pseudo) "
            "as U2Seg's generate_pseudo_panoptic.py: instances painted largest first (smaller ones on top, "
            "fully hidden ones dropped), then each stuff cluster fills the free pixels it covers if at most "
            "--max-stuff-overlap of it lies on instances. Category ids: things 1..K, stuff K+1..K+S. Writes "
            "the synthetic set's layout under --output: annotations/panoptic_SPLIT.json, panoptic/SPLIT/*.png, "
            "semantic/SPLIT/*.png (detectron2 panoptic-semantic maps), annotations/instances_SPLIT.json and "
            "a symlink images/SPLIT to the images."
        ),
        input=("CLUSTERED.json", "COCO instance file with category ids 1..K (seg-suite cluster's output)",
               "--instances"),
        images=_common.IMAGE_ROOT,
        output=("ROOT", "dataset root to write (synthetic layout)", "--output-root"),
    )
    parser.add_argument("--stuff-dir", default=None, metavar="DIR",
                        help="stuff maps from seg-suite semantic-pseudo (<image name>.png, values 0..S-1, 255 "
                             "unlabelled) (default: none, things-only labels)")
    parser.add_argument("--num-stuff", type=int, default=None, metavar="S",
                        help="number of stuff clusters (default: num_clusters of STUFF_DIR/semantic.json, else 27)")
    parser.add_argument("--num-things", type=int, default=None, metavar="K",
                        help="number of thing clusters (default: the largest category id of --input)")
    parser.add_argument("--split", default="train", help="split name used in the file names (default: %(default)s)")
    parser.add_argument("--max-stuff-overlap", type=float, default=MAX_STUFF_OVERLAP,
                        help="skip a stuff cluster when more than this fraction of it lies on instances "
                             "(default: %(default)s, U2Seg)")
    parser.add_argument("--no-link-images", action="store_true",
                        help="do not create the images/SPLIT symlink (default: create it when absent)")
    _common.add_run_args(parser)


def run(args) -> int:
    import json
    from pathlib import Path

    from seg_suite.pseudo.panoptic import make_panoptic_pseudo_labels

    num_stuff = args.num_stuff
    if num_stuff is None and args.stuff_dir:
        index = Path(args.stuff_dir) / "semantic.json"
        num_stuff = json.loads(index.read_text())["num_clusters"] if index.exists() else 27
    summary = make_panoptic_pseudo_labels(
        args.input, args.images, args.output, args.split, stuff_dir=args.stuff_dir,
        num_stuff=num_stuff or 0, num_things=args.num_things, max_overlap=args.max_stuff_overlap,
        link=not args.no_link_images, **_common.run_kwargs(args))
    return _common.finish(summary, args)
