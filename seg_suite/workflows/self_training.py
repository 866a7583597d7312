"""Multi-round self-training on pseudo-labels (CutLER, Wang et al. 2023, ``cutler/tools/get_self_training_ann.py``).

Each round k (1-based), with everything kept in ``OUTPUT/round_k/``:

1. trains on ``round_k/train.json`` through :func:`seg_suite.engine.api.train`, the call of
   ``tools/train_net.py`` (config, checkpoints every ``SOLVER.CHECKPOINT_PERIOD``,
   ``metrics.json``, ``config.yaml`` and evaluation on the config's ``DATASETS.TEST`` all land in
   ``round_k/``). Round 1 trains on a copy of the input file and starts from the config's
   ``MODEL.WEIGHTS``; round k > 1 starts from round k-1's ``model_final.pth``, as CutLER's
   self-training rounds do;
2. predicts on the training images with :func:`seg_suite.engine.api.evaluate` (on the round's own
   data, in ``round_k/predict/``), which also scores the model against the labels it trained on;
3. keeps predictions with score >= the round's threshold (CutLER: 0.7 in round 1, 0.65 after);
4. adds back the round's pseudo-masks whose largest IoU with the kept predictions of their image
   is < 0.5 (:func:`merge_pseudo_labels`);
5. writes ``round_{k+1}/train.json``, the next round's data, then ``round_k/round.json`` (the
   round's summary and metrics), which marks it finished (:class:`seg_suite.workflows.stages.Stage`);
   the round's periodic checkpoints are then deleted, ``model_final.pth`` stays
   (:func:`keep_final_checkpoint`).

Stage lines go to the terminal; the detectron2 log of every run goes to ``OUTPUT/self_train.log``
and to the run's own ``log.txt``.

Resuming (``resume=True``) skips finished rounds; an interrupted round continues training from its
``last_checkpoint`` (detectron2's resume) and redoes prediction and merging, which are cheap and
deterministic. Calling again with more rounds continues from the last finished one.

Differences from CutLER's script, deliberate: ``area`` is the mask area (CutLER writes the box
area) and ``bbox`` the mask's tight box; predictions for images missing from the label file's
``images`` are ignored (they could not be loaded for training); images keep their order.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from seg_suite.errors import UserError
from seg_suite.io.coco import check_coco
from seg_suite.io.files import atomic_write, atomic_write_json, check_writable_dir, load_json
from seg_suite.io.masks import mask_to_bbox, rle_to_mask
from seg_suite.workflows.stages import Stage

logger = logging.getLogger("seg_suite")

# CutLER README, self-training rounds 1 and 2 (get_self_training_ann.py --threshold).
DEFAULT_THRESHOLDS = (0.7, 0.65)
# cutler/tools/get_self_training_ann.py: a pseudo-mask comes back when max IoU < 0.5.
DEFAULT_MERGE_IOU = 0.5


def round_thresholds(rounds: int, thresholds: Sequence[float] | None = None) -> list[float]:
    """The score threshold of each round: ``thresholds``, the last one repeated for later rounds.

    Without ``thresholds``, CutLER's values (0.7, then 0.65) cut to ``rounds``: one round uses 0.7.
    An explicit list longer than ``rounds`` is refused, since some of it would be ignored.
    """
    if rounds < 1:
        raise UserError(f"--rounds must be >= 1, got {rounds}")
    values = list(DEFAULT_THRESHOLDS[:rounds] if not thresholds else thresholds)
    if any(not 0.0 <= t <= 1.0 for t in values):
        raise UserError(f"score thresholds must be in [0, 1], got {values}")
    if len(values) > rounds:
        raise UserError(f"{len(values)} thresholds given for {rounds} round(s); give at most one per round")
    return values + [values[-1]] * (rounds - len(values))


def _rle(segmentation, height: int, width: int) -> dict:
    """Compressed RLE of a COCO segmentation (compressed or uncompressed RLE, or polygons)."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation.get("counts"), list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def pairwise_mask_iou(a: list, b: list, height: int, width: int) -> np.ndarray:
    """IoU of every segmentation in ``a`` with every one in ``b``: (len(a), len(b)).

    Computed on run-length encodings by pycocotools (no decoding); empty masks have IoU 0.
    """
    if not a or not b:
        return np.zeros((len(a), len(b)))
    ra = [_rle(x, height, width) for x in a]
    rb = [_rle(x, height, width) for x in b]
    return np.asarray(mask_utils.iou(ra, rb, [0] * len(rb))).reshape(len(a), len(b))


