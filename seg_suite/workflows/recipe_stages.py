"""What each stage kind of a recipe does, as functions of a :class:`~seg_suite.workflows.run.StageContext`
returning the stage's record (written to its ``stage.json``).

Image stages, in the order the shipped recipes use them:

- ``maskcut``: MaskCut pseudo-masks on the stage's image folder (CutLER);
- ``cluster``: one feature per pseudo-mask, k-means into ``n_clusters`` (U2Seg's instance clusters);
- ``stuff``: patch samples, dataset-level k-means into ``num_stuff`` clusters, one map per image (STEGO/U2Seg);
- ``panoptic``: U2Seg's merge of instance clusters and stuff maps into COCO panoptic pseudo-labels;
- ``train``: Mask2Former training through detectron2 on the latest pseudo-labels: panoptic ones
  (K + S classes) when the recipe made them, otherwise the MaskCut masks as class-agnostic instances;
- ``self_train``: CutLER's self-training rounds, starting from the ``train`` model;
- ``evaluate_class_agnostic`` / ``evaluate_unsupervised``: predict with the last trained model
  (:mod:`seg_suite.workflows.predict`) on the evaluation set (and the fit set), then score.

The video stages (``motion_masks``, ``train_rcf``, ``evaluate_video``) are in
:mod:`seg_suite.workflows.video_stages`.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from seg_suite.errors import UserError
from seg_suite.io.files import atomic_write_json, load_json
from seg_suite.workflows.run import StageContext, note_failures
from seg_suite.workflows.video_stages import VIDEO_STAGES

DEFAULT_BACKBONE = "dino_vitb8"  # CutLER's MaskCut backbone (maskcut.py --vit-arch base --patch-size 8)


def _backbone(ctx: StageContext) -> str:
    weights = ctx.weights()
    if weights.get("path") or weights.get("file"):
        raise UserError(f"weights.{ctx.name}: a feature stage takes a named backbone (weights.{ctx.name}.backbone)")
    return weights.get("backbone") or DEFAULT_BACKBONE


# ------------------------------------------------------------------ generation steps (one shard each)
def _maskcut_step(image_dir: str, output: str, params: dict, backbone: str, device: str, **run_options):
    from seg_suite.pseudo.inputs import discover_inputs
    from seg_suite.pseudo.maskcut import MaskCutParams
    from seg_suite.pseudo.maskcut_job import MaskCutJob
    from seg_suite.pseudo.runner import run_job

    job = MaskCutJob(MaskCutParams.from_dict(params), backbone=backbone, device=device).load()
    return run_job(job, discover_inputs(image_dir), output, **run_options)


def _samples_step(image_dir: str, output: str, backbone: str, params: dict, device: str, **run_options):
    from seg_suite.pseudo.inputs import discover_inputs
    from seg_suite.pseudo.runner import run_job
    from seg_suite.pseudo.semantic import PatchSampleJob

    job = PatchSampleJob(output, backbone, samples_per_image=params["samples_per_image"], seed=params["seed"],
                         input_size=params["input_size"], device=device).load()
    return run_job(job, discover_inputs(image_dir), output, **run_options)


def _stuff_maps_step(image_dir: str, output: str, centroids: str, backbone: str, input_size: int, device: str,
                     **run_options):
    from seg_suite.pseudo.inputs import discover_inputs
    from seg_suite.pseudo.runner import run_job
    from seg_suite.pseudo.semantic import StuffAssignJob, load_centroids

    values, digest = load_centroids(centroids)
    job = StuffAssignJob(values, Path(output).parent, backbone, input_size=input_size, centroids_sha256=digest,
                         device=device).load()
    return run_job(job, discover_inputs(image_dir), output, **run_options)


# ------------------------------------------------------------------ pseudo-labels
def stage_maskcut(ctx: StageContext) -> dict:
    images = ctx.dataset().need("images", "MaskCut")
    out = ctx.folder / "pseudo.json"
    step = functools.partial(_maskcut_step, str(images), str(out), ctx.params, _backbone(ctx), ctx.device)
    summary = ctx.generate(step, out)
    doc = load_json(out, "pseudo-label file")
    return {"pseudo_masks": str(out), "images": str(images), "num_images": len(doc["images"]),
            "num_masks": len(doc["annotations"]), "failed_images": note_failures(summary, "maskcut")}


def stage_cluster(ctx: StageContext) -> dict:
    import numpy as np

    from seg_suite.io.coco import read_coco
    from seg_suite.io.files import atomic_write_npy
    from seg_suite.pseudo.cluster import assign_clusters, extract_mask_features, load_features
    from seg_suite.pseudo.kmeans import MaskClusterer

    _, masks = ctx.earlier("maskcut")
    p, index = ctx.params, ctx.folder / "features.json"
    step = functools.partial(extract_mask_features, masks["pseudo_masks"], masks["images"], str(index),
                             backbone=_backbone(ctx), mode=p["mode"], input_size=p["input_size"], device=ctx.device)
    note_failures(ctx.generate(step, index), "mask features")
    feats, ann_ids, index_doc = load_features(index)
    if len(ann_ids) < p["n_clusters"]:
        raise UserError(f"stage {ctx.name}: only {len(ann_ids)} pseudo-masks for {p['n_clusters']} clusters; "
                        f"lower stages.{ctx.name}.n_clusters or add images")
    clusterer = MaskClusterer(n_clusters=p["n_clusters"], random_state=p["seed"], device=ctx.device).fit(feats)
    labels = clusterer.predict(feats)
    atomic_write_npy(ctx.folder / "centroids.npy", clusterer.cluster_centers_)
    out = ctx.folder / "clustered.json"
    coco = assign_clusters(read_coco(masks["pseudo_masks"]), ann_ids, labels, clusterer.n_clusters,
                           {"features": index_doc["info"]["params"], "kmeans": clusterer.get_params()})
    atomic_write_json(out, coco)
    return {"clustered": str(out), "images": masks["images"], "n_clusters": p["n_clusters"],
            "cluster_sizes": np.bincount(labels, minlength=clusterer.n_clusters).tolist()}


def stage_stuff(ctx: StageContext) -> dict:
    from seg_suite.io.files import atomic_write_npy
    from seg_suite.pseudo.kmeans import MaskClusterer
    from seg_suite.pseudo.semantic import fit_stuff_centroids

    images = str(ctx.dataset().need("images", "stuff clustering"))
    p, backbone = ctx.params, _backbone(ctx)
    samples = ctx.folder / "samples.json"
    note_failures(ctx.generate(functools.partial(_samples_step, images, str(samples), backbone, p, ctx.device),
                               samples), "stuff feature samples")
    centroids = ctx.folder / "centroids.npy"
    if not centroids.is_file():
        clusterer = MaskClusterer(n_clusters=p["num_stuff"], random_state=p["seed"], device=ctx.device)
        atomic_write_npy(centroids, fit_stuff_centroids(samples, clusterer))
    maps = ctx.folder / "maps" / "semantic.json"
    step = functools.partial(_stuff_maps_step, images, str(maps), str(centroids), backbone, p["input_size"],
                             ctx.device)
    note_failures(ctx.generate(step, maps), "stuff maps")
    return {"maps": str(maps.parent), "centroids": str(centroids), "num_stuff": p["num_stuff"]}


def stage_panoptic(ctx: StageContext) -> dict:
    from seg_suite.pseudo.panoptic import make_panoptic_pseudo_labels, panoptic_output

    _, clusters = ctx.earlier("cluster")
    _, stuff = ctx.earlier("stuff")
    root = ctx.folder
    step = functools.partial(make_panoptic_pseudo_labels, clusters["clustered"], clusters["images"], str(root),
                             "train", stuff_dir=stuff["maps"], num_stuff=stuff["num_stuff"],
                             num_things=clusters["n_clusters"], max_overlap=ctx.params["max_overlap"])
    note_failures(ctx.generate(step, panoptic_output(root, "train")), "panoptic assembly")
    pan = load_json(panoptic_output(root, "train"), "panoptic pseudo-labels")
    return {"root": str(root), "images": clusters["images"], "num_things": clusters["n_clusters"],
            "num_stuff": stuff["num_stuff"], "num_segments": sum(len(a["segments_info"]) for a in pan["annotations"])}


# ------------------------------------------------------------------ training
def _opt_list(opts: dict | None) -> list[str]:
    """A recipe's ``opts`` mapping as detectron2's ``KEY VALUE`` list (values as Python literals)."""
    return [x for k, v in (opts or {}).items() for x in (str(k), v if isinstance(v, str) else repr(v))]


def _num_gpus(ctx: StageContext) -> int:
    return 0 if ctx.device == "cpu" else (ctx.executor.gpus if ctx.executor.kind == "slurm" else 1)


def _train(ctx: StageContext, config_file: str, opts: list[str]) -> None:
    """One detectron2 training run into the stage folder (resumed from its last checkpoint)."""
    from seg_suite.workflows.self_training import keep_final_checkpoint
    from seg_suite.workflows.training_job import TrainingJob

    slurm = ctx.executor.kind == "slurm"
    job = TrainingJob(config_file, [*opts, "OUTPUT_DIR", str(ctx.folder)], _num_gpus(ctx),
                      str(ctx.output / "train.log"), distributed=slurm)
    job.check()
    ctx.run_single(job, distributed=slurm)
    keep_final_checkpoint(ctx.folder)


def _last_losses(folder: Path) -> dict:
    metrics = folder / "metrics.json"
    if not metrics.is_file():
        return {}
    last = [json.loads(line) for line in metrics.read_text().splitlines() if "total_loss" in line][-1:]
    return {k: v for k, v in (last[0] if last else {}).items() if k in ("iteration", "total_loss")}


def stage_train(ctx: StageContext) -> dict:
    config_file = ctx.params["config"]
    data_name = f"recipe_{ctx.key}"  # unique per configuration: detectron2's catalog is process-wide
    if any(ctx.recipe.data["stages"][n]["kind"] == "panoptic" for n in ctx.records):
        _, pan = ctx.earlier("panoptic")
        categories = _panoptic_categories(data_name, pan["root"])
        data = ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(pan["num_things"] + pan["num_stuff"]),
                "DATASETS.PSEUDO_PANOPTIC", repr([[data_name, pan["root"], "train"]])]
    else:
        _, masks = ctx.earlier("maskcut")
        categories = [{"id": 1, "name": "object", "isthing": 1}]  # class-agnostic: every mask is an "object"
        data = ["DATASETS.PSEUDO_COCO", repr([[data_name, masks["pseudo_masks"], masks["images"]]])]
    opts = ["MODEL.WEIGHTS", ctx.weights_file() or "", "SEED", "0", "MODEL.DEVICE", ctx.device,
            *_opt_list(ctx.params["opts"]), *data, "DATASETS.TRAIN", repr((data_name,)), "DATASETS.TEST", "()"]
    _train(ctx, config_file, opts)
    return {"weights": str(ctx.folder / "model_final.pth"), "config_file": config_file, "opts": opts,
            "dataset": data_name, "categories": categories, "last_losses": _last_losses(ctx.folder)}


def _panoptic_categories(name: str, root: str) -> list[dict]:
    from seg_suite.data.datasets.pseudo_panoptic import register_pseudo_panoptic

    return register_pseudo_panoptic(name, root, "train")


def _self_train_job(trained: dict, masks: dict, p: dict, folder: str, num_gpus: int, log_file: str,
                    prefix: str) -> list[dict]:
    from seg_suite.workflows.self_training import relabel, self_train

    thresholds = list(p["thresholds"])
    start = Path(folder) / "round_0" / "train.json"
    if not start.is_file():
        relabel(trained["config_file"], trained["opts"], trained["weights"], masks["pseudo_masks"], start,
                thresholds[0], p["merge_iou"], name=trained["dataset"], predict_dir=Path(folder) / "round_0" / "predict",
                description="the initial model's", launch={"num_gpus": num_gpus, "log_file": log_file})
    opts = [*trained["opts"], *_opt_list(p["opts"]), "MODEL.WEIGHTS", trained["weights"]]
    return self_train(trained["config_file"], str(start), masks["images"], folder, rounds=p["rounds"],
                      thresholds=thresholds[1:] + thresholds[-1:], resume=True, opts=opts, num_gpus=num_gpus,
                      merge_iou=p["merge_iou"], dataset_prefix=prefix)


def stage_self_train(ctx: StageContext) -> dict:
    """CutLER's self-training: the ``train`` model's confident predictions (score >= the first
    threshold) merged with the MaskCut masks are round 1's labels; each round trains from the previous
    model, then labels the images for the next one."""
    _, trained = ctx.earlier("train")
    _, masks = ctx.earlier("maskcut")
    p = ctx.params
    thresholds = list(p["thresholds"])
    if len(thresholds) != p["rounds"]:
        raise UserError(f"stages.{ctx.name}: {p['rounds']} rounds need {p['rounds']} thresholds, got {thresholds}")
    job = functools.partial(_self_train_job, trained, masks, p, str(ctx.folder), _num_gpus(ctx),
                            str(ctx.output / "train.log"), f"recipe_{ctx.key}")
    rounds = ctx.run_single(job)  # predict, relabel and train rounds together, on one machine
    final = ctx.folder / f"round_{p['rounds']}" / "model_final.pth"
    return {"weights": str(final), "config_file": trained["config_file"], "opts": trained["opts"],
            "categories": trained["categories"],
            "rounds": [{k: r.get(k) for k in ("round", "input_annotations", "annotations", "predictions")}
                       for r in rounds]}


# ------------------------------------------------------------------ evaluation
def _model(ctx: StageContext) -> dict:
    """The record of the last training stage (train or self_train) before this one."""
    trained = [r for n, r in ctx.records.items() if ctx.recipe.data["stages"][n]["kind"] in ("train", "self_train")]
    if not trained:
        raise UserError(f"stage {ctx.name} needs an earlier train stage in the recipe")
    return trained[-1]


def predict_dataset(ctx: StageContext, images: Path, label: str) -> Path:
    """The last trained model's outputs for every image of ``images``, in ``<stage>/predict/<label>``."""
    from seg_suite.workflows.predict import run_prediction

    model = _model(ctx)
    out = ctx.folder / "predict" / label
    step = functools.partial(run_prediction, model["config_file"], model["weights"], str(images), str(out),
                             categories=model["categories"], opts=model["opts"])
    note_failures(ctx.generate(step, out / "predict.json"), f"predict on {label}")
    return out


