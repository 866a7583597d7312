"""The whole unsupervised pipeline on the synthetic set, as one sequence of library calls.

    results = run_unsupervised_pipeline("out/pipeline")      # or: seg-suite pipeline --output out/pipeline

Stages, each writing into ``OUTPUT/<stage>/`` and marking itself finished with ``OUTPUT/<stage>/stage.json``
(written last, atomically, with the run's parameters: :class:`seg_suite.workflows.stages.Stage`), so a
rerun skips finished stages and resumes an interrupted one (the runner's journals, detectron2's
``last_checkpoint``):

1. ``data``      :func:`seg_suite.data.synthetic.make_synthetic_dataset` (4 thing, 2 stuff classes);
2. ``maskcut``   MaskCut pseudo-masks on the train images, weight-free ``handcrafted`` backbone
                 (:class:`seg_suite.pseudo.maskcut_job.MaskCutJob` through the one runner);
3. ``cluster``   one mask-pooled feature per pseudo-mask (``pooled``: the handcrafted backbone's CLS
                 token carries no crop identity), k-means into K = ``num_things`` clusters (default 8,
                 at least the 4 true thing categories);
4. ``stuff``     dataset-level k-means on patch features into S = ``num_stuff`` clusters (default 3),
                 one map per image;
5. ``panoptic``  U2Seg's merge into COCO panoptic pseudo-labels (things 1..K, stuff K+1..K+S);
6. ``train``     ONE round of Mask2Former training on them, through
                 :func:`seg_suite.engine.api.train` (the call of ``tools/train_net.py``) with
                 ``configs/synthetic/maskformer2_R50_tiny_cpu_panoptic.yaml``;
7. ``predict``   the trained model on the train AND val images: panoptic PNG + JSON, semantic PNGs
                 (argmax over the K + S classes) and COCO instance results;
8. ``evaluate``  against the synthetic ground truth: class-agnostic AP50 of the instances (CutLER
                 protocol, no mapping needed), Hungarian mIoU and PQ with the cluster -> class mapping
                 FITTED ON THE TRAIN SPLIT and scored on val (a disjoint split, never the scored one).

Every stage after ``data`` reads only images and pseudo-labels; the ground truth enters at
``evaluate`` alone. Needs detectron2 from stage 6 on.

The terminal gets the stage lines (stderr), progress bars and, from the CLI, the closing table;
detectron2's log of training and prediction (environment, config, model, iterations) goes to
``OUTPUT/pipeline.log``, appended by every rerun, and training's own to ``OUTPUT/train/log.txt``.
Once ``train`` is marked finished its periodic checkpoints are deleted: ``OUTPUT/train`` keeps
``model_final.pth`` only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from seg_suite.errors import UserError
from seg_suite.io.files import atomic_write_json
from seg_suite.workflows.stages import Stage


STAGES = ("data", "maskcut", "cluster", "stuff", "panoptic", "train", "predict", "evaluate")
SPLITS = ("train", "val")
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "synthetic" / "maskformer2_R50_tiny_cpu_panoptic.yaml"
DATASET = "pipeline_pseudo_train_panoptic"  # the panoptic pseudo-labels, registered for training

# Defaults, and why. The synthetic set's own defaults (24 train / 8 val) would leave too few val
# images for a stable PQ, so the pipeline makes a slightly larger set.
DEFAULT_NUM_TRAIN = 32
DEFAULT_NUM_VAL = 16
# K: twice the 4 true thing categories. Over-clustering is U2Seg's practice (300 clusters for COCO's 80
# classes); measured on the pseudo-masks of the default run (32 train images, pseudo-label PQ with the
# mapping fitted on the same images): K=4 gives PQ_th 25.8 (two classes never separated), K=6 64.4 or
# 42.0 depending on the k-means seed, K=8 61.3 and 61.2 (seeds 0, 1).
DEFAULT_NUM_THINGS = 8
# S: the 2 true stuff categories + 1. The stuff k-means runs on ALL patches, so the objects take a
# cluster of their own, which the panoptic 70% rule then drops. Measured (same run): S=2 merges
# sky with objects (pseudo-label PQ_st 21.5), S=3 gives 76.2, S=4 61.2, S=6 45.7.
DEFAULT_NUM_STUFF = 3
DEFAULT_MAX_ITER = 300  # tiny CPU config: 0.55-0.8 s per iteration on the shared 2-core machine (measured)


def _stage_dir(out: Path, stage: str) -> Path:
    return out / stage


def log_path(out) -> Path:
    """Where a run in ``out`` writes detectron2's log (training and prediction)."""
    return Path(out) / "pipeline.log"


