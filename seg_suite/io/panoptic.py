"""The COCO panoptic PNG encoding: segment id = R + 256 G + 256^2 B."""

from __future__ import annotations

import numpy as np


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 panoptic PNG pixels -> HxW int64 segment ids (an HxW input is returned as ids)."""
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        return rgb.astype(np.int64)
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """HxW segment ids -> HxWx3 uint8 (inverse of :func:`rgb_to_id`)."""
    ids = np.asarray(ids).astype(np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)
