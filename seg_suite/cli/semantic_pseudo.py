"""``seg-suite semantic-pseudo``: stuff pseudo-labels, one cluster map per image (dataset-level k-means)."""

from __future__ import annotations

from seg_suite.cli import _common
from seg_suite.cli.cluster import add_kmeans_args, clusterer_from_args


COMMAND = "semantic-pseudo"
HELP = "stuff/semantic pseudo-labels: k-means on patch features, one PNG per image"


def register(subparsers) -> None:
    from seg_suite.pseudo.semantic import DEFAULT_INPUT_SIZE, DEFAULT_NUM_STUFF, DEFAULT_SAMPLES_PER_IMAGE

    parser = _common.add_command(
        subparsers, COMMAND, run,
        help=HELP,
        description=(
            "Two passes over the images, both through seg_suite's sharded, resumable runner: (1) sample "
            "L2-normalised patch features of every image and fit S centroids with k-means; (2) give every "
            "patch its nearest centroid (cosine), upsample bilinearly, optionally refine with a dense CRF, "
            "and write OUT_DIR/<image name>.png (uint8 cluster index 0..S-1). Also writes "
            "OUT_DIR/centroids.npy (reuse it on new images with --centroids), OUT_DIR/samples.json/.npy "
            "(the fitting sample) and OUT_DIR/semantic.json (the index). Defaults follow STEGO."
        ),
        input=("DIR|GLOB|LIST.txt", "the images (folder searched recursively, glob or .txt list); PNG names are the "
                                    "paths relative to this root with .png", "--images"),
        output=("OUT_DIR", "folder the maps and centroids are written to", "--output-dir"),
    )
    _common.add_max_images_arg(parser, "images")
    _common.add_backbone_args(parser, "dino_vitb8", "STEGO's COCO-Stuff model, DINO ViT-B/8", output="clusters")
    feat = parser.add_argument_group("patch features")
    feat.add_argument("--input-size", type=int, default=DEFAULT_INPUT_SIZE,
                      help="longer image side fed to the backbone (default: %(default)s, STEGO eval_config.yml res)")
    feat.add_argument("--samples-per-image", type=int, default=DEFAULT_SAMPLES_PER_IMAGE,
                      help="random patches per image kept for fitting (default: %(default)s; bounds the "
                           "fitting set at N_images x this)")
    feat.add_argument("--crf", action="store_true",
                      help="refine each map with a dense CRF (STEGO src/crf.py parameters) (default: off)")
    _common.add_max_pixels_arg(feat)
    add_kmeans_args(parser, DEFAULT_NUM_STUFF, "COCO-Stuff-27 as STEGO and U2Seg")
    _common.add_run_args(parser)


def run(args) -> int:
    import sys
    from pathlib import Path

    from seg_suite.pseudo.semantic import make_stuff_pseudo_labels

    kwargs = _common.run_kwargs(args)
    clusterer = None if args.centroids else clusterer_from_args(args)[0]
    items = _common.select_items(args)
    _common.check_output(Path(args.output) / "semantic.json")
    summary = make_stuff_pseudo_labels(
        items, args.output, clusterer, backbone=args.backbone, centroids=args.centroids,
        crf=args.crf, input_size=args.input_size, samples_per_image=args.samples_per_image, seed=args.seed,
        weights=args.weights, device=_common.device_from_args(args), random_init=args.random_init,
        max_pixels=_common.max_pixels(args), precision=args.precision, **kwargs)
    if summary is None:
        print(f"shard done; join the sample shards with `seg-suite merge --output {args.output}/samples.json "
              f"<shard files>`, then rerun with --resume (and the same shard flags) to fit the centroids and "
              f"write this shard's maps", file=sys.stderr)
        return 0
    return _common.finish(summary, args)