def _clean_up(out: Path, stage: str) -> None:
    """What a finished stage no longer needs: training's periodic checkpoints."""
    if stage == "train":
        from seg_suite.workflows.self_training import keep_final_checkpoint

        keep_final_checkpoint(_stage_dir(out, "train"))


def _route_training_logs(out: Path):
    """Send the training loggers to ``pipeline.log``; returns how to undo it (None without detectron2)."""
    import importlib.util

    if importlib.util.find_spec("detectron2") is None:
        return None
    from seg_suite.engine.launch import install_log_handlers, release_log_handlers

    install_log_handlers("", log_file=str(log_path(out)))
    return release_log_handlers


def _stage(out: Path, stage: str, params: dict | None = None) -> Stage:
    """The stage's folder and marker (``OUTPUT/<stage>/stage.json``); ``params``: the run's, recorded."""
    return Stage(_stage_dir(out, stage), stage, config=params)


def _run_kwargs(progress: bool) -> dict:
    # resume=True: an interrupted stage continues from its runner journal; a finished output is kept.
    return {"resume": True, "batch_size": 1, "workers": 0, "progress": progress}


def _note_failures(summary, what: str) -> int:
    """Per-image failures are recorded by the runner and the run goes on; say so once."""
    if summary.num_failed:
        print(f"[pipeline] {what}: {summary.num_failed} image(s) failed, reasons in {summary.failures}",
              file=sys.stderr)
    return summary.num_failed


# ------------------------------------------------------------------ the stages
def stage_data(out: Path, p: dict) -> dict:
    from seg_suite.data.synthetic import make_synthetic_dataset

    root = _stage_dir(out, "data")
    make_synthetic_dataset(root, num_train=p["num_train"], num_val=p["num_val"], seed=p["seed"], num_videos=0,
                           progress=p["progress"])
    return {"root": str(root)}


def stage_maskcut(out: Path, p: dict) -> dict:
    from seg_suite.pseudo.inputs import discover_inputs
    from seg_suite.pseudo.maskcut import MaskCutParams
    from seg_suite.pseudo.maskcut_job import MaskCutJob
    from seg_suite.pseudo.runner import run_job

    folder = _stage_dir(out, "maskcut")
    job = MaskCutJob(MaskCutParams(), backbone="handcrafted", device=p["device"]).load()
    images = out / "data" / "images" / "train"
    summary = run_job(job, discover_inputs(images), folder / "train.json", **_run_kwargs(p["progress"]))
    num = len(json.loads((folder / "train.json").read_text())["annotations"])
    return {"pseudo_masks": str(folder / "train.json"), "num_masks": num,
            "failed_images": _note_failures(summary, "maskcut")}


def stage_cluster(out: Path, p: dict) -> dict:
    from seg_suite.io.files import atomic_write_npy
    from seg_suite.io.coco import read_coco
    from seg_suite.pseudo.cluster import assign_clusters, extract_mask_features, load_features
    from seg_suite.pseudo.kmeans import MaskClusterer

    folder = _stage_dir(out, "cluster")
    masks = out / "maskcut" / "train.json"
    index = folder / "train.features.json"
    summary = extract_mask_features(masks, out / "data" / "images" / "train", index, backbone="handcrafted",
                                    mode="pooled", device=p["device"], **_run_kwargs(p["progress"]))
    _note_failures(summary, "mask features")
    feats, ann_ids, index_doc = load_features(index)
    if len(ann_ids) < p["num_things"]:
        raise UserError(f"only {len(ann_ids)} pseudo-masks for {p['num_things']} clusters")
    clusterer = MaskClusterer(n_clusters=p["num_things"], random_state=p["seed"], device=p["device"]).fit(feats)
    labels = clusterer.predict(feats)
    atomic_write_npy(folder / "train.centroids.npy", clusterer.cluster_centers_)
    coco = assign_clusters(read_coco(masks), ann_ids, labels, clusterer.n_clusters,
                           {"features": index_doc["info"]["params"], "kmeans": clusterer.get_params()})
    atomic_write_json(folder / "train.json", coco)
    return {"clustered": str(folder / "train.json"),
            "cluster_sizes": np.bincount(labels, minlength=clusterer.n_clusters).tolist()}


