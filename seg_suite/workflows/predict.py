"""Run a trained MaskFormer-style model over a folder of images and write its outputs as files.

    written = predict_images("configs/x.yaml", "train/model_final.pth", "images/val", "predict/val")
    written["instances_json"], written["panoptic_json"], written["semantic_dir"]

builds the model of a config (:class:`PanopticPredictor`), takes its categories from ``--categories``
or the config's training set (:func:`model_categories`) and runs :class:`PredictJob` through the
dataset runner (:func:`seg_suite.pseudo.runner.run_job`), so prediction shards and resumes like
every generator (``predict_folder`` does the same for a predictor already built). A sharded run is
joined by :func:`merge_prediction_shards`. For every image (named by its path relative to the input
root, with ``.png``) it writes:

- ``panoptic/<name>.png`` + ``panoptic.json``: COCO panoptic (RGB ids, ``segments_info`` with the
  dataset's category ids and ``isthing``), the format ``seg-suite evaluate --task panoptic`` reads;
- ``semantic/<name>.png``: uint8 argmax of the per-class scores (contiguous class index);
- ``instances.json``: COCO instances (RLE, bbox, area, score; category ids of the dataset);
- ``predict.json``: the run's record (parameters, versions, input digest; the runner's ``info``)
  and its counts, beside the runner's journal, failures and log files of that name.

What a model does not output is not written: a semantic-only model writes no panoptic files and
an ``instances.json`` without annotations; an instance-only model no PNGs.

Images are numbered 1, 2, ... in the order of their paths; an image listed outside the folder (a
path that would write outside ``out_dir``) is recorded as a failure.

Test-time input as detectron2's test loader builds it (``ResizeShortestEdge(MIN_SIZE_TEST,
MAX_SIZE_TEST)``, ``INPUT.FORMAT``); outputs come back at the image's own size. Needs detectron2.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from seg_suite.errors import MissingWeightsError, UserError
from seg_suite.io.files import atomic_write_json, atomic_write_png, check_writable_dir, load_json, png_name
from seg_suite.io.images import load_image
from seg_suite.io.masks import mask_to_bbox, mask_to_rle
from seg_suite.io.panoptic import id_to_rgb
from seg_suite.io.paths import PathEscapeError, output_path_under
from seg_suite.pseudo.inputs import WorkItem, discover_inputs
from seg_suite.pseudo.jobs import ItemError, Job
from seg_suite.pseudo.runner import RunSummary, merge_outputs, run_job
from seg_suite.pseudo.shards import ShardSpec, shard_output_path

RECORD = "predict.json"  # the runner's output in out_dir: info and counts


class PanopticPredictor:
    """``cfg`` (frozen, with TEST.PANOPTIC_ON / SEMANTIC_ON / INSTANCE_ON as wanted) + a checkpoint ->
    callable on one HxWx3 uint8 RGB image, returning the model's output dict for it."""

    def __init__(self, cfg, weights: str | os.PathLike):
        from detectron2.data import transforms as T

        from seg_suite.engine.trainer import Trainer
        from seg_suite.modeling import MaskFormerCheckpointer

        check_weights_file(weights)
        self.weights = str(weights)
        self.config_sha256 = hashlib.sha256(cfg.dump().encode()).hexdigest()
        self.model = Trainer.build_model(cfg).eval()
        MaskFormerCheckpointer(self.model).load(str(weights))
        self.resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.bgr = cfg.INPUT.FORMAT == "BGR"

    def describe(self) -> dict:
        """What its outputs depend on: the checkpoint and the SHA-256 of the config."""
        return {"weights": self.weights, "config_sha256": self.config_sha256}

    @torch.inference_mode()
    def __call__(self, image: np.ndarray) -> dict:
        """image: [H, W, 3] uint8 RGB -> {"sem_seg": [C, H, W], "panoptic_seg": (ids [H, W], segments),
        "instances": Instances} (whichever outputs the config turns on)."""
        h, w = image.shape[:2]
        x = image[:, :, ::-1] if self.bgr else image
        x = self.resize.get_transform(x).apply_image(np.ascontiguousarray(x))
        tensor = torch.as_tensor(np.ascontiguousarray(x.transpose(2, 0, 1)))
        return self.model([{"image": tensor, "height": h, "width": w}])[0]


