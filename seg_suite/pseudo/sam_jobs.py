"""SAM as dataset jobs of the shared runner (:func:`seg_suite.pseudo.runner.run_job`).

:class:`SamMasksJob`   a folder of images -> COCO instance file of SAM's automatic masks.
:class:`SamRefineJob`  a COCO pseudo-mask file + its image root -> the same file with every
                       mask refined by SAM (or kept), see :mod:`seg_suite.pseudo.sam_refine`.

Both get sharding, ``--resume``, failure reports and progress from the runner. The SAM
model is built lazily in the main process (``heavy_attrs``), so DataLoader workers only read
images. Checkpoints are recorded by file name and SHA-256 in the output's ``info.params``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from seg_suite.errors import UserError
from seg_suite.features.precision import DEFAULT_PRECISION, check_precision_name
from seg_suite.io.coco import images_by_name, read_named_coco
from seg_suite.io.files import file_sha256
from seg_suite.io.images import DEFAULT_MAX_PIXELS, load_image
from seg_suite.io.masks import MaskFormatError, mask_area, mask_to_bbox, mask_to_rle, rle_to_mask
from seg_suite.pseudo.inputs import WorkItem, named_items
from seg_suite.pseudo.jobs import CocoMaskJob, ItemError, Job
from seg_suite.pseudo.model_job import ModelJob
from seg_suite.pseudo.sam import (SAM_TYPES, SamArch, SamGeneratorParams, generate_masks, get_arch, load_sam,
                                  make_generator, resolve_sam_checkpoint)
from seg_suite.pseudo.sam_refine import RefineParams, refine_masks


class _SamModelJob(ModelJob):
    """The SAM model shared by both jobs: resolved, recorded in params, built on first use."""

    def _init_sam(self, sam_type, checkpoint, device, random_init, precision):
        self.arch: SamArch = get_arch(sam_type)
        self.precision = check_precision_name(precision)
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.device = device
        self.random_init = bool(random_init)
        self.model = None
        self._weights_record = None

    def _sam_params(self) -> dict:
        if self._weights_record is None and not self.random_init:
            self.checkpoint = resolve_sam_checkpoint(self.arch, self.checkpoint)  # MissingWeightsError if absent
            self.weights_file_record(self.checkpoint)
        arch = self.arch.name if self.arch.name in SAM_TYPES else self.arch.to_dict()
        return {"type": arch, "weights": "random-init" if self.random_init else self._weights_record,
                "precision": self.precision}

    @staticmethod
    def _arch_from_params(sam: dict) -> SamArch:
        return get_arch(sam["type"]) if isinstance(sam["type"], str) else SamArch.from_dict(sam["type"])

    def _load_model(self):
        if self.model is None:
            self.model = load_sam(self.arch, self.checkpoint, device=self.model_device(), random_init=self.random_init,
                                  precision=self.precision)
        return self.model

    def runtime_info(self) -> dict:
        return {"device": str(self.device), "sam_type": self.arch.name}


# ------------------------------------------------------------------ generation
class SamMasksJob(_SamModelJob, CocoMaskJob):
    """SAM automatic masks for every image (``SamAutomaticMaskGenerator``), as COCO RLE.

    Each annotation's ``score`` is SAM's predicted IoU clipped to [0, 1]; the raw
    ``predicted_iou`` and the ``stability_score`` are kept beside it. Masks are ordered by
    predicted IoU. Args as :func:`seg_suite.pseudo.sam.load_sam` (``precision`` is the image
    encoder's, recorded in ``params``); ``points_per_batch`` trades memory for speed only.
    """

    name = "sam-masks"
    heavy_attrs = ("model", "generator")

    def __init__(self, params: SamGeneratorParams | None = None, sam_type: str | SamArch = "vit_b",
                 checkpoint: str | os.PathLike | None = None, device: str = "cpu", random_init: bool = False,
                 max_pixels: int = DEFAULT_MAX_PIXELS, points_per_batch: int = 64,
                 precision: str = DEFAULT_PRECISION):
        self.generator_params = params or SamGeneratorParams()
        self.generator_params.validate()
        self.max_pixels = int(max_pixels)
        self.points_per_batch = int(points_per_batch)
        self.generator = None
        self._init_sam(sam_type, checkpoint, device, random_init, precision)

    def load(self) -> "SamMasksJob":
        """Build the model now, so a missing or wrong checkpoint fails before any work."""
        if self.generator is None:
            self.generator = make_generator(self._load_model(), self.generator_params, self.points_per_batch)
        return self

    def params(self) -> dict:
        return {"sam": self._sam_params(), "generator": self.generator_params.to_dict(), "max_pixels": self.max_pixels}

    @classmethod
    def from_params(cls, params: dict) -> "SamMasksJob":
        """A job for ``finalize`` only (merge); it never loads a model."""
        job = cls(SamGeneratorParams(**params["generator"]), sam_type=cls._arch_from_params(params["sam"]),
                  random_init=params["sam"]["weights"] == "random-init", max_pixels=params["max_pixels"],
                  precision=params["sam"].get("precision", DEFAULT_PRECISION))
        job.restore_weights_record(params["sam"]["weights"])
        return job

    def prepare(self, item: WorkItem):
        return item.key, load_image(item.path, max_pixels=self.max_pixels)

    def process(self, batch):
        self.load()
        records = []
        for key, image in batch:
            h, w = image.shape[:2]
            anns = []
            for m in generate_masks(self.generator, image):
                ann = self.mask_annotation(m.mask, m.score)
                ann.update(predicted_iou=m.predicted_iou, stability_score=m.stability_score)
                anns.append(ann)
            records.append({"images": [{"file_name": key, "width": w, "height": h}], "annotations": [anns]})
        return records


# ------------------------------------------------------------------ refinement
class SamRefineJob(_SamModelJob, Job):
    """Refine every mask of a COCO pseudo-label file with SAM (one item = one image).

    The output keeps the input's images, categories and annotation ids and every field, and
    per annotation: ``segmentation`` (RLE of the mask kept), ``area``/``bbox`` recomputed,
    ``refined_by`` ("sam" or "coarse"), ``refine_iou`` (IoU of SAM's best candidate with the
    coarse mask; null for an empty coarse mask) and ``sam_score`` (SAM's predicted IoU of it).
    Images whose file cannot be read, or whose size differs from their masks', are failures
    (as they could not be trained on either); their annotations are left out. An image entry
    with width and height swapped (CutLER's maskcut.py writes them so) is written with the
    true size.
    """

    name = "sam-refine"
    heavy_attrs = ("model", "predictor", "coco_index")

    def __init__(self, input_json: str | os.PathLike | None, params: RefineParams | None = None,
                 sam_type: str | SamArch = "vit_b", checkpoint: str | os.PathLike | None = None,
                 device: str = "cpu", random_init: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
                 prompts_per_batch: int = 64, precision: str = DEFAULT_PRECISION):
        self.refine_params = params or RefineParams()
        self.refine_params.validate()
        self.max_pixels = int(max_pixels)
        self.prompts_per_batch = int(prompts_per_batch)
        self.predictor = None
        self.coco_index: dict[str, tuple[dict, list[dict]]] | None = None
        self.categories: list[dict] = [{"id": 1, "name": "object"}]
        self.input_record = None
        if input_json is not None:
            self._index(Path(input_json))
        self._init_sam(sam_type, checkpoint, device, random_init, precision)

    def _index(self, path: Path) -> None:
        coco = read_named_coco(path, "input file")
        self.coco_index = images_by_name(coco)
        self.categories = coco.get("categories") or self.categories
        self.input_record = {"file": path.name, "sha256": file_sha256(path)}

    def items(self, image_root: str | os.PathLike) -> list[WorkItem]:
        """One work item per image of the input file; key = its ``file_name``, path under ``image_root``
        (a name that leaves the root fails its item, :func:`seg_suite.pseudo.inputs.named_items`)."""
        if not self.coco_index:
            raise UserError("the input file lists no images")
        return named_items(self.coco_index, image_root)

    def load(self) -> "SamRefineJob":
        if self.predictor is None:
            from segment_anything import SamPredictor

            self.predictor = SamPredictor(self._load_model())
        return self

    def params(self) -> dict:
        return {"input": self.input_record, "categories": self.categories, "sam": self._sam_params(),
                "refine": self.refine_params.to_dict(), "max_pixels": self.max_pixels}

    @classmethod
    def from_params(cls, params: dict) -> "SamRefineJob":
        job = cls(None, RefineParams(**params["refine"]), sam_type=cls._arch_from_params(params["sam"]),
                  random_init=params["sam"]["weights"] == "random-init", max_pixels=params["max_pixels"],
                  precision=params["sam"].get("precision", DEFAULT_PRECISION))
        job.categories, job.input_record = params["categories"], params["input"]
        job.restore_weights_record(params["sam"]["weights"])
        return job

    def prepare(self, item: WorkItem):
        return item.key, load_image(item.path, max_pixels=self.max_pixels)

    def _coarse_masks(self, key: str, image: np.ndarray, anns: list[dict]) -> list[np.ndarray]:
        h, w = image.shape[:2]
        masks = []
        for ann in anns:
            seg = ann["segmentation"]
            size = seg.get("size") if isinstance(seg, dict) else None
            if isinstance(size, list) and len(size) == 2 and size != [h, w]:
                raise ItemError(f"annotation {ann.get('id')} of {key}: mask is {size[1]}x{size[0]} "
                                f"but the image is {w}x{h} (wrong --images root or file?)")
            try:  # checked against the image before anything is decoded
                masks.append(rle_to_mask(seg, h, w))
            except MaskFormatError as err:
                raise ItemError(f"annotation {ann.get('id')} of {key}: unreadable segmentation ({err})") from None
        return masks

    def process(self, batch):
        self.load()
        records = []
        for key, image in batch:
            entry, anns = self.coco_index[key]
            h, w = image.shape[:2]
            results = refine_masks(self.predictor, image, self._coarse_masks(key, image, anns), self.refine_params,
                                   prompts_per_batch=self.prompts_per_batch)
            out_anns = []
            for ann, res in zip(anns, results, strict=True):
                out_anns.append({**ann, "segmentation": mask_to_rle(res.mask), "area": mask_area(res.mask),
                                 "bbox": mask_to_bbox(res.mask), "refined_by": res.refined_by,
                                 "refine_iou": res.refine_iou, "sam_score": res.sam_score})
            records.append({"image": {**entry, "width": w, "height": h}, "annotations": out_anns})
        return records

    def finalize(self, records: list[dict], info: Any) -> dict:
        images = [r["image"] for r in records]
        annotations = [ann for r in records for ann in r["annotations"]]
        kept = sum(a["refined_by"] == "sam" for a in annotations)
        info = {**info, "refined": {"sam": kept, "coarse": len(annotations) - kept}}
        return {"info": info, "images": images, "annotations": annotations, "categories": self.categories}