def stage_stuff(out: Path, p: dict) -> dict:
    from seg_suite.io.files import atomic_write_npy
    from seg_suite.pseudo.inputs import discover_inputs
    from seg_suite.pseudo.kmeans import MaskClusterer
    from seg_suite.pseudo.runner import run_job
    from seg_suite.pseudo.semantic import PatchSampleJob, StuffAssignJob, fit_stuff_centroids, load_centroids

    folder = _stage_dir(out, "stuff")
    items = discover_inputs(out / "data" / "images" / "train")
    common = {"device": p["device"]}
    samples = folder / "samples.json"
    summary = run_job(PatchSampleJob(samples, "handcrafted", seed=p["seed"], **common).load(), items, samples,
                      **_run_kwargs(p["progress"]))
    _note_failures(summary, "stuff feature samples")
    centroids_path = folder / "centroids.npy"
    if not centroids_path.is_file():
        centroids = fit_stuff_centroids(samples, MaskClusterer(n_clusters=p["num_stuff"], random_state=p["seed"],
                                                               device=p["device"]))
        atomic_write_npy(centroids_path, centroids)
    centroids, digest = load_centroids(centroids_path)
    maps = folder / "train"
    job = StuffAssignJob(centroids, maps, "handcrafted", centroids_sha256=digest, **common).load()
    summary = run_job(job, items, maps / "semantic.json", **_run_kwargs(p["progress"]))
    _note_failures(summary, "stuff maps")
    return {"maps": str(maps), "centroids": str(centroids_path)}


def stage_panoptic(out: Path, p: dict) -> dict:
    from seg_suite.pseudo.panoptic import make_panoptic_pseudo_labels, panoptic_output

    root = _stage_dir(out, "panoptic")
    summary = make_panoptic_pseudo_labels(out / "cluster" / "train.json", out / "data" / "images" / "train", root,
                                          "train", stuff_dir=out / "stuff" / "train", num_stuff=p["num_stuff"],
                                          num_things=p["num_things"], **_run_kwargs(p["progress"]))
    _note_failures(summary, "panoptic assembly")
    pan = json.loads(panoptic_output(root, "train").read_text())
    return {"root": str(root), "num_segments": sum(len(a["segments_info"]) for a in pan["annotations"])}