class PredictJob(Job):
    """The model of a :class:`PanopticPredictor` over a dataset, as a job of the one runner.

    ``process`` writes each image's PNGs under ``out_dir`` and returns its JSON entries;
    ``finalize`` numbers the images in key order and assembles ``panoptic.json`` and
    ``instances.json``, which ``write_output`` writes beside the run's record.
    """

    name = "predict"
    heavy_attrs = ("predictor",)

    def __init__(self, out_dir, categories: list[dict], predictor: PanopticPredictor | None = None,
                 model: dict | None = None):
        self.out_dir = Path(out_dir)
        self.categories = [dict(c) for c in categories]
        self.predictor = predictor
        # What the predictions depend on, recorded: the checkpoint and the config's digest.
        self.model = model if model is not None else (predictor.describe() if predictor is not None else {})

    def params(self) -> dict:
        return {"model": self.model, "categories": self.categories, "out_dir": str(self.out_dir)}

    @classmethod
    def from_params(cls, params: dict) -> "PredictJob":
        """A job for ``finalize`` only (merge); it holds no model."""
        return cls(params["out_dir"], params["categories"], model=params["model"])

    def output_folders(self, items: list[WorkItem]) -> list[Path]:
        return [self.out_dir]

    def prepare(self, item: WorkItem):
        name = png_name(item.key)
        try:  # a listed image outside the list's folder would write outside out_dir
            paths = tuple(output_path_under(self.out_dir / kind, name) for kind in ("semantic", "panoptic"))
        except PathEscapeError as err:
            raise ItemError(str(err)) from None
        return item.key, name, paths, load_image(item.path)

    def process(self, batch: list) -> list[dict]:
        if self.predictor is None:
            raise RuntimeError("PredictJob.process needs the job built with its predictor")
        return [self._predict_one(*value) for value in batch]

    def _predict_one(self, key: str, name: str, paths: tuple[Path, Path], image: np.ndarray) -> dict:
        sem_path, pan_path = paths
        ids = [c["id"] for c in self.categories]
        h, w = image.shape[:2]
        res = self.predictor(image)
        record = {"image": {"file_name": key, "height": h, "width": w}, "panoptic": None, "instances": []}
        if "sem_seg" in res:
            # 8-bit maps up to 255 classes, 16-bit beyond (U2Seg's 300 + 27), as seg-suite panoptic writes them
            dtype = torch.uint8 if res["sem_seg"].shape[0] <= 255 else torch.int32
            sem = res["sem_seg"].argmax(0).to(dtype).cpu().numpy()
            atomic_write_png(sem_path, sem if dtype == torch.uint8 else sem.astype(np.uint16))
        if "panoptic_seg" in res:
            pan, segments = res["panoptic_seg"]
            pan = pan.cpu().numpy().astype(np.uint32)
            infos = []
            for s in segments:
                mask = pan == s["id"]
                if mask.any():
                    infos.append({"id": int(s["id"]), "category_id": ids[s["category_id"]], "isthing": int(s["isthing"]),
                                  "iscrowd": 0, "area": int(mask.sum()), "bbox": mask_to_bbox(mask)})
            atomic_write_png(pan_path, id_to_rgb(pan))
            record["panoptic"] = {"file_name": name, "segments_info": infos}
        if "instances" in res:
            inst = res["instances"].to("cpu")
            for mask, score, cls in zip(inst.pred_masks.numpy() > 0, inst.scores.tolist(), inst.pred_classes.tolist()):
                if mask.any():
                    record["instances"].append({"category_id": ids[cls], "segmentation": mask_to_rle(mask),
                                                "bbox": mask_to_bbox(mask), "area": int(mask.sum()),
                                                "score": float(score), "iscrowd": 0})
        return record

    def finalize(self, records: list[dict], info: dict) -> dict:
        images, pan_anns, inst_anns = [], [], []
        for image_id, record in enumerate(records, start=1):
            images.append({"id": image_id, **record["image"]})
            if record["panoptic"] is not None:
                pan_anns.append({"image_id": image_id, **record["panoptic"]})
            for ann in record["instances"]:
                inst_anns.append({"id": len(inst_anns) + 1, "image_id": image_id, **ann})
        counts = {"images": len(images), "segments": sum(len(a["segments_info"]) for a in pan_anns),
                  "instances": len(inst_anns)}
        panoptic = {"images": images, "annotations": pan_anns, "categories": self.categories} if pan_anns else None
        instances = {"images": images, "annotations": inst_anns,
                     "categories": [c for c in self.categories if c.get("isthing", 1)]}
        return {"info": info, "counts": counts, "panoptic": panoptic, "instances": instances}

    def write_output(self, path: Path, final: dict) -> None:
        if final["panoptic"] is not None:
            atomic_write_json(self.out_dir / "panoptic.json", final["panoptic"])
        atomic_write_json(self.out_dir / "instances.json", final["instances"])
        atomic_write_json(path, {"info": final["info"], "counts": final["counts"]}, indent=1)


