"""The shared part of the jobs that run a feature backbone over images (mask features, stuff maps).

:class:`BackboneJob` resolves and records the backbone's checkpoint and builds the extractor in
the main process only. Jobs that keep per-image feature rows save them under ``<stem>.parts/``
(:func:`save_part`, one file per image named by :func:`part_name`) as they are made; the final
write (:func:`write_feature_parts`) assembles them into ONE memory-mapped ``<stem>.npy`` [N, D]
float32 beside the runner's index ``<stem>.json``, so RAM stays bounded by one image's rows.

This module is runner infrastructure, not a generator: the generators built on it
(:mod:`seg_suite.pseudo.maskcut_job`, :mod:`seg_suite.pseudo.cluster`, :mod:`seg_suite.pseudo.semantic`)
import it, never each other.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from seg_suite.errors import UserError
from seg_suite.features.precision import DEFAULT_PRECISION, check_precision_name
from seg_suite.io.files import atomic_write_json, atomic_write_npy
from seg_suite.io.images import DEFAULT_MAX_PIXELS
from seg_suite.pseudo.model_job import ModelJob


class BackboneJob(ModelJob):
    """Shared set-up of the jobs that run a feature backbone over images (MaskCut, clustering, stuff maps).

    Records the backbone, the checkpoint's file name and SHA-256, and the precision of the forward
    for ``params`` (:meth:`backbone_params`), and builds the extractor lazily in the main process only.
    ``precision`` (fp32, bf16, fp16; :mod:`seg_suite.features.precision`) is checked against the
    hardware when the extractor is built, so a job rebuilt from params for a merge needs none.
    """

    heavy_attrs = ("extractor",)

    def __init__(self, backbone: str, weights=None, device: str = "cpu", random_init: bool = False,
                 max_pixels: int = DEFAULT_MAX_PIXELS, precision: str = DEFAULT_PRECISION):
        from seg_suite.features.factory import backbone_patch_size

        self.backbone = backbone
        self.weights = None if weights is None else Path(weights)
        self.device = device
        self.random_init = random_init
        self.max_pixels = int(max_pixels)
        self.precision = check_precision_name(precision)
        self.patch_size = backbone_patch_size(backbone)
        self.extractor = None
        self._weights_record = None

    def _resolve_weights(self) -> None:
        from seg_suite.features import BACKBONES
        from seg_suite.features.weights import resolve_weights

        if self.weights is None and self.backbone in BACKBONES and not self.random_init:
            self.weights = resolve_weights(BACKBONES[self.backbone])  # MissingWeightsError if absent

    def weights_record(self):
        from seg_suite.features import HANDCRAFTED

        if self.random_init:
            return "random-init"
        if self.backbone == HANDCRAFTED:
            return None
        if self._weights_record is None:
            self._resolve_weights()
        return self.weights_file_record(self.weights)

    def backbone_params(self) -> dict:
        """The part of ``params`` that says which features were computed: backbone, weights, precision."""
        return {"backbone": self.backbone, "weights": self.weights_record(), "precision": self.precision}

    def load(self):
        """Build the extractor now, so a missing checkpoint fails before any work."""
        if self.extractor is None:
            from seg_suite.features import build_extractor

            self._resolve_weights()
            self.extractor = build_extractor(self.backbone, weights=self.weights, device=self.device,
                                             random_init=self.random_init, precision=self.precision)
        return self

    def runtime_info(self) -> dict:
        return {"device": str(self.device), "backbone": self.backbone}

    def features(self, images, facet: str):
        """uint8 [B,3,H,W] tensor -> float32 facet features on the extractor's device (no grad)."""
        import torch

        with torch.inference_mode():
            x = self.extractor.normalize(images.to(self.extractor.device))
            return self.extractor(x, facets=(facet,))[facet]


def resize_to_grid(image: np.ndarray, longer_side: int, patch: int):
    """HxWx3 uint8 -> uint8 [1,3,h,w] tensor, longer side ~``longer_side``, sides multiples of ``patch``."""
    import torch
    import torch.nn.functional as F

    h, w = image.shape[:2]
    scale = longer_side / max(h, w)
    th = max(patch, int(round(h * scale / patch)) * patch)
    tw = max(patch, int(round(w * scale / patch)) * patch)
    x = torch.tensor(image).permute(2, 0, 1)[None].float()  # a copy: loaded images may be read-only
    x = F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8)


def part_name(key: str) -> str:
    """File name of one image's rows in the parts folder: a digest of its key, so any key (sub-folders,
    odd characters) gives a flat, fixed-length name."""
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:20] + ".npy"


def parts_dir(output: str | os.PathLike) -> Path:
    """``<stem>.parts/`` beside the final output, where per-image feature rows wait for the final write."""
    output = Path(output)
    return output.with_name(output.stem + ".parts")


def features_npy(output: str | os.PathLike) -> Path:
    """The ``<stem>.npy`` matrix that goes with the index ``<stem>.json``."""
    return Path(output).with_suffix(".npy")


def save_part(output: str | os.PathLike, key: str, rows: np.ndarray) -> str:
    """Save one image's feature ``rows`` (as float32) in the parts folder of ``output``; returns the part's name."""
    part = part_name(key)
    atomic_write_npy(parts_dir(output) / part, np.ascontiguousarray(rows, dtype=np.float32))
    return part


def write_feature_parts(path: Path, final: dict, src: Path) -> None:
    """Assemble ``final["parts"]`` ([[file, rows], ...] in ``src``) into ONE ``<stem>.npy`` [N, dim]
    float32 (written atomically, memory-mapped so RAM stays bounded), then the index ``path``
    (``final`` plus ``features`` = the .npy name and ``num_rows``)."""
    npy = features_npy(path)
    rows = sum(count for _, count in final["parts"])
    final = dict(final, features=npy.name, num_rows=rows)
    tmp = npy.with_name(f".{npy.name}.{os.getpid()}.tmp")
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(rows, final["dim"]))
    row = 0
    try:
        for part, count in final["parts"]:
            try:
                block = np.load(src / part)
            except OSError:
                raise UserError(f"feature part {src / part} is missing (was {src} deleted?); delete the output "
                                f"and its journal and run again") from None
            if block.shape != (count, final["dim"]):
                raise UserError(f"feature part {src / part} has shape {block.shape}, expected {(count, final['dim'])}")
            arr[row:row + count] = block
            row += count
        arr.flush()
    except BaseException:
        del arr
        tmp.unlink(missing_ok=True)
        raise
    del arr
    os.replace(tmp, npy)
    atomic_write_json(path, final)
