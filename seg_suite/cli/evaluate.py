"""``seg-suite evaluate``: score clustered predictions against ground truth under a cluster -> class mapping."""

from __future__ import annotations

from seg_suite.cli import _common


COMMAND = "evaluate"
HELP = "unsupervised evaluation: map clusters to classes, then AP / mIoU / PQ"


def register(subparsers) -> None:
    from seg_suite.evaluation.unsupervised import PROTOCOLS

    parser = subparsers.add_parser(
        COMMAND,
        help=HELP,
        description=(
            "Fit a cluster -> class mapping (1:1 Hungarian, as STEGO, or many-to-one majority, as U2Seg) and "
            "score under it: instances (segm and bbox AP, plus class-agnostic AP/AP50/AR, the CutLER protocol), "
            "semantic (mIoU and pixel accuracy, STEGO) or panoptic (PQ/SQ/RQ, things/stuff, panopticapi rules). "
            "The mapping is fitted on a split disjoint from the scored one: by default a random half of the "
            "scored images, which are then left out of the scores; --fit-pred/--fit-gt name another split; "
            "--fit-on-scored-split fits on the scored images themselves (optimistic; the output says so)."
        ),
    )
    parser.add_argument("--task", required=True, choices=("instances", "semantic", "panoptic"),
                        help="instances: COCO instance JSONs; semantic: folders of PNG label maps; panoptic: "
                             "COCO panoptic JSONs (PNG folders beside them or given)")
    parser.add_argument("--pred", required=True, help="prediction: clustered COCO JSON, PNG folder or panoptic JSON")
    parser.add_argument("--gt", required=True, help="ground truth, of the same kind as --pred")
    parser.add_argument("--pred-folder", default=None,
                        help="panoptic: PNG folder of --pred (default: the JSON path without .json)")
    parser.add_argument("--gt-folder", default=None,
                        help="panoptic: PNG folder of --gt (default: the JSON path without .json)")
    parser.add_argument("--protocol", default="hungarian", choices=PROTOCOLS,
                        help="hungarian: 1:1 linear_sum_assignment maximising the matches (STEGO), extra clusters "
                             "by further assignments; majority: each cluster -> its most frequent class (U2Seg, "
                             "without its threshold) (default: %(default)s)")
    parser.add_argument("--extra-clusters", default="assign", choices=("assign", "none"),
                        help="hungarian with more clusters than classes: assign the extra ones by further "
                             "rounds, or leave them unmapped (always wrong, STEGO's -1) (default: %(default)s)")
    fit = parser.add_argument_group("which images fit the mapping")
    fit.add_argument("--fit-fraction", type=float, default=0.5,
                     help="without --fit-pred: this random fraction of the scored split fits the mapping and is "
                          "not scored (default: %(default)s, seg_suite's choice: half for fitting, half for "
                          "scoring)")
    fit.add_argument("--fit-seed", type=int, default=0, help="seed of that random split (default: %(default)s)")
    fit.add_argument("--fit-pred", default=None,
                     help="fit on this separate split instead (prediction, same kind as --pred) "
                          "(default: none, a random part of the scored split)")
    fit.add_argument("--fit-gt", default=None,
                     help="ground truth of the separate fit split (default: none; needed with --fit-pred)")
    fit.add_argument("--fit-pred-folder", default=None,
                     help="panoptic: PNG folder of --fit-pred (default: the JSON path without .json)")
    fit.add_argument("--fit-gt-folder", default=None,
                     help="panoptic: PNG folder of --fit-gt (default: the JSON path without .json)")
    fit.add_argument("--fit-on-scored-split", action="store_true",
                     help="fit the mapping on the scored images themselves, as U2Seg and STEGO do (default: "
                          "off; optimistic)")
    sem = parser.add_argument_group("semantic")
    sem.add_argument("--cocostuff27", action="store_true",
                     help="the ground-truth PNGs hold COCO-Stuff's 182 fine labels: score the 27 coarse classes "
                          "(STEGO's table) (default: off, PNG values are the classes)")
    sem.add_argument("--num-clusters", type=int, default=None, help="K (default: the largest predicted value + 1)")
    sem.add_argument("--num-classes", type=int, default=None,
                     help="C (default: 27 with --cocostuff27, else the largest ground-truth value + 1; 255 is ignored)")
    parser.add_argument("--output", default=None, metavar="R.json", help="also write the results as JSON, atomically (default: print only)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars (default: shown)")
    parser.set_defaults(func=run)