def merge_pseudo_labels(previous: dict, predictions: list[dict], score_threshold: float,
                        merge_iou: float = DEFAULT_MERGE_IOU, progress: bool = False) -> tuple[dict, dict]:
    """The next round's COCO file: confident predictions plus the pseudo-masks they do not cover.

    Args:
        previous: COCO instance dict the round trained on ("images", "annotations", "categories").
        predictions: COCO results ("image_id", "category_id", "segmentation" RLE, "score").
        score_threshold: predictions with score >= this are kept.
        merge_iou: a previous pseudo-mask is added back when its largest IoU with the kept
            predictions of its image is < this.
    Returns:
        (the new COCO dict, counts: kept predictions, pseudo-masks kept and dropped, ignored
        predictions on unknown images, total annotations). Annotations are numbered 1..N, kept
        predictions first within each image; predictions carry their "score".
    """
    images = {img["id"]: img for img in previous.get("images", [])}
    kept = defaultdict(list)
    ignored = 0
    for pred in predictions:
        if pred["score"] < score_threshold:
            continue
        if pred["image_id"] not in images:
            ignored += 1
            continue
        kept[pred["image_id"]].append(pred)
    old = defaultdict(list)
    for ann in previous.get("annotations", []):
        old[ann["image_id"]].append(ann)

    annotations, carried = [], 0
    for image_id in tqdm(list(images), desc="merge", unit="img", disable=not progress):
        img, preds, anns = images[image_id], kept.get(image_id, []), old.get(image_id, [])
        h, w = int(img["height"]), int(img["width"])
        back = anns
        if preds and anns:
            iou = pairwise_mask_iou([x["segmentation"] for x in anns], [x["segmentation"] for x in preds], h, w)
            back = [ann for ann, best in zip(anns, iou.max(1)) if best < merge_iou]
        carried += len(back)
        for pred in preds:
            mask = rle_to_mask(pred["segmentation"], h, w)
            annotations.append({
                "image_id": image_id, "category_id": pred["category_id"],
                "segmentation": pred["segmentation"], "area": int(mask.sum()),
                "bbox": mask_to_bbox(mask), "iscrowd": 0, "score": float(pred["score"]),
            })
        annotations.extend(dict(ann) for ann in back)
    for i, ann in enumerate(annotations, start=1):
        ann["id"] = i
    merged = {k: v for k, v in previous.items() if k not in ("annotations", "images")}
    merged["images"] = list(images.values())
    merged["annotations"] = annotations
    counts = {"kept_predictions": sum(len(v) for v in kept.values()), "kept_pseudo_masks": carried,
              "dropped_pseudo_masks": len(previous.get("annotations", [])) - carried,
              "ignored_predictions": ignored, "annotations": len(annotations)}
    return merged, counts


def _versions() -> dict:
    import detectron2
    import torch

    from seg_suite import __version__

    return {"seg_suite": __version__, "torch": torch.__version__, "detectron2": detectron2.__version__}


def check_coco_instances(data, path: str) -> None:
    """Raise a one-line :class:`UserError` unless ``data`` is a usable COCO instance file."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise UserError(f"{path} is not a COCO instance file (needs 'images' and 'annotations' lists)")
    if not data["images"]:
        raise UserError(f"{path} lists no images")
    for img in data["images"]:
        missing = [k for k in ("id", "file_name", "height", "width") if k not in img]
        if missing:
            raise UserError(f"{path}: image entry {img.get('id', '?')} lacks {', '.join(missing)}")


def _copy(src: str, dst: Path) -> None:
    with open(src, "rb") as fin, atomic_write(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)


def _training_metrics(path: Path) -> dict:
    """From detectron2's metrics.json: the last training losses and the last evaluation (keys with a
    "/", e.g. "segm/AP", written by the evaluation hook on the config's DATASETS.TEST)."""
    last_train, evaluation = {}, {}
    if path.is_file():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if "total_loss" in record:
                last_train = {k: v for k, v in record.items() if k.startswith(("total_loss", "loss_")) and
                              not k[-1].isdigit()} | {"iteration": record.get("iteration")}
            evaluation.update({k: v for k, v in record.items() if "/" in k})
    from seg_suite.engine.launch import finite_results

    return {"final_losses": last_train, "test_results": finite_results(evaluation)}


def _training_finished(folder: Path) -> bool:
    marker = folder / "last_checkpoint"
    return marker.is_file() and marker.read_text().strip() == "model_final.pth" \
        and (folder / "model_final.pth").is_file()


_PERIODIC_CHECKPOINT = re.compile(r"model_\d+\.pth")


def keep_final_checkpoint(folder) -> list[str]:
    """Delete the periodic checkpoints (``model_NNNNNNN.pth``) of a finished training run in ``folder``.

    They exist to resume an interrupted run; once ``model_final.pth`` is written and
    ``last_checkpoint`` names it, only the final one is ever read again. Call it after the step
    that used the run is marked finished. Does nothing to a run that has not finished. Returns the
    names deleted.
    """
    folder = Path(folder)
    if not _training_finished(folder):
        return []
    removed = sorted(p.name for p in folder.iterdir() if _PERIODIC_CHECKPOINT.fullmatch(p.name))
    for name in removed:
        (folder / name).unlink(missing_ok=True)
    return removed


