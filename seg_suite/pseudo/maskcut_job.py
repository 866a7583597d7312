"""MaskCut as a dataset job: one COCO pseudo-mask file for a folder of images.

``prepare`` (DataLoader workers) reads each image with :func:`seg_suite.io.images.load_image`
(EXIF orientation, any mode or bit depth, a pixel limit against huge files) and refuses
images smaller than one patch; ``process`` runs :func:`seg_suite.pseudo.maskcut.maskcut_batch`
on the device. The output follows CutLER's pseudo-label files (``maskcut/maskcut.py``): one
category, RLE masks with bbox, area, score and ``iscrowd`` 0, except that ``images[]`` hold
the TRUE ``width``/``height`` (the reference swaps them) and ``file_name`` is relative to the
input root, for flat and nested folders alike.
"""

from __future__ import annotations

import os

from seg_suite.features.backbones import DEFAULT_BACKBONE  # dino_vitb8, as CutLER runs MaskCut
from seg_suite.features.precision import DEFAULT_PRECISION
from seg_suite.io.images import DEFAULT_MAX_PIXELS, load_image
from seg_suite.pseudo.inputs import WorkItem
from seg_suite.pseudo.feature_job import BackboneJob
from seg_suite.pseudo.jobs import CocoMaskJob, ItemError
from seg_suite.pseudo.maskcut import MaskCutParams, maskcut_batch


class MaskCutJob(BackboneJob, CocoMaskJob):
    """MaskCut pseudo-masks for every image, through :func:`seg_suite.pseudo.runner.run_job`.

    Args:
        params: the MaskCut settings (CutLER defaults).
        backbone: a ``seg_suite.features`` backbone name, or ``handcrafted`` (no weights).
        weights: local checkpoint; None lets ``seg_suite.features`` find it (or fail clearly).
        device: ``cpu`` or ``cuda``; an execution setting, not recorded in the output.
        max_pixels: images above this many pixels are refused (recorded as failures).
        random_init: random backbone weights (timing and tests only: masks are meaningless).
        precision: fp32 (default, the reference), bf16 or fp16 for the backbone forward only; the cuts
            run on float32 features (see :mod:`seg_suite.features.precision`).
    """

    name = "maskcut"

    def __init__(self, params: MaskCutParams | None = None, backbone: str = DEFAULT_BACKBONE,
                 weights: str | os.PathLike | None = None, device: str = "cpu",
                 max_pixels: int = DEFAULT_MAX_PIXELS, random_init: bool = False, precision: str = DEFAULT_PRECISION):
        super().__init__(backbone, weights=weights, device=device, random_init=random_init, max_pixels=max_pixels,
                         precision=precision)
        self.maskcut_params = params or MaskCutParams()

    def params(self) -> dict:
        return {
            **self.backbone_params(),
            "maskcut": self.maskcut_params.to_dict(),
            "max_pixels": self.max_pixels,
        }

    @classmethod
    def from_params(cls, params: dict) -> "MaskCutJob":
        """A job for ``finalize`` only (merge); it never loads a model."""
        job = cls(MaskCutParams(**params["maskcut"]), backbone=params["backbone"],
                  max_pixels=params["max_pixels"], random_init=params["weights"] == "random-init",
                  precision=params.get("precision", DEFAULT_PRECISION))
        job._weights_record = params["weights"] if isinstance(params["weights"], dict) else None
        return job

    # ------------------------------------------------------------ work
    def prepare(self, item: WorkItem):
        image = load_image(item.path, max_pixels=self.max_pixels)
        h, w = image.shape[:2]
        if h < self.patch_size or w < self.patch_size:
            raise ItemError(f"image smaller than one patch ({self.patch_size}x{self.patch_size}): "
                            f"{w}x{h} pixels: {item.path}")
        return item.key, image

    def process(self, batch):
        self.load()
        results = maskcut_batch([image for _, image in batch], self.extractor, self.maskcut_params)
        records = []
        for (key, image), masks in zip(batch, results, strict=True):
            h, w = image.shape[:2]
            anns = [self.mask_annotation(m.mask, m.score) for m in masks]
            records.append({"images": [{"file_name": key, "width": w, "height": h}], "annotations": [anns]})
        return records