def _fit_split(args):
    from seg_suite.errors import UserError
    from seg_suite.evaluation.fit_split import HeldOut, ScoredSplit, SeparateSplit

    separate = args.fit_pred is not None or args.fit_gt is not None
    if separate and args.fit_on_scored_split:
        raise UserError("give either --fit-pred/--fit-gt or --fit-on-scored-split, not both")
    if separate:
        if args.fit_pred is None or args.fit_gt is None:
            raise UserError("--fit-pred and --fit-gt go together")
        return SeparateSplit(f"the separate split {args.fit_pred} vs {args.fit_gt}")
    if args.fit_on_scored_split:
        return ScoredSplit()
    return HeldOut(args.fit_fraction, args.fit_seed)


def format_results(task: str, res: dict) -> str:
    lines = [f"mapping: {res['protocol']}, fitted on {res['fit']}"]
    if task == "instances":
        for kind in ("segm", "bbox"):
            r = res[kind]
            lines.append(f"{kind:5s} AP {r['AP']:6.2f}  AP50 {r['AP50']:6.2f}  AP75 {r['AP75']:6.2f}")
        if "class_agnostic" in res:
            r = res["class_agnostic"]
            lines.append(f"class-agnostic AP {r['AP']:6.2f}  AP50 {r['AP50']:6.2f}  AR100 {r['AR100']:6.2f}")
    elif task == "semantic":
        lines.append(f"mIoU {res['mIoU']:6.2f}  pixel accuracy {res['pAcc']:6.2f}")
    else:
        for name in ("All", "Things", "Stuff"):
            r = res[name]
            lines.append(f"{name:7s} PQ {r['pq']:6.2f}  SQ {r['sq']:6.2f}  RQ {r['rq']:6.2f}  (n={r['n']})")
    return "\n".join(lines)


def run(args) -> int:
    import sys

    from seg_suite.evaluation import unsupervised as U
    from seg_suite.io.coco import read_coco
    from seg_suite.io.files import atomic_write_json

    fit = _fit_split(args)
    if args.output:
        _common.check_output(args.output)
    common = dict(protocol=args.protocol, fit=fit, extra=args.extra_clusters)
    if args.task == "instances":
        sources = {"pred": args.pred, "gt": args.gt, "fit_pred": args.fit_pred, "fit_gt": args.fit_gt}
        res = U.evaluate_instances(read_coco(args.pred, "prediction file"), read_coco(args.gt, "ground-truth file"),
                                   fit_pred=read_coco(args.fit_pred, "prediction file") if args.fit_pred else None,
                                   fit_gt=read_coco(args.fit_gt, "ground-truth file") if args.fit_gt else None,
                                   sources={k: v for k, v in sources.items() if v}, **common)
    elif args.task == "semantic":
        res = U.evaluate_semantic(args.pred, args.gt, num_clusters=args.num_clusters, num_classes=args.num_classes,
                                  fit_pred_dir=args.fit_pred, fit_gt_dir=args.fit_gt, cocostuff27=args.cocostuff27,
                                  progress=not args.no_progress, **common)
    else:
        res = U.evaluate_panoptic(args.pred, args.gt, pred_dir=args.pred_folder, gt_dir=args.gt_folder,
                                  fit_pred_json=args.fit_pred, fit_gt_json=args.fit_gt,
                                  fit_pred_dir=args.fit_pred_folder, fit_gt_dir=args.fit_gt_folder,
                                  progress=not args.no_progress, **common)
    res["task"] = args.task
    print(format_results(args.task, res))
    if args.output:
        atomic_write_json(args.output, res)
        _common.print_report_hint(args.output)
    else:
        print("to look at it in a report: rerun with --output R.json, then `seg-suite report --input R.json "
              "--output R_report`", file=sys.stderr)
    return 0