def predict_folder(predictor: PanopticPredictor, image_dir, out_dir, categories: list[dict],
                   progress: bool = True, **run_options) -> dict:
    """Predict every image under ``image_dir`` and write the files of the module docstring to ``out_dir``.

    ``categories``: the training dataset's categories in contiguous order (contiguous class i is
    ``categories[i]``; its ``id`` is written). ``run_options``: those of
    :func:`~seg_suite.pseudo.runner.run_job` (``shard``, ``resume``, ``batch_size``...); without
    ``resume`` an existing record is refused. Returns counts of what was written.
    """
    out = Path(out_dir)
    job = PredictJob(out, categories, predictor)
    summary = run_job(job, discover_inputs(image_dir), out / RECORD, progress=progress, **run_options)
    return predict_counts(summary)


def predict_counts(summary: RunSummary) -> dict:
    """The counts recorded by a finished prediction run ({} for a shard of a sharded one)."""
    if summary.output.name != RECORD:
        return {}
    return dict(load_json(summary.output, "prediction record")["counts"])


def check_weights_file(weights) -> None:
    """A one-line :class:`MissingWeightsError` when the checkpoint ``weights`` is not a file."""
    if not Path(weights).is_file():
        raise MissingWeightsError(f"model checkpoint not found: {weights} (train the model first, or give "
                                  f"the path of its model_final.pth)")


def load_categories(path) -> list[dict]:
    """The ``categories`` of a COCO file (instances or panoptic), in the file's order: the model's
    contiguous class ``i`` is entry ``i``. ``isthing`` defaults to 1 (an instance file has none)."""
    data = load_json(path, "categories file")
    categories = data.get("categories") if isinstance(data, dict) else None
    if not isinstance(categories, list) or not categories:
        raise UserError(f"{path}: expected a COCO file with a non-empty 'categories' list")
    return [_checked_category(c, str(path)) for c in categories]


def _checked_category(c, source: str) -> dict:
    if not (isinstance(c, dict) and isinstance(c.get("id"), int) and isinstance(c.get("name", ""), str)
            and c.get("isthing", 1) in (0, 1)):
        raise UserError(f"{source}: every category needs an integer 'id' (a 'name', and 'isthing' 0 or 1 if "
                        f"given); found {c!r:.120}")
    return {"id": c["id"], "name": c.get("name", str(c["id"])), "isthing": int(c.get("isthing", 1))}


