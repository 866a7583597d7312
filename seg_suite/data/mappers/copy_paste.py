"""Simple Copy-Paste augmentation (Ghiasi et al., CVPR 2021, "Simple Copy-Paste is a Strong Data
Augmentation Method for Instance Segmentation").

Both images have already been through their own large-scale jitter, so they have the same
(padded) size. A random subset of the source's objects is pasted on top of the target with plain
alpha = mask blending (the paper found Gaussian-blurred edges unnecessary); target masks lose the
pixels now covered, and fully covered target objects disappear.
"""

from __future__ import annotations

import numpy as np


def copy_paste(dst_image: np.ndarray, dst_masks: np.ndarray, dst_classes: np.ndarray,
               src_image: np.ndarray, src_masks: np.ndarray, src_classes: np.ndarray,
               rng: np.random.Generator):
    """Paste a random non-empty subset of ``src`` objects onto ``dst``.

    Args:
        dst_image, src_image: HxWx3 uint8 of the same size.
        dst_masks, src_masks: (N, H, W) bool; dst_classes, src_classes: (N,) int.
    Returns:
        (image HxWx3, masks (M, H, W) bool, classes (M,), pasted HxW bool) with the pasted objects
        last and target objects that became empty removed; ``pasted`` marks the replaced pixels.
    """
    if dst_image.shape != src_image.shape:
        raise ValueError(f"copy-paste needs equal sizes, got {dst_image.shape} and {src_image.shape}")
    src_masks = np.asarray(src_masks, bool)
    dst_masks = np.asarray(dst_masks, bool)
    if len(src_masks) == 0:
        return dst_image, dst_masks, np.asarray(dst_classes), np.zeros(dst_image.shape[:2], bool)
    count = int(rng.integers(1, len(src_masks) + 1))
    chosen = np.sort(rng.choice(len(src_masks), size=count, replace=False))
    pasted = src_masks[chosen]
    cover = pasted.any(axis=0)
    image = np.where(cover[:, :, None], src_image, dst_image)
    remaining = dst_masks & ~cover
    alive = remaining.reshape(len(remaining), -1).any(axis=1)
    masks = np.concatenate([remaining[alive], pasted], axis=0)
    classes = np.concatenate([np.asarray(dst_classes)[alive], np.asarray(src_classes)[chosen]])
    return image, masks, classes, cover
