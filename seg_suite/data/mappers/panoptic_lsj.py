"""Training mapper for COCO-format panoptic datasets with large-scale jitter (``coco_panoptic_lsj``).

Follows Mask2Former's ``COCOPanopticNewBaselineDatasetMapper``: one target per non-crowd segment
(things and stuff alike), classes contiguous over all categories. Differences: an unreadable
image is skipped, and the semantic map is also returned when the dataset has one.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T
from PIL import Image

from seg_suite.data.mappers.common import build_lsj_augmentation, image_to_tensor, masks_to_instances, read_image
from seg_suite.io.panoptic import rgb_to_id

logger = logging.getLogger(__name__)


class PanopticLSJDatasetMapper:
    """dataset dict (``pan_seg_file_name``, ``segments_info``) -> ``{"image", "instances"}``."""

    @configurable
    def __init__(self, is_train: bool = True, *, augmentations: list, image_format: str):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        logger.info("[PanopticLSJDatasetMapper] augmentations: %s", augmentations)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return {
            "is_train": is_train,
            "augmentations": build_lsj_augmentation(cfg.INPUT.IMAGE_SIZE, cfg.INPUT.MIN_SCALE, cfg.INPUT.MAX_SCALE,
                                                    cfg.INPUT.RANDOM_FLIP),
            "image_format": cfg.INPUT.FORMAT,
        }

    def __call__(self, dataset_dict: dict) -> dict | None:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = read_image(dataset_dict, self.image_format)
        if image is None:
            return None
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        dataset_dict["image"] = image_to_tensor(image)
        if not self.is_train:
            return dataset_dict
        with Image.open(dataset_dict.pop("pan_seg_file_name")) as im:
            pan_rgb = np.asarray(im.convert("RGB"))
        # Transform the uint8 RGB encoding (nearest-neighbour, exact); padding becomes id 0 = void.
        pan = rgb_to_id(transforms.apply_segmentation(pan_rgb))
        segments = [s for s in dataset_dict["segments_info"] if not s.get("iscrowd", 0)]
        masks = np.stack([pan == s["id"] for s in segments]) if segments else np.zeros((0, *pan.shape), bool)
        classes = [s["category_id"] for s in segments]
        dataset_dict["instances"] = masks_to_instances(image.shape[:2], masks, classes)
        if "sem_seg_file_name" in dataset_dict:
            with Image.open(dataset_dict.pop("sem_seg_file_name")) as im:
                sem = transforms.apply_segmentation(np.asarray(im, dtype=np.uint8)).astype(np.int64)
            # The semantic maps are derived from the panoptic ones (void <-> 255), and the padding is
            # void in the panoptic map: ignore it in the semantic map too (it was padded with 0).
            sem[pan == 0] = 255
            dataset_dict["sem_seg"] = torch.as_tensor(sem)
        return dataset_dict