def metadata_categories(meta) -> list[dict]:
    """Categories in contiguous order from a detectron2 ``Metadata`` (empty when it names none).

    Panoptic metadata (:func:`seg_suite.data.datasets.coco_panoptic.panoptic_metadata`, Mask2Former's
    rule) numbers all categories in ``stuff_dataset_id_to_contiguous_id`` and marks things by
    ``thing_dataset_id_to_contiguous_id``; instance metadata has the things only; semantic metadata
    has ``stuff_classes`` only, whose dataset ids are the contiguous ones (the values of its PNGs).
    """
    things = dict(getattr(meta, "thing_dataset_id_to_contiguous_id", None) or {})
    every = dict(getattr(meta, "stuff_dataset_id_to_contiguous_id", None) or {})
    if every:
        names = list(getattr(meta, "stuff_classes", None) or [])
        by_index = {v: k for k, v in every.items()}
        return [{"id": int(by_index[i]), "name": names[i] if i < len(names) else str(by_index[i]),
                 "isthing": int(by_index[i] in things)} for i in sorted(by_index)]
    if things:
        names = list(getattr(meta, "thing_classes", None) or [])
        by_index = {v: k for k, v in things.items()}
        return [{"id": int(by_index[i]), "name": names[i] if i < len(names) else str(by_index[i]), "isthing": 1}
                for i in sorted(by_index)]
    return [{"id": i, "name": name, "isthing": 0} for i, name in enumerate(getattr(meta, "stuff_classes", None) or [])]


def model_categories(cfg, categories=None) -> list[dict]:
    """The categories of the model of ``cfg``, in its contiguous class order.

    ``categories``: a list of category dicts, or the path of a COCO file whose ``categories`` give
    the order (:func:`load_categories`); None takes them from the metadata of the config's first
    training set (``DATASETS.TRAIN[0]``, registered as training registers it). Their number must be
    the model's ``MODEL.SEM_SEG_HEAD.NUM_CLASSES``. One-line UserError when neither is available.
    """
    if categories is None:
        categories, source = _training_set_categories(cfg), f"dataset {cfg.DATASETS.TRAIN[0]!r}"
    elif isinstance(categories, (str, os.PathLike)):
        categories, source = load_categories(categories), str(categories)
    else:
        categories, source = [_checked_category(c, "categories") for c in categories], "the categories given"
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    if len(categories) != num_classes:
        raise UserError(f"{source} has {len(categories)} categories but the model has {num_classes} classes "
                        f"(MODEL.SEM_SEG_HEAD.NUM_CLASSES); give the categories of the model's training set")
    return categories


def _training_set_categories(cfg) -> list[dict]:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from seg_suite.engine.launch import register_datasets

    if not cfg.DATASETS.TRAIN:
        raise UserError("the config names no training set (DATASETS.TRAIN) to take the categories from; "
                        "give them with --categories COCO.json")
    name = cfg.DATASETS.TRAIN[0]
    try:
        register_datasets(cfg)
    except UserError as err:
        raise UserError(f"{err} (needed for the categories of {name!r}; or give them with --categories COCO.json)") \
            from None
    found = metadata_categories(MetadataCatalog.get(name)) if name in DatasetCatalog.list() else []
    if not found:
        raise UserError(f"the categories of the training set {name!r} are unknown here (it is not registered, or "
                        f"its metadata lists no classes); give them with --categories COCO.json (its "
                        f"'categories' in the model's class order)")
    return found


