"""``seg-suite self-train``: multi-round self-training of a Mask2Former on pseudo-labels (CutLER)."""

from __future__ import annotations

import argparse

from seg_suite.cli import _common


COMMAND = "self-train"
HELP = "multi-round self-training on pseudo-labels (train, predict, merge, repeat)"


def register(subparsers) -> None:
    from seg_suite.workflows.self_training import DEFAULT_MERGE_IOU, DEFAULT_THRESHOLDS

    parser = subparsers.add_parser(
        COMMAND,
        help=HELP,
        formatter_class=_common.RawDescriptionHelpFormatter,
        description=(
            "Self-training as CutLER (cutler/tools/get_self_training_ann.py). Each round trains through the\n"
            "tools/train_net.py code path, predicts on the training images, keeps predictions with\n"
            "score >= the round's threshold, adds back the round's pseudo-masks whose largest IoU with\n"
            "the kept predictions is < --merge-iou, and writes the next round's COCO file.\n"
            "OUTPUT/round_k/ keeps the round's data (train.json), config.yaml, checkpoints,\n"
            "metrics.json, predictions (predict/) and summary (round.json); OUTPUT/summary.json lists\n"
            "all rounds. Round k > 1 starts from round k-1's model_final.pth."
        ),
        epilog=(
            "example:\n"
            "  seg-suite self-train --config-file configs/pseudo/maskformer2_R50_class_agnostic.yaml \\\n"
            "    --input pseudo/imagenet_train.json --images datasets/imagenet/train \\\n"
            "    --output output/self_train --rounds 2 SOLVER.MAX_ITER 80000\n"
            "Config key defaults: seg_suite/config/."
        ),
    )
    parser.add_argument("--config-file", required=True, metavar="FILE",
                        help="training config (detectron2 YAML), as for tools/train_net.py")
    _common.add_renamed(parser, "--input", "--train-json", required=True, metavar="P.json",
                        help="round-1 pseudo-labels: a COCO instance file (RLE or polygon masks)")
    _common.add_renamed(parser, "--images", "--image-root", required=True, metavar="DIR",
                        help="folder the file_name entries of --input are relative to")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder of the rounds (round_1/, round_2/, ...)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="number of rounds (default: %(default)s; CutLER's README runs 2 after the first model)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=None, metavar="T",
                        help="score threshold of each round's predictions, at most one per round; the last value "
                             f"repeats for later rounds (default: {' '.join(map(str, DEFAULT_THRESHOLDS))}, CutLER's "
                             f"README, cut to --rounds: one round uses {DEFAULT_THRESHOLDS[0]})")
    parser.add_argument("--merge-iou", type=float, default=DEFAULT_MERGE_IOU,
                        help="a pseudo-mask is kept when its largest IoU with the kept predictions is below "
                             "this (default: %(default)s, CutLER's get_self_training_ann.py)")
    parser.add_argument("--resume", action="store_true",
                        help="continue in an existing --output: finished rounds are skipped, an interrupted "
                             "round resumes from its last checkpoint (default: off; without it an --output "
                             "holding rounds is refused)")
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="GPUs per machine; 0 runs on the CPU (default: %(default)s, as tools/train_net.py)")
    parser.add_argument("--num-machines", type=int, default=1, help="machines (default: %(default)s)")
    parser.add_argument("--machine-rank", type=int, default=0, help="rank of this machine (default: %(default)s)")
    parser.add_argument("--dist-url", default="auto",
                        help="torch.distributed init URL (default: %(default)s, a free local port, as detectron2)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides applied to every round, e.g. SOLVER.MAX_ITER 1000 "
                             "MODEL.MASK_FORMER.DROPLOSS_IOU 0.01")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seg_suite.workflows.self_training import self_train

    summaries = self_train(
        args.config_file, args.input, args.images, args.output, rounds=args.rounds,
        thresholds=args.thresholds, resume=args.resume, opts=args.opts, num_gpus=args.num_gpus,
        num_machines=args.num_machines, machine_rank=args.machine_rank, dist_url=args.dist_url,
        merge_iou=args.merge_iou,
    )
    for s in summaries:
        print(f"round {s['round']}: {s['input_annotations']} -> {s['annotations']} annotations "
              f"({s['kept_predictions']} predictions with score >= {s['score_threshold']}, "
              f"{s['kept_pseudo_masks']} pseudo-masks kept); next: {s['next_train_json']}"
              + (" [finished earlier: skipped]" if s["skipped"] else ""))
    return 0