def stage_evaluate_class_agnostic(ctx: StageContext) -> dict:
    from seg_suite.evaluation.class_agnostic import evaluate_class_agnostic
    from seg_suite.io.coco import read_coco

    ds = ctx.dataset(ctx.evaluation["dataset"])
    pred = predict_dataset(ctx, ds.need("images", "evaluation"), ds.name)
    res = evaluate_class_agnostic(read_coco(pred / "instances.json"),
                                  read_coco(ds.need("annotations", "class-agnostic AP")))
    atomic_write_json(ctx.folder / "results.json", res, indent=1)
    wanted = ctx.evaluation.get("metrics") or list(res)
    return {"protocol": "class_agnostic", "fit": None, "predictions": str(pred),
            "metrics": {k: res[k] for k in wanted if k in res}}


def _num_classes(ds) -> int:
    doc = load_json(ds.panoptic or ds.need("annotations", "the class count"), "ground truth")
    return len(doc["categories"])


def stage_evaluate_unsupervised(ctx: StageContext) -> dict:
    """Instance AP, semantic mIoU and PQ of the last model under the cluster -> class mapping, fitted on
    ``evaluation.fit_dataset`` (a labelled set disjoint from the scored one) or, without one, on a
    held-out half of the scored set's images."""
    from seg_suite.evaluation import unsupervised as U
    from seg_suite.io.coco import read_coco

    ev = ctx.evaluation
    protocol = ev.get("protocol") or "hungarian"
    metrics = ev.get("metrics") or ["instance_AP", "semantic_mIoU", "PQ"]
    scored = ctx.dataset(ev["dataset"])
    pred = predict_dataset(ctx, scored.need("images", "evaluation"), scored.name)
    fit_ds = ctx.dataset(ev["fit_dataset"]) if ev.get("fit_dataset") else None
    if fit_ds is not None:
        fit, fit_pred = U.SeparateSplit(f"dataset {fit_ds.name} (disjoint from the scored {scored.name})"), \
            predict_dataset(ctx, fit_ds.need("images", "fitting the mapping"), f"fit_{fit_ds.name}")
    else:
        fit, fit_pred = U.HeldOut(), None
    n_clusters = sum(r.get("num_things", 0) + r.get("num_stuff", 0) for n, r in ctx.records.items()
                     if ctx.recipe.data["stages"][n]["kind"] == "panoptic") or None
    res, out = {}, {}
    if "instance_AP" in metrics:
        res["instance"] = U.evaluate_instances(
            read_coco(pred / "instances.json"), read_coco(scored.need("annotations", "instance AP")),
            protocol=protocol, fit=fit, fit_pred=fit_pred and read_coco(fit_pred / "instances.json"),
            fit_gt=fit_ds and read_coco(fit_ds.need("annotations", "the instance mapping")))
        out.update(instance_AP=res["instance"]["segm"]["AP"], instance_AP50=res["instance"]["segm"]["AP50"],
                   class_agnostic_AP50=res["instance"]["class_agnostic"]["AP50"])
    if "semantic_mIoU" in metrics:
        res["semantic"] = U.evaluate_semantic(
            pred / "semantic", scored.need("semantic_dir", "semantic mIoU"), num_clusters=n_clusters,
            num_classes=_num_classes(scored), protocol=protocol, fit=fit,
            fit_pred_dir=fit_pred and fit_pred / "semantic",
            fit_gt_dir=fit_ds and fit_ds.need("semantic_dir", "the semantic mapping"))
        out.update(semantic_mIoU=res["semantic"]["mIoU"])
    if "PQ" in metrics:
        res["panoptic"] = U.evaluate_panoptic(
            pred / "panoptic.json", scored.need("panoptic", "PQ"), gt_dir=scored.need("panoptic_dir", "PQ"),
            protocol=protocol, fit=fit, fit_pred_json=fit_pred and fit_pred / "panoptic.json",
            fit_gt_json=fit_ds and fit_ds.need("panoptic", "the panoptic mapping"),
            fit_gt_dir=fit_ds and fit_ds.need("panoptic_dir", "the panoptic mapping"))
        out.update(PQ=res["panoptic"]["All"]["pq"], PQ_things=res["panoptic"]["Things"]["pq"],
                   PQ_stuff=res["panoptic"]["Stuff"]["pq"])
    atomic_write_json(ctx.folder / "results.json", res, indent=1)
    for task, result in res.items():  # one file per task, as `seg-suite evaluate` writes (and `report` reads)
        atomic_write_json(ctx.folder / f"{task}.json", {**result, "task": task}, indent=1)
    fitted = next((r["fit"] for r in res.values() if isinstance(r, dict) and "fit" in r), None)
    return {"protocol": protocol, "fit": fitted, "predictions": str(pred), "metrics": out}


def check_training_configs(recipe) -> None:
    """Build each training stage's config with its overrides now, so that a bad one (a YAML Python
    tag, an unknown key, a value that cannot train) is refused before the first stage runs."""
    import importlib.util

    if importlib.util.find_spec("detectron2") is None:
        return  # the stages before training run without detectron2; training says what is missing
    from seg_suite.engine.api import build_config

    stages = recipe.data["stages"]
    train = [s for s in stages.values() if s["kind"] == "train"]
    for stage in stages.values():
        if stage["kind"] == "train":
            build_config(stage["config"], _opt_list(stage["opts"]), None)
        elif stage["kind"] == "self_train" and train:
            build_config(train[-1]["config"], _opt_list(train[-1]["opts"]) + _opt_list(stage["opts"]), None)


STAGE_FUNCTIONS = {
    "maskcut": stage_maskcut, "cluster": stage_cluster, "stuff": stage_stuff, "panoptic": stage_panoptic,
    "train": stage_train, "self_train": stage_self_train,
    "evaluate_class_agnostic": stage_evaluate_class_agnostic, "evaluate_unsupervised": stage_evaluate_unsupervised,
    **VIDEO_STAGES,
}