def predict_images(config_file, weights, inputs, out_dir, *, categories=None, opts: Sequence[str] = (),
                   device: str | None = None, max_images: int | None = None, progress: bool = True,
                   **run_options) -> dict:
    """Run the model of ``config_file`` + ``weights`` on ``inputs`` and write the files of the module
    docstring to ``out_dir``; returns :func:`prediction_files` of the run.

    ``inputs``: a folder, a glob, a ``.txt`` list (:func:`seg_suite.pseudo.inputs.discover_inputs`) or
    a list of work items; ``max_images``: only the first N in sorted order. ``categories``: see
    :func:`model_categories`. ``opts``: ``KEY VALUE`` config overrides; ``device`` sets
    ``MODEL.DEVICE``. ``run_options``: those of :func:`~seg_suite.pseudo.runner.run_job` (``shard``,
    ``resume``, ``overwrite``, ``batch_size``, ``workers``...). Inputs, weights, config, categories
    and the output folder are checked before the model is built.
    """
    summary = run_prediction(config_file, weights, inputs, out_dir, categories=categories, opts=opts, device=device,
                             max_images=max_images, progress=progress, **run_options)
    return prediction_files(out_dir, summary)


def run_prediction(config_file, weights, inputs, out_dir, *, categories=None, opts: Sequence[str] = (),
                   device: str | None = None, max_images: int | None = None, progress: bool = True,
                   **run_options) -> RunSummary:
    """:func:`predict_images`, returning the runner's :class:`~seg_suite.pseudo.runner.RunSummary`."""
    from seg_suite.engine.launch import build_config

    items = discover_inputs(inputs) if isinstance(inputs, (str, os.PathLike)) else sorted(inputs)
    if max_images is not None:
        if max_images < 1:
            raise UserError(f"--max-images must be at least 1, got {max_images}")
        items = items[:max_images]
    check_weights_file(weights)
    opts = [str(x) for x in opts] + (["MODEL.DEVICE", device] if device else [])
    cfg = build_config(str(config_file), opts, None)
    test = cfg.MODEL.MASK_FORMER.TEST
    if not (test.PANOPTIC_ON or test.INSTANCE_ON or test.SEMANTIC_ON):
        raise UserError("the config turns every output off (MODEL.MASK_FORMER.TEST.PANOPTIC_ON, INSTANCE_ON and "
                        "SEMANTIC_ON are all False); turn on the ones to write")
    cats = model_categories(cfg, categories)
    out = check_writable_dir(out_dir)
    job = PredictJob(out, cats, PanopticPredictor(cfg, weights))
    return run_job(job, items, out / RECORD, progress=progress, **run_options)


def prediction_files(out_dir, summary: RunSummary | None = None) -> dict:
    """What a prediction run in ``out_dir`` wrote: its counts (:func:`predict_counts`; none for one
    shard of a sharded run), ``complete`` (the outputs are assembled), the ``record`` file and the
    paths ``instances_json``, ``panoptic_json``, ``panoptic_dir``, ``semantic_dir`` (None for an
    output the model does not make). ``summary`` None: the finished record in ``out_dir``."""
    out = Path(out_dir)
    record = summary.output if summary is not None else out / RECORD
    complete = record == out / RECORD and record.is_file()
    counts = predict_counts(summary) if summary is not None else (
        dict(load_json(record, "prediction record")["counts"]) if complete else {})

    def present(path: Path, is_dir: bool = False):
        return str(path) if complete and (path.is_dir() if is_dir else path.is_file()) else None

    return {**counts, "complete": complete, "record": str(record),
            "instances_json": present(out / "instances.json"), "panoptic_json": present(out / "panoptic.json"),
            "panoptic_dir": present(out / "panoptic", True), "semantic_dir": present(out / "semantic", True)}


def merge_prediction_shards(out_dir, num_shards: int) -> dict:
    """Join the ``num_shards`` shard records of a sharded prediction run in ``out_dir`` into its
    outputs (:func:`~seg_suite.pseudo.runner.merge_outputs`); returns :func:`prediction_files`.
    A run already joined is left as it is."""
    out = Path(out_dir)
    if not (out / RECORD).is_file():
        paths = [shard_output_path(out / RECORD, ShardSpec(num_shards, i)) for i in range(num_shards)]
        merge_outputs(paths, out / RECORD)
    return prediction_files(out)