def _say(message: str, *args) -> None:
    """A progress line of the rounds: on the terminal (stderr) and in the log file."""
    logger.info(message, *args)
    print("[self-train] " + message % args, file=sys.stderr, flush=True)


def self_train(config_file: str, train_json: str, image_root: str, output: str, rounds: int = 2,
               thresholds: Sequence[float] | None = None, resume: bool = False, opts: Sequence[str] = (),
               num_gpus: int = 1, num_machines: int = 1, machine_rank: int = 0, dist_url: str = "auto",
               merge_iou: float = DEFAULT_MERGE_IOU, dataset_prefix: str = "self_train") -> list[dict]:
    """Run (or resume) ``rounds`` self-training rounds; see the module docstring.

    Args:
        config_file, opts: the training config and ``KEY VALUE`` overrides, as for train_net.
            The data keys (``DATASETS.TRAIN``, ``DATASETS.PSEUDO_COCO``), ``OUTPUT_DIR`` and, after
            round 1, ``MODEL.WEIGHTS`` are set per round.
        train_json, image_root: the round-1 pseudo-labels (COCO instances) and their images.
        num_gpus, num_machines, machine_rank, dist_url: detectron2 ``launch`` (0 GPUs = CPU).
    Returns:
        the ``round.json`` summary of every round, plus "skipped": True for rounds finished by an
        earlier run.

    The terminal gets one line per step of each round (stderr); the full detectron2 log of every
    training and prediction run goes to ``OUTPUT/self_train.log`` (appended on resume), and each
    run's own ``log.txt`` stays in its folder. A finished round keeps only ``model_final.pth``
    (:func:`keep_final_checkpoint`).
    """
    thresholds = round_thresholds(rounds, thresholds)
    if not os.path.isfile(train_json):
        raise UserError(f"pseudo-label file not found: {train_json}")
    if not os.path.isdir(image_root):
        raise UserError(f"image folder not found: {image_root}")
    if not os.path.isfile(config_file):
        raise UserError(f"config file not found: {config_file}")
    # Every round trains with this config: refuse a bad one (or one that would run code) before
    # anything is written.
    from seg_suite.engine.api import build_config

    build_config(config_file, list(opts), num_gpus, num_machines)
    out = Path(output)
    if not resume and any(out.glob("round_*")):
        raise UserError(f"{out} already holds self-training rounds: pass --resume to continue, "
                        f"or choose another --output")
    check_writable_dir(out, "--output folder")
    atomic_write_json(out / "self_train.json", {
        "config_file": os.path.abspath(config_file), "train_json": os.path.abspath(train_json),
        "image_root": os.path.abspath(image_root), "rounds": rounds, "thresholds": thresholds,
        "merge_iou": merge_iou, "opts": list(opts), "versions": _versions(),
    }, indent=1)

    from seg_suite.engine.launch import install_log_handlers, release_log_handlers

    log_file = out / "self_train.log"
    install_log_handlers("", log_file=str(log_file))
    try:
        print(f"[self-train] full log: {log_file}", file=sys.stderr, flush=True)
        launch = {"num_gpus": num_gpus, "num_machines": num_machines, "machine_rank": machine_rank,
                  "dist_url": dist_url, "log_file": str(log_file)}
        return _rounds(out, rounds, train_json, image_root, config_file, list(opts), thresholds, merge_iou,
                       dataset_prefix, launch)
    finally:
        release_log_handlers()


def _rounds(out: Path, rounds: int, train_json: str, image_root: str, config_file: str, opts: list[str],
            thresholds: list[float], merge_iou: float, dataset_prefix: str,
            launch: dict) -> list[dict]:
    summaries, skipped = [], set()
    for k in range(1, rounds + 1):
        folder = out / f"round_{k}"
        stage = _round_stage(folder, k)
        done = stage.done()
        if done is not None:
            _say("round %d already finished (%s): skipped", k, stage.marker)
            summaries.append(done)
            skipped.add(k)
            keep_final_checkpoint(folder)  # in case a stop came between round.json and the clean-up
            continue
        data = folder / "train.json"
        if not data.is_file():
            if k > 1:
                raise UserError(f"{data} is missing although round {k - 1} finished; remove "
                                f"{out / f'round_{k - 1}' / 'round.json'} to redo that round")
            labels = load_json(train_json, "pseudo-label file")
            check_coco_instances(labels, train_json)
            check_coco(labels, train_json, "pseudo-label file", check_masks=True)
            _copy(train_json, data)
        summaries.append(_one_round(k, folder, data, image_root, config_file, opts, thresholds[k - 1],
                                    merge_iou, f"{dataset_prefix}_round{k}", launch))
        keep_final_checkpoint(folder)
    atomic_write_json(out / "summary.json", summaries, indent=1)
    return [{**s, "skipped": s["round"] in skipped} for s in summaries]


