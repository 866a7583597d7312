"""MaskCut (Wang et al., "Cut and Learn", CVPR 2023): up to N object masks per image from
repeated normalized cuts on self-supervised ViT patch features.

Steps, following CutLER ``maskcut/maskcut.py`` (``maskcut``, ``maskcut_forward`` and its
``__main__`` loop):

1. resize the image to ``fixed_size x fixed_size`` with Lanczos (and, if that is not a
   multiple of the patch size, Lanczos again to the nearest multiple, as TokenCut's
   ``resize_pil`` does); ImageNet normalisation; one backbone pass for the ``facet``;
2. up to ``num_masks`` normalized cuts (:mod:`seg_suite.pseudo.ncut`); before cut i > 1 the
   features of every patch in the previous masks are set to zero;
3. cut i > 1 is emptied when its IoU with the previous cut's mask is > 0.5, or when it
   covers <= 1% of the patches. As in the reference, an emptied cut adds nothing to the
   zeroed patches and is "the previous mask" for the next cut;
4. each cut is upsampled (nearest) to ``fixed_size`` and loses the pixels of earlier masks;
5. with ``crf``: dense CRF on the resized image (:mod:`seg_suite.pseudo.crf`), fill holes,
   and the mask is dropped if the CRF result has IoU < 0.5 with the raw mask;
6. resize to the original size (bicubic on 0/255, threshold at half, as the reference's
   PIL resize + ``create_annotation_info`` does); empty masks are dropped.

Deliberate differences from the reference:

* the eigensolver is Lanczos/LOBPCG on the symmetric normalised form, not a dense
  generalized ``eigh`` (same eigenvector; see ``ncut``), and the foreground choice is
  stated sign-free (see ``ncut.orient``);
* masks come back at the original ``H x W``. (The reference's JSON swaps ``width`` and
  ``height`` in ``images[]``; that is a JSON-writing matter and we do not repeat it.)
* ``crf=False`` is offered (the reference always runs the CRF); then step 5 is skipped,
  holes included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F
from PIL import Image

from seg_suite.pseudo import ncut as ncut_mod
from seg_suite.pseudo.crf import densecrf
from seg_suite.pseudo.maskcut_params import MaskCutParams  # noqa: F401 - part of this module's API


@dataclass
class MaskCutMask:
    """One pseudo-mask.

    mask:       bool ``[H, W]`` at the original image resolution.
    score:      ``1 - NCut/2`` in [0, 1] of this mask's patches on the binarised affinity
                graph of its cut (``NCut = cut/vol(S) + cut/vol(S')``): 1 for a region with
                no similar patch outside it, lower the more it is tied to the rest. It
                measures how cleanly the cut separates the region; it is not a calibrated
                probability.
    patch_mask: bool ``[h, w]``, the cut on the patch grid (before pixel-level steps).
    cut_index:  which of the ``num_masks`` cuts produced it (0-based).
    """

    mask: np.ndarray
    score: float
    patch_mask: np.ndarray
    cut_index: int


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU as TokenCut's ``metric.IoU``: NaN when both masks are empty (so no rule fires)."""
    union = np.logical_or(a, b).sum()
    if union == 0:
        return float("nan")
    return float(np.logical_and(a, b).sum() / union)


def _extractor_device(extractor) -> torch.device:
    for t in list(extractor.parameters()) + list(extractor.buffers()):
        return t.device
    return torch.device("cpu")


def preprocess(image: np.ndarray, fixed_size: int, patch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``[H, W, 3]`` -> (``fixed_size^2`` Lanczos resize, the network input size copy).

    The second is the first resized again with Lanczos to ``round(fixed_size / patch)``
    patches per side, a no-op when ``fixed_size`` is a multiple of the patch size.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"maskcut needs a uint8 HxWx3 RGB image, got {image.dtype} {image.shape}")
    resized = Image.fromarray(image).resize((fixed_size, fixed_size), Image.LANCZOS)
    side = max(1, int(round(fixed_size / patch_size))) * patch_size
    net_in = resized if side == fixed_size else resized.resize((side, side), Image.LANCZOS)
    return np.array(resized), np.array(net_in)


@torch.no_grad()
def extract_features(net_inputs: list[np.ndarray], extractor, facet: str) -> torch.Tensor:
    """Equal-size uint8 ``[S, S, 3]`` images -> patch features ``[B, h, w, C]`` (one pass)."""
    device = _extractor_device(extractor)
    x = torch.from_numpy(np.stack(net_inputs)).to(device).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(extractor.mean, device=device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(extractor.std, device=device, dtype=x.dtype).view(1, 3, 1, 1)
    return extractor((x - mean) / std, facets=(facet,))[facet]


def cut_patches(feats: torch.Tensor, params: MaskCutParams) -> list[list[tuple[np.ndarray, float]]]:
    """The repeated cuts on the patch grid (steps 2-3).

    feats: ``[B, h, w, C]``. Returns, per image, ``num_masks`` entries ``(patch mask bool
    [h, w], score)``; an emptied cut has an all-False mask.
    """
    B, h, w, C = feats.shape
    dims = (h, w)
    work = feats.reshape(B, h * w, C).float().clone()
    painted = np.zeros((B, h * w), dtype=bool)
    previous = [np.zeros(dims, dtype=bool) for _ in range(B)]
    out: list[list[tuple[np.ndarray, float]]] = [[] for _ in range(B)]
    for i in range(params.num_masks):
        if i > 0:
            painted |= np.stack([p.reshape(-1) for p in previous])
            work[torch.from_numpy(painted).to(work.device)] = 0.0
        cuts = ncut_mod.normalized_cut(work, dims, params.tau, solver=params.solver)
        for b, cut in enumerate(cuts):
            mask = cut.mask
            if i > 0 and (
                _iou(previous[b], mask) > params.max_iou_with_previous
                or mask.mean() <= params.min_patch_fraction
            ):
                mask = np.zeros(dims, dtype=bool)
            previous[b] = mask
            out[b].append((mask, 1.0 - cut.ncut / 2.0))
    return out


def _upsample_nearest(mask: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.interpolate(t, size=(size, size), mode="nearest")[0, 0].numpy() > 0.5


def _resize_to(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bicubic resize of the 0/255 mask, kept above half its maximum (reference: PIL's
    default resample for ``Image.resize``, then ``create_annotation_info``'s threshold)."""
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    arr = np.asarray(img.resize((width, height), Image.BICUBIC))
    return arr > arr.max() / 2.0 if arr.max() > 0 else np.zeros((height, width), dtype=bool)


def finish_masks(
    image: np.ndarray, resized: np.ndarray, cuts: list[tuple[np.ndarray, float]], params: MaskCutParams
) -> list[MaskCutMask]:
    """Pixel-level steps 4-6 for one image. ``resized`` is the ``fixed_size^2`` image."""
    H, W = image.shape[:2]
    taken = np.zeros((params.fixed_size, params.fixed_size), dtype=bool)
    result = []
    for i, (patch_mask, score) in enumerate(cuts):
        raw = _upsample_nearest(patch_mask, params.fixed_size) & ~taken
        taken |= raw
        mask = raw
        if params.crf:
            refined = scipy.ndimage.binary_fill_holes(densecrf(resized, raw))
            if _iou(raw, refined) < params.min_crf_iou:
                continue
            mask = refined
        mask = _resize_to(mask, W, H)
        if mask.any():
            result.append(MaskCutMask(mask=mask, score=float(score), patch_mask=patch_mask, cut_index=i))
    return result


def maskcut_batch(images: list[np.ndarray], extractor, params: MaskCutParams | None = None) -> list[list[MaskCutMask]]:
    """MaskCut on several images with one backbone pass and batched cuts.

    images: uint8 ``[H_i, W_i, 3]`` RGB, any sizes. extractor: a
    ``seg_suite.features`` FeatureExtractor (``.patch_size``, ``.mean``, ``.std``,
    ``forward(x, facets) -> {facet: [B, h, w, C]}``), on the device to use.
    Returns, per image, its masks in cut order.
    """
    params = params or MaskCutParams()
    if not images:
        return []
    prepped = [preprocess(im, params.fixed_size, extractor.patch_size) for im in images]
    feats = extract_features([p[1] for p in prepped], extractor, params.facet)
    cuts = cut_patches(feats, params)
    return [finish_masks(im, p[0], c, params) for im, p, c in zip(images, prepped, cuts)]


def maskcut(image: np.ndarray, extractor, params: MaskCutParams | None = None) -> list[MaskCutMask]:
    """MaskCut on one uint8 ``[H, W, 3]`` RGB image; see :func:`maskcut_batch`."""
    return maskcut_batch([image], extractor, params)[0]