def train_config_opts(out: Path, p: dict) -> list[str]:
    """Overrides of the training config: the pseudo-labels as data (registered by the config itself,
    ``DATASETS.PSEUDO_PANOPTIC``), K + S classes, the schedule, the seed and the output folder."""
    return ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(p["num_things"] + p["num_stuff"]),
            "DATASETS.PSEUDO_PANOPTIC", repr([[DATASET, str(_stage_dir(out, "panoptic")), "train"]]),
            "DATASETS.TRAIN", repr((DATASET,)), "DATASETS.TEST", "()", "SOLVER.MAX_ITER", str(p["max_iter"]),
            "SOLVER.CHECKPOINT_PERIOD", str(max(1, p["max_iter"] // 3)), "SEED", str(p["seed"]),
            "MODEL.DEVICE", p["device"], "OUTPUT_DIR", str(_stage_dir(out, "train")), *p["opts"]]


def _num_gpus(p: dict) -> int:
    return 0 if p["device"] == "cpu" else 1


def check_train_config(out: Path, p: dict) -> None:
    """Build the training config now, so that a bad one (a YAML Python tag, an unknown key, a value
    that cannot train) is refused before the pseudo-label stages run rather than after them."""
    import importlib.util

    from seg_suite.devices import resolve_device

    resolve_device(p["device"])  # --device sets MODEL.DEVICE: refuse it in the words of the other stages
    if importlib.util.find_spec("detectron2") is None:
        return  # the stages before training run without detectron2; training says what is missing
    from seg_suite.engine.api import build_config

    build_config(str(p["config"]), train_config_opts(out, p), _num_gpus(p))


def stage_train(out: Path, p: dict) -> dict:
    from seg_suite.engine.api import build_config, train

    folder = _stage_dir(out, "train")
    cfg = build_config(str(p["config"]), train_config_opts(out, p), _num_gpus(p))
    # resume: a fresh folder has no checkpoint and starts from MODEL.WEIGHTS (none: random init);
    # an interrupted one continues after the newest checkpoint that loads.
    train(cfg, resume=True, num_gpus=_num_gpus(p), log_file=str(log_path(out)), config_file=str(p["config"]))
    losses = {}
    metrics = folder / "metrics.json"
    if metrics.is_file():
        last = [json.loads(line) for line in metrics.read_text().splitlines() if "total_loss" in line][-1:]
        losses = {k: v for k, v in (last[0] if last else {}).items() if k in ("iteration", "total_loss")}
    return {"weights": str(folder / "model_final.pth"), "last_losses": losses}


def stage_predict(out: Path, p: dict) -> dict:
    from seg_suite.data.datasets import register_pseudo_panoptic
    from seg_suite.engine.api import build_config
    from seg_suite.workflows.predict import PanopticPredictor, predict_folder

    cfg = build_config(str(p["config"]), train_config_opts(out, p), None)
    # The model's metadata (which classes are things) comes from the training set's registration.
    categories = register_pseudo_panoptic(DATASET, _stage_dir(out, "panoptic"), "train")
    predictor = PanopticPredictor(cfg, out / "train" / "model_final.pth")
    written = {}
    for split in SPLITS:
        written[split] = predict_folder(predictor, out / "data" / "images" / split, out / "predict" / split,
                                        categories, **_run_kwargs(p["progress"]))
    return {"splits": written}


def stage_evaluate(out: Path, p: dict) -> dict:
    from seg_suite.data.synthetic import SYNTHETIC_CATEGORIES
    from seg_suite.evaluation import unsupervised as U
    from seg_suite.evaluation.class_agnostic import evaluate_class_agnostic
    from seg_suite.io.coco import read_coco

    data, pred = out / "data", out / "predict"
    sep = U.SeparateSplit("the train split (disjoint from the scored val split)")
    res = {}
    res["class_agnostic"] = evaluate_class_agnostic(read_coco(pred / "val" / "instances.json"),
                                                    read_coco(data / "annotations" / "instances_val.json"))
    res["semantic"] = U.evaluate_semantic(pred / "val" / "semantic", data / "semantic" / "val",
                                          num_clusters=p["num_things"] + p["num_stuff"], num_classes=len(SYNTHETIC_CATEGORIES),
                                          protocol="hungarian", fit=sep, fit_pred_dir=pred / "train" / "semantic",
                                          fit_gt_dir=data / "semantic" / "train")
    res["panoptic"] = U.evaluate_panoptic(pred / "val" / "panoptic.json", data / "annotations" / "panoptic_val.json",
                                          gt_dir=data / "panoptic" / "val", protocol="hungarian", fit=sep,
                                          fit_pred_json=pred / "train" / "panoptic.json",
                                          fit_gt_json=data / "annotations" / "panoptic_train.json",
                                          fit_gt_dir=data / "panoptic" / "train")
    # The pseudo-masks themselves (train images: MaskCut ran there), for comparison with the model.
    res["pseudo_class_agnostic"] = evaluate_class_agnostic(read_coco(out / "maskcut" / "train.json"),
                                                           read_coco(data / "annotations" / "instances_train.json"))
    summary = summary_table_values(res)
    atomic_write_json(_stage_dir(out, "evaluate") / "results.json", res, indent=1)
    return {"results": str(_stage_dir(out, "evaluate") / "results.json"), "summary": summary}


def summary_table_values(res: dict) -> dict:
    return {"class_agnostic_AP50": res["class_agnostic"]["AP50"], "hungarian_mIoU": res["semantic"]["mIoU"],
            "PQ": res["panoptic"]["All"]["pq"], "PQ_things": res["panoptic"]["Things"]["pq"],
            "PQ_stuff": res["panoptic"]["Stuff"]["pq"], "pseudo_AP50_train": res["pseudo_class_agnostic"]["AP50"],
            "protocol": res["semantic"]["protocol"], "fit": res["semantic"]["fit"]}


_STAGE_FUNCS = {"data": stage_data, "maskcut": stage_maskcut, "cluster": stage_cluster, "stuff": stage_stuff,
                "panoptic": stage_panoptic, "train": stage_train, "predict": stage_predict,
                "evaluate": stage_evaluate}


# ------------------------------------------------------------------ the driver
def run_unsupervised_pipeline(output_dir, *, num_train: int = DEFAULT_NUM_TRAIN, num_val: int = DEFAULT_NUM_VAL,
                              num_things: int = DEFAULT_NUM_THINGS, num_stuff: int = DEFAULT_NUM_STUFF,
                              max_iter: int = DEFAULT_MAX_ITER, seed: int = 0, device: str = "cpu",
                              config_file=CONFIG, opts=(), progress: bool = True) -> dict:
    """Run (or resume) every stage into ``output_dir``; returns the summary of the evaluation.

    Args:
        num_train, num_val: synthetic images per split (train: pseudo-labels, training and the
            mapping fit; val: scored).
        num_things: K thing clusters (>= 4, the true thing categories). num_stuff: S stuff clusters.
        max_iter: training iterations (the tiny CPU config). seed: data, clustering and training seed.
        config_file, opts: the training config and ``KEY VALUE`` overrides applied last.
    Returns:
        {"class_agnostic_AP50", "hungarian_mIoU", "PQ", "PQ_things", "PQ_stuff", "pseudo_AP50_train",
        "protocol", "fit"}; the full results are in ``output_dir/evaluate/results.json``.
    The parameters are recorded in ``output_dir/pipeline.json``; a rerun with different ones is refused
    (delete the folder, or the stages to redo). The training config and ``opts`` are built and checked
    (:func:`check_train_config`) before the first stage runs.
    """
    if num_things < 4:
        raise UserError(f"--num-things must be at least 4 (the synthetic set's thing categories), got {num_things}")
    if num_stuff < 1 or num_train < 2 or num_val < 1 or max_iter < 1:
        raise UserError("need --num-stuff >= 1, --num-train >= 2, --num-val >= 1 and --max-iter >= 1")
    if not Path(config_file).is_file():
        raise UserError(f"config file not found: {config_file}")
    out = Path(output_dir)
    params = {"num_train": num_train, "num_val": num_val, "num_things": num_things, "num_stuff": num_stuff,
              "max_iter": max_iter, "seed": seed, "config": str(config_file), "opts": list(opts)}
    p = dict(params, device=device, progress=progress)
    check_train_config(out, p)
    out.mkdir(parents=True, exist_ok=True)
    record = out / "pipeline.json"
    if record.is_file():
        previous = json.loads(record.read_text())["params"]
        if previous != params:
            changed = sorted(k for k in params if previous.get(k) != params[k])
            raise UserError(f"{out} holds a run with other parameters ({', '.join(changed)}); choose another "
                            f"--output or delete it")
    else:
        from seg_suite.pseudo.runner import library_versions

        atomic_write_json(record, {"params": params, "versions": library_versions()}, indent=1)
    release = _route_training_logs(out)
    try:
        print(f"[pipeline] full log: {log_path(out)}", file=sys.stderr, flush=True)
        for name in STAGES:
            stage = _stage(out, name, params)
            done = stage.done()
            if done is not None:
                print(f"[pipeline] {name}: already finished ({done['seconds']} s), skipped", file=sys.stderr)
            else:
                print(f"[pipeline] {name} ...", file=sys.stderr, flush=True)
                stage.start()
                done = stage.finish(_STAGE_FUNCS[name](out, p))
                print(f"[pipeline] {name}: done in {done['seconds']} s", file=sys.stderr, flush=True)
            _clean_up(out, name)  # also after a skip: a stop may have come between marker and clean-up
    finally:
        if release is not None:
            release()
    return load_summary(out)


def load_summary(output_dir) -> dict:
    """The evaluation summary of a finished pipeline run in ``output_dir``."""
    done = _stage(Path(output_dir), "evaluate").done()
    if done is None:
        raise UserError(f"{output_dir} holds no finished pipeline run (run `seg-suite pipeline --output {output_dir}`)")
    return done["summary"]


def format_table(summary: dict) -> str:
    """The closing table: class-agnostic AP50, Hungarian mIoU and PQ of the trained model on val."""
    rows = [("class-agnostic AP50 (segm, CutLER protocol)", summary["class_agnostic_AP50"]),
            ("Hungarian mIoU (semantic, STEGO protocol)", summary["hungarian_mIoU"]),
            ("PQ (things / stuff: {:.1f} / {:.1f})".format(summary["PQ_things"], summary["PQ_stuff"]), summary["PQ"])]
    lines = ["Unsupervised pipeline, trained model on the synthetic val split vs its ground truth:",
             f"  {'metric':48s} {'value':>6s}"]
    lines += [f"  {name:48s} {value:6.1f}" for name, value in rows]
    lines.append(f"  mapping: {summary['protocol']} (1:1, extra clusters by further rounds), fitted on "
                 f"{summary['fit']}")
    lines.append(f"  (the MaskCut pseudo-masks on the train images: class-agnostic AP50 {summary['pseudo_AP50_train']:.1f})")
    return "\n".join(lines)
