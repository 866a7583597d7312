"""Pieces shared by the training mappers: image reading, large-scale jitter, target building."""

from __future__ import annotations

import logging

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.data.detection_utils import SizeMismatchError, check_image_size
from detectron2.structures import Boxes, Instances

from seg_suite.io.images import ImageReadError, load_image
from seg_suite.io.masks import masks_to_boxes

logger = logging.getLogger(__name__)


def read_image(dataset_dict: dict, image_format: str) -> np.ndarray | None:
    """HxWx3 uint8 in ``image_format`` ("RGB" or "BGR"), or None (logged) when the file is unreadable.

    Returning None lets detectron2's MapDataset draw another sample, so one bad file does not stop
    a training run.
    """
    try:
        image = load_image(dataset_dict["file_name"])
    except ImageReadError as err:
        logger.warning("skipping unreadable training image: %s", err)
        return None
    if image_format == "BGR":
        image = image[:, :, ::-1]
    elif image_format != "RGB":
        raise ValueError(f"INPUT.FORMAT must be RGB or BGR, got {image_format!r}")
    try:
        check_image_size(dataset_dict, image)
    except SizeMismatchError as err:
        logger.warning("skipping %s: %s", dataset_dict["file_name"], err)
        return None
    return np.ascontiguousarray(image)


def build_lsj_augmentation(image_size: int, min_scale: float, max_scale: float, random_flip: str = "horizontal"):
    """Large-scale jitter (Ghiasi et al. 2021; Mask2Former ``coco_*_new_baseline_dataset_mapper.py``):
    flip, resize so the image fits ``scale * image_size`` with scale ~ U[min_scale, max_scale],
    then a random ``image_size`` crop, padded (value 128, labels 0) up to ``image_size``."""
    augs = []
    if random_flip != "none":
        augs.append(T.RandomFlip(horizontal=random_flip == "horizontal", vertical=random_flip == "vertical"))
    augs += [
        T.ResizeScale(min_scale=min_scale, max_scale=max_scale, target_height=image_size, target_width=image_size),
        T.FixedSizeCrop(crop_size=(image_size, image_size)),
    ]
    return augs


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW uint8 tensor (the model normalises)."""
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


def masks_to_instances(image_shape: tuple[int, int], masks: list[np.ndarray] | np.ndarray, classes) -> Instances:
    """Instances with ``gt_classes`` (N,) int64, ``gt_masks`` (N, H, W) bool tensor (the format the
    MaskFormer meta-architecture reads) and ``gt_boxes`` from the masks; empty masks are dropped."""
    h, w = image_shape
    masks = np.asarray(masks, dtype=bool).reshape(-1, h, w)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    keep = masks.reshape(len(masks), -1).any(axis=1)
    masks, classes = masks[keep], classes[keep]
    inst = Instances(image_shape)
    inst.gt_classes = torch.as_tensor(classes, dtype=torch.int64)
    inst.gt_masks = torch.as_tensor(masks)
    inst.gt_boxes = Boxes(masks_to_boxes(inst.gt_masks))
    return inst
