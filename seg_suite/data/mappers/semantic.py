"""Training mapper for semantic segmentation (``mask_former_semantic``).

Follows Mask2Former's ``MaskFormerSemanticDatasetMapper``: ResizeShortestEdge over
``INPUT.MIN_SIZE_TRAIN``, a random crop retried until no single class covers more than
``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA`` of it (``cat_max_ratio``), SSD colour jitter, horizontal
flip, padding to ``INPUT.SIZE_DIVISIBILITY`` (image 128, label ignore), and one target mask per
class present. An unreadable image is skipped instead of stopping the run.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.projects.point_rend import ColorAugSSDTransform
from PIL import Image

from seg_suite.data.mappers.common import masks_to_instances, read_image

logger = logging.getLogger(__name__)


class SemanticDatasetMapper:
    """dataset dict (``sem_seg_file_name``) -> ``{"image", "sem_seg" HxW int64, "instances"}``."""

    @configurable
    def __init__(self, is_train: bool = True, *, augmentations: list, image_format: str, ignore_label: int,
                 size_divisibility: int):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.ignore_label = ignore_label
        self.size_divisibility = size_divisibility
        logger.info("[SemanticDatasetMapper] augmentations: %s", augmentations)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        meta = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
        # The dataset's void value (65535 for uint16 maps with > 255 classes), also for the crop rule.
        ignore_label = getattr(meta, "ignore_label", cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)
        augs = [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN,
                                     cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)]
        if cfg.INPUT.CROP.ENABLED:
            augs.append(T.RandomCrop_CategoryAreaConstraint(
                cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE, cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA, ignore_label))
        if cfg.INPUT.COLOR_AUG_SSD:
            augs.append(ColorAugSSDTransform(img_format=cfg.INPUT.FORMAT))
        augs.append(T.RandomFlip())
        return {
            "is_train": is_train,
            "augmentations": augs,
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": ignore_label,
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
        }

    def __call__(self, dataset_dict: dict) -> dict | None:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = read_image(dataset_dict, self.image_format)
        if image is None:
            return None
        if "sem_seg_file_name" not in dataset_dict:
            raise ValueError(f"semantic dataset entry without sem_seg_file_name: {dataset_dict['file_name']}")
        with Image.open(dataset_dict.pop("sem_seg_file_name")) as im:
            # 8- or 16-bit PNG; float so the crop constraint's histogram works (exact up to 2**53)
            sem = np.asarray(im).astype("double")
        aug_input = T.AugInput(image, sem_seg=sem)
        self.augmentations(aug_input)
        image = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
        sem = torch.as_tensor(aug_input.sem_seg.astype("long"))
        if self.size_divisibility > 0:
            h, w = image.shape[-2:]
            pad = [0, max(self.size_divisibility - w, 0), 0, max(self.size_divisibility - h, 0)]
            image = F.pad(image, pad, value=128).contiguous()
            sem = F.pad(sem, pad, value=self.ignore_label).contiguous()
        dataset_dict["image"] = image
        dataset_dict["sem_seg"] = sem
        classes = np.unique(sem.numpy())
        classes = classes[classes != self.ignore_label]
        masks = (sem.numpy()[None] == classes[:, None, None]) if len(classes) else np.zeros((0, *sem.shape), bool)
        dataset_dict["instances"] = masks_to_instances(tuple(sem.shape), masks, classes)
        return dataset_dict