def _round_stage(folder: Path, k: int) -> Stage:
    """Round k's marker: ``round_k/round.json``, the round's summary."""
    return Stage(folder, f"round_{k}", marker="round.json")


def _one_round(k: int, folder: Path, data: Path, image_root: str, config_file: str, opts: list[str],
               threshold: float, merge_iou: float, name: str, launch: dict) -> dict:
    from seg_suite.engine.api import build_config, train

    data_opts = ["DATASETS.PSEUDO_COCO", repr([[name, str(data), os.path.abspath(image_root)]]),
                 "DATASETS.TRAIN", repr((name,))]
    start = [] if k == 1 else ["MODEL.WEIGHTS", str(folder.parent / f"round_{k - 1}" / "model_final.pth")]

    def config(extra: list[str]):
        return build_config(config_file, [*opts, *start, *data_opts, *extra], launch["num_gpus"],
                            launch["num_machines"])

    if _training_finished(folder):
        _say("round %d: training already finished", k)
    else:
        _say("round %d: training on %s", k, data)
        # Always resume: a fresh folder has no checkpoint, so the weights come from MODEL.WEIGHTS.
        train(config(["OUTPUT_DIR", str(folder)]), resume=True, config_file=config_file, **launch)

    _say("round %d: predicting on the training images", k)
    next_data = folder.parent / f"round_{k + 1}" / "train.json"
    relabelled = relabel(config_file, [*opts, *start, *data_opts], str(folder / "model_final.pth"), data,
                         next_data, threshold, merge_iou, name=name, predict_dir=folder / "predict",
                         results_path=folder / "train_agreement.json", description=f"round {k}",
                         next_round=k + 1, launch=launch)
    counts, previous = relabelled["counts"], relabelled["previous"]
    summary = {
        "round": k, "train_json": str(data), "next_train_json": str(next_data), "score_threshold": threshold,
        "merge_iou": merge_iou, "input_annotations": previous,
        "predictions": relabelled["predictions"], **counts,
        **_training_metrics(folder / "metrics.json"),
        "train_agreement": relabelled["agreement"],  # the model scored against the labels it trained on
        "versions": _versions(),
    }
    _round_stage(folder, k).finish(summary, timed=False)
    _say("round %d finished: %d annotations -> %d (%d predictions kept, %d pseudo-masks kept)", k,
         summary["input_annotations"], counts["annotations"], counts["kept_predictions"], counts["kept_pseudo_masks"])
    return summary


def relabel(config_file: str, opts: Sequence[str], weights: str, train_json, next_json, threshold: float,
            merge_iou: float, *, name: str, predict_dir, results_path=None, description: str = "",
            next_round: int | None = None, launch: dict | None = None) -> dict:
    """Label the training images of ``train_json`` anew with a trained model: its predictions with
    score >= ``threshold``, plus the old pseudo-masks with max IoU < ``merge_iou`` against them,
    written to ``next_json``. ``opts`` must register ``train_json`` as dataset ``name``
    (``DATASETS.PSEUDO_COCO``). Returns the counts, the number of predictions and of old labels, and
    the model's scores against the labels it was given (``agreement``)."""
    from seg_suite.engine.api import build_config, evaluate

    launch = launch or {"num_gpus": 0}
    cfg = build_config(config_file, [*opts, "MODEL.WEIGHTS", str(weights), "DATASETS.TEST", repr((name,)),
                                     "OUTPUT_DIR", str(predict_dir)], launch["num_gpus"], launch.get("num_machines", 1))
    agreement = evaluate(cfg, config_file=config_file, results_path=results_path, **launch)
    predictions = load_json(Path(predict_dir) / "inference" / name / "coco_instances_results.json", "prediction file")
    previous = load_json(train_json, "pseudo-label file")
    merged, counts = merge_pseudo_labels(previous, predictions, threshold, merge_iou, progress=True)
    round_key = {} if next_round is None else {"self_training_round": next_round}
    merged["info"] = {**(merged.get("info") or {}), **round_key,
                      "description": f"seg_suite self-training: {description} predictions (score >= {threshold}) "
                                     f"+ {description} pseudo-masks with max IoU < {merge_iou}"}
    atomic_write_json(next_json, merged)
    return {"counts": counts, "predictions": len(predictions), "previous": len(previous.get("annotations", [])),
            "agreement": agreement}
