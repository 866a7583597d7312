"""Training mapper for COCO-format instance datasets with large-scale jitter (``coco_instance_lsj``).

Follows Mask2Former's ``COCOInstanceNewBaselineDatasetMapper`` (flip, ResizeScale 0.1-2.0,
1024 fixed-size crop, crowd annotations dropped, boxes from masks). Differences: masks may be
RLE or polygons (pseudo-label files are RLE), an unreadable image is skipped instead of stopping
the run, and Simple Copy-Paste is available (``INPUT.COPY_PASTE.PROB``, off by default).
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T

from seg_suite.data.mappers.common import build_lsj_augmentation, image_to_tensor, masks_to_instances, read_image
from seg_suite.data.mappers.copy_paste import copy_paste
from seg_suite.io.masks import rle_to_mask

logger = logging.getLogger(__name__)


class InstanceLSJDatasetMapper:
    """dataset dict -> ``{"image": 3xHxW uint8, "instances": Instances(gt_classes, gt_masks (N,H,W)
    bool, gt_boxes), "padding_mask": HxW bool (True on padding), ...}``."""

    @configurable
    def __init__(self, is_train: bool = True, *, augmentations: list, image_format: str,
                 copy_paste_prob: float = 0.0, copy_paste_pool: list[dict] | None = None):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.copy_paste_prob = copy_paste_prob
        self.copy_paste_pool = copy_paste_pool or []
        if copy_paste_prob > 0 and not self.copy_paste_pool:
            raise ValueError("copy-paste needs a pool of dataset dicts to take objects from")
        logger.info("[InstanceLSJDatasetMapper] augmentations: %s; copy-paste probability %.2f",
                    augmentations, copy_paste_prob)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        prob = cfg.INPUT.COPY_PASTE.PROB if cfg.INPUT.COPY_PASTE.ENABLED else 0.0
        pool = None
        if prob > 0:
            pool = [d for name in cfg.DATASETS.TRAIN for d in DatasetCatalog.get(name) if d.get("annotations")]
        return {
            "is_train": is_train,
            "augmentations": build_lsj_augmentation(cfg.INPUT.IMAGE_SIZE, cfg.INPUT.MIN_SCALE, cfg.INPUT.MAX_SCALE,
                                                    cfg.INPUT.RANDOM_FLIP),
            "image_format": cfg.INPUT.FORMAT,
            "copy_paste_prob": prob,
            "copy_paste_pool": pool,
        }

    def _load(self, dataset_dict: dict):
        """Read and jitter one image and its non-crowd masks: (image, padding, masks (N,H,W), classes)."""
        image = read_image(dataset_dict, self.image_format)
        if image is None:
            return None
        h, w = image.shape[:2]
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        padding = transforms.apply_segmentation(np.ones((h, w), np.uint8)) == 0
        annos = [a for a in dataset_dict.get("annotations", []) if a.get("iscrowd", 0) == 0]
        masks = [transforms.apply_segmentation(rle_to_mask(a["segmentation"], h, w).astype(np.uint8)) > 0
                 for a in annos]
        masks = np.stack(masks) if masks else np.zeros((0, *image.shape[:2]), bool)
        classes = np.array([a["category_id"] for a in annos], dtype=np.int64)
        return image, padding, masks, classes

    def __call__(self, dataset_dict: dict) -> dict | None:
        dataset_dict = copy.deepcopy(dataset_dict)
        loaded = self._load(dataset_dict)
        if loaded is None:
            return None
        image, padding, masks, classes = loaded
        # Draws use NumPy's global state, which detectron2 seeds differently in every loader worker
        # (the same state its augmentations use).
        if self.is_train and self.copy_paste_prob > 0 and np.random.rand() < self.copy_paste_prob:
            source = self.copy_paste_pool[np.random.randint(len(self.copy_paste_pool))]
            src = self._load(copy.deepcopy(source))
            if src is not None:
                rng = np.random.default_rng(np.random.randint(2**31))
                image, masks, classes, pasted = copy_paste(image, masks, classes, src[0], src[2], src[3], rng)
                padding &= ~pasted
        dataset_dict["image"] = image_to_tensor(image)
        dataset_dict["padding_mask"] = torch.as_tensor(np.ascontiguousarray(padding))
        dataset_dict.pop("annotations", None)
        if self.is_train:
            dataset_dict["instances"] = masks_to_instances(image.shape[:2], masks, classes)
        return dataset_dict
