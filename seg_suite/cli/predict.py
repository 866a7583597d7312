"""``seg-suite predict``: run a trained model on a folder, glob or list of images and write its outputs."""

from __future__ import annotations

from seg_suite.cli import _common


COMMAND = "predict"
HELP = "run a trained Mask2Former on images: COCO instances, panoptic PNG+JSON, semantic PNGs"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        COMMAND,
        help=HELP,
        formatter_class=_common.RawDescriptionHelpFormatter,
        description=(
            "Run the model of --config-file with --weights on every image of --input, through the dataset\n"
            "runner (sharding, --resume, failures listed in OUT/predict.failures.jsonl). OUT/ receives:\n"
            "  instances.json              COCO instances (RLE masks, bbox, score, category id)\n"
            "  panoptic.json + panoptic/   COCO panoptic (RGB id PNGs; seg-suite evaluate --task panoptic)\n"
            "  semantic/                   per-pixel class PNGs (contiguous class index)\n"
            "  predict.json                the run's record and counts\n"
            "each for the outputs the config turns on (MODEL.MASK_FORMER.TEST.*_ON). Images are named by\n"
            "their path relative to the input root, with .png."
        ),
        epilog=(
            "example:\n"
            "  seg-suite predict --config-file configs/synthetic/maskformer2_R50_tiny_cpu_panoptic.yaml \\\n"
            "    --weights output/train/model_final.pth --input datasets/synthetic/images/val \\\n"
            "    --output output/predict --categories datasets/synthetic/annotations/panoptic_val.json\n"
            "sharded: shard I of K (--num-shards K --shard-id I, or a SLURM array task) writes\n"
            "OUT/predict.shard-IIIII-of-KKKKK.json; once all K are done, write the outputs with\n"
            "  seg-suite merge --input OUT/predict.shard-*.json --output OUT/predict.json"
        ),
    )
    parser.set_defaults(func=run)
    parser.add_argument("--config-file", required=True, metavar="FILE",
                        help="the model's config (detectron2 YAML), as it was trained")
    parser.add_argument("--weights", required=True, metavar="PATH", help="the trained checkpoint (model_final.pth)")
    _common.add_files(
        parser,
        input=("DIR|GLOB|LIST.txt", "the images: a folder (searched recursively), a quoted glob pattern or a .txt "
                                    "list with one path per line (relative to the list's folder)"),
        output=("OUT", "the folder the predictions are written to"),
    )
    parser.add_argument(
        "--categories", default=None, metavar="COCO.json",
        help="a COCO file whose 'categories' list the model's classes in its class order ('isthing' marks "
             "things; absent means a thing) (default: the metadata of the config's first DATASETS.TRAIN set)")
    _common.add_max_images_arg(parser, "images")
    _common.add_device_arg(parser)
    _common.add_run_args(parser, batch_source="seg_suite's choice")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE",
                        help="config overrides applied last, e.g. MODEL.MASK_FORMER.TEST.PANOPTIC_ON False")


def run(args) -> int:
    from seg_suite.workflows.predict import run_prediction

    kwargs = _common.run_kwargs(args)
    summary = run_prediction(args.config_file, args.weights, args.input, args.output, categories=args.categories,
                             opts=args.opts, device=_common.device_from_args(args), max_images=args.max_images,
                             **kwargs)
    return _common.finish(summary, args)
