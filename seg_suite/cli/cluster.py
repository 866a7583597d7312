"""``seg-suite cluster``: give every pseudo-mask a semantic cluster id (U2Seg's instance clustering)."""

from __future__ import annotations

from seg_suite.cli import _common
from seg_suite.cli._params import add_params, params_from_args


# The k-means fields under the flags both clustering commands have always had.
KMEANS_FLAGS = {"n_clusters": "--k", "random_state": "--seed", "batch_size": "--kmeans-batch-size",
                "max_iter": "--max-epochs"}


def add_kmeans_args(parser, default_k: int, k_source: str) -> None:
    from seg_suite.pseudo.kmeans import KMeansParams

    group = parser.add_argument_group("k-means (seg_suite.pseudo.kmeans.MaskClusterer)")
    add_params(group, KMeansParams, "n_clusters", "backend", "random_state", "batch_size", "max_iter",
               flags=KMEANS_FLAGS, defaults={"n_clusters": (default_k, k_source)})
    group.add_argument("--centroids", default=None, metavar="C.npy",
                       help="reuse these [K, D] centroids (a previous run's OUT.centroids.npy) instead of fitting: "
                            "new data gets the same cluster ids (default: fit new ones)")


def clusterer_from_args(args):
    """The k-means estimator of the flags, and whether it reuses --centroids (then it only predicts)."""
    import numpy as np

    from seg_suite.errors import UserError
    from seg_suite.pseudo.kmeans import KMeansParams, MaskClusterer

    params = params_from_args(args, KMeansParams, KMEANS_FLAGS).to_dict()
    kwargs = dict(device=_common.device_from_args(args), progress=not args.no_progress)
    if args.centroids:
        try:
            centers = np.load(args.centroids)
        except (OSError, ValueError) as err:
            raise UserError(f"cannot read centroids {args.centroids}: {err}") from None
        del params["n_clusters"]  # the centroids' own number
        return MaskClusterer.from_centers(centers, **params, **kwargs), True
    return MaskClusterer(**params, **kwargs), False


COMMAND = "cluster"
HELP = "cluster pseudo-masks into K semantic classes (category_id = cluster id)"


def register(subparsers) -> None:
    from seg_suite.pseudo.cluster import DEFAULT_INPUT_SIZE, DEFAULT_N_CLUSTERS, FEATURE_MODES

    parser = _common.add_command(
        subparsers, COMMAND, run,
        help=HELP,
        description=(
            "Give every mask of a COCO pseudo-mask file a cluster id, as U2Seg does: one L2-normalised "
            "feature per mask (DINO CLS token of its box crop, or patch tokens pooled under it), then "
            "k-means. Writes OUT.json (the input with category_id = cluster id 1..K and K categories), "
            "OUT.centroids.npy [K, D], and OUT.features.json + OUT.features.npy (the features, memory-mapped; "
            "their extraction runs in seg_suite's sharded, resumable runner). Rerun with --resume and another "
            "--k to re-cluster the same features without extracting them again."
        ),
        input=("P.json", "COCO (pseudo-)mask file to cluster, e.g. from `seg-suite maskcut`", "--input-json"),
        images=_common.IMAGE_ROOT,
        output=("OUT.json", "the clustered COCO file (written atomically)"),
    )
    # U2Seg u2seg/Instance_Clustering/selective_labeling/configs/ImageNet_usl_dino_0.2.yaml: DINO-ViT-B/16
    _common.add_backbone_args(parser, "dino_vitb16", "U2Seg's instance clustering, DINO ViT-B/16",
                              " (use --feature pooled with it)", output="clusters")
    feat = parser.add_argument_group("mask features")
    feat.add_argument("--feature", default="auto", choices=FEATURE_MODES,
                      help="crop_cls: CLS token of the mask's box crop (U2Seg); pooled: patch tokens averaged "
                           "under the mask; auto: crop_cls for the DINO ViTs, pooled for handcrafted (whose CLS "
                           "token carries almost nothing) (default: %(default)s)")
    feat.add_argument("--input-size", type=int, default=None,
                      help=f"crop side (crop_cls) or longer image side (pooled) fed to the backbone (default: "
                           f"{DEFAULT_INPUT_SIZE['crop_cls']} for crop_cls, DINO's training size; "
                           f"{DEFAULT_INPUT_SIZE['pooled']} for pooled, MaskCut's size)")
    _common.add_max_pixels_arg(feat)
    add_kmeans_args(parser, DEFAULT_N_CLUSTERS, "U2Seg's COCO setting; 800 is its large one")
    _common.add_run_args(parser)


def run(args) -> int:
    import sys

    from seg_suite.errors import EXIT_ITEMS_FAILED, EXIT_OK
    from seg_suite.pseudo.cluster import cluster_mask_file

    kwargs = _common.run_kwargs(args)
    clusterer, reused = clusterer_from_args(args)
    _common.check_output(args.output)
    result = cluster_mask_file(
        args.input, args.images, args.output, clusterer, backbone=args.backbone, mode=args.feature,
        input_size=args.input_size, weights=args.weights, device=_common.device_from_args(args),
        random_init=args.random_init, max_pixels=_common.max_pixels(args), precision=args.precision,
        fit=not reused, **kwargs)
    if result is None:
        print("shard done; when all shards are, join them with `seg-suite merge --output "
              "<OUT>.features.json` (it finds the shard files beside it) and rerun this command with --resume "
              "(no shard flags) to cluster", file=sys.stderr)
        return 0
    code = _common.finish(result["features"], args)
    if not result["clustered"]:
        if code == EXIT_OK:  # the summary has not said so already
            print(f"error: no image could be read, so nothing was clustered and {args.output} was not written; "
                  f"the reasons are in {result['features'].failures}", file=sys.stderr)
        return EXIT_ITEMS_FAILED
    m = result["masks"]
    print(f"wrote {args.output}: {result['num_masks']} masks in {result['num_clusters']} clusters "
          f"({result['non_empty']} non-empty, largest {result['largest']}); {m['masks'] / max(1, m['images']):.2f} "
          f"masks per image, {m['empty']} of {m['images']} images got none", file=sys.stderr)
    _common.print_report_hint(args.output, images=args.images)
    return code
