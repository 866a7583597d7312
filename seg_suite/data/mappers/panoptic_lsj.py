"""Training mapper for COCO-format panoptic datasets with large-scale jitter (``coco_panoptic_lsj``).

Follows Mask2Former's ``COCOPanopticNewBaselineDatasetMapper``: one target per non-crowd segment
(things and stuff alike), classes contiguous over all categories. Differences: an unreadable
image is skipped, and the semantic map is also returned when the dataset has one, read as 8- or
16-bit PNG (more than 255 categories, e.g. U2Seg's 300 + 27, need uint16 maps with void 65535)
with the dataset's void value (metadata ``ignore_label``) kept, on padding too.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from PIL import Image

from seg_suite.data.mappers.common import build_lsj_augmentation, image_to_tensor, masks_to_instances, read_image
from seg_suite.errors import UserError
from seg_suite.io.panoptic import id_to_rgb, rgb_to_id

logger = logging.getLogger(__name__)


class PanopticLSJDatasetMapper:
    """dataset dict (``pan_seg_file_name``, ``segments_info``, optional ``sem_seg_file_name``) ->
    ``{"image" 3xHxW uint8, "instances", "sem_seg" HxW int64 (void = ignore_label)}``."""

    @configurable
    def __init__(self, is_train: bool = True, *, augmentations: list, image_format: str, ignore_label: int = 255):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.ignore_label = ignore_label
        logger.info("[PanopticLSJDatasetMapper] augmentations: %s; semantic void %d", augmentations, ignore_label)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        # The training sets' void value (255, or 65535 for uint16 maps); one per mapper, so they must agree.
        ignores = {getattr(MetadataCatalog.get(n), "ignore_label", cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)
                   for n in cfg.DATASETS.TRAIN}
        if len(ignores) > 1:
            raise UserError(f"DATASETS.TRAIN mixes semantic void values {sorted(ignores)} (uint8 and uint16 "
                            "maps); train on sets with the same number of categories")
        return {
            "is_train": is_train,
            "augmentations": build_lsj_augmentation(cfg.INPUT.IMAGE_SIZE, cfg.INPUT.MIN_SCALE, cfg.INPUT.MAX_SCALE,
                                                    cfg.INPUT.RANDOM_FLIP),
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": ignores.pop() if ignores else cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
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
            path = dataset_dict.pop("sem_seg_file_name")
            with Image.open(path) as im:
                sem = np.asarray(im)  # uint8 ("L"/"P") or uint16 ("I;16"): the values as written
            if sem.ndim != 2:
                raise ValueError(f"semantic map {path} is not single-channel (shape {sem.shape})")
            # Transformed in the RGB id encoding, as the panoptic map: detectron2 resizes uint8 maps
            # exactly (PIL nearest) but sends a uint16 map to torch, which has no uint16 resize.
            sem = rgb_to_id(transforms.apply_segmentation(id_to_rgb(sem)))
            # The semantic maps are derived from the panoptic ones (void <-> ignore_label), and the
            # padding is void in the panoptic map: ignore it in the semantic map too (padded with 0).
            sem[pan == 0] = self.ignore_label
            dataset_dict["sem_seg"] = torch.as_tensor(sem)
        return dataset_dict
