"""Run a trained MaskFormer-style model over a folder of images and write its outputs as files.

    predictor = PanopticPredictor(cfg, "train/model_final.pth")
    predict_folder(predictor, "images/val", "predict/val", categories)

runs :class:`PredictJob` through the dataset runner (:func:`seg_suite.pseudo.runner.run_job`), so
prediction shards and resumes like every generator; it writes, for every image (named by its path
relative to the folder, with ``.png``):

- ``panoptic/<name>.png`` + ``panoptic.json``: COCO panoptic (RGB ids, ``segments_info`` with the
  dataset's category ids and ``isthing``), the format ``seg-suite evaluate --task panoptic`` reads;
- ``semantic/<name>.png``: uint8 argmax of the per-class scores (contiguous class index);
- ``instances.json``: COCO instances (RLE, bbox, area, score; category ids of the dataset);
- ``predict.json``: the run's record (parameters, versions, input digest; the runner's ``info``)
  and its counts, beside the runner's journal, failures and log files of that name.

Images are numbered 1, 2, ... in the order of their paths; an image listed outside the folder (a
path that would write outside ``out_dir``) is recorded as a failure.

Test-time input as detectron2's test loader builds it (``ResizeShortestEdge(MIN_SIZE_TEST,
MAX_SIZE_TEST)``, ``INPUT.FORMAT``); outputs come back at the image's own size. Needs detectron2.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from seg_suite.errors import MissingWeightsError
from seg_suite.io.files import atomic_write_json, atomic_write_png, load_json, png_name
from seg_suite.io.images import load_image
from seg_suite.io.masks import mask_to_bbox, mask_to_rle
from seg_suite.io.panoptic import id_to_rgb
from seg_suite.io.paths import PathEscapeError, output_path_under
from seg_suite.pseudo.inputs import WorkItem, discover_inputs
from seg_suite.pseudo.jobs import ItemError, Job
from seg_suite.pseudo.runner import RunSummary, run_job

RECORD = "predict.json"  # the runner's output in out_dir: info and counts


class PanopticPredictor:
    """``cfg`` (frozen, with TEST.PANOPTIC_ON / SEMANTIC_ON / INSTANCE_ON as wanted) + a checkpoint ->
    callable on one HxWx3 uint8 RGB image, returning the model's output dict for it."""

    def __init__(self, cfg, weights: str | os.PathLike):
        from detectron2.data import transforms as T

        from seg_suite.engine.trainer import Trainer
        from seg_suite.modeling import MaskFormerCheckpointer

        if not Path(weights).is_file():
            raise MissingWeightsError(f"model checkpoint not found: {weights} (train the model first)")
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
