"""Reading images, encoding masks and writing files atomically.

Everything that touches pixels on disk or mask encodings goes through this package, once.
It never imports detectron2.
"""

from seg_suite.io.files import atomic_write, atomic_write_json, atomic_write_png
from seg_suite.io.images import ImageReadError, image_size, load_image
from seg_suite.io.masks import (
    bbox_iou,
    mask_area,
    mask_iou,
    mask_to_bbox,
    mask_to_rle,
    rle_area,
    rle_to_mask,
)

__all__ = [
    "ImageReadError",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_png",
    "bbox_iou",
    "image_size",
    "load_image",
    "mask_area",
    "mask_iou",
    "mask_to_bbox",
    "mask_to_rle",
    "rle_area",
    "rle_to_mask",
]
