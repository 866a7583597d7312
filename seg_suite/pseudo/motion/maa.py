"""Object-channel selection without labels by motion-appearance alignment (IMAS).

IMAS (Lian & Darrell, "Unsupervised video object segmentation by motion-appearance alignment";
RCF repo ``tools/SemanticConstraintsAndMAA/maa.py``) scores each predicted channel by how well its
mask agrees with appearance: the normalised-cut cost of the mask on an affinity graph of appearance
features (cosine similarity binarised at ``tau`` = 0.2, as ``NCutEvalHead``), averaged over frames;
the object channel is the one with the lowest cost (highest MAA = -NCut).

NCut is symmetric in a mask and its complement, so a background channel covering everything but
the object scores like the object; and a piece of background that is uniform in appearance (sky)
is a good cut too. We therefore add the channel's share of the image border to its cost (the
camera-motion prior of the weight-free grouping: background touches the frame edges, objects
mostly do not), a deliberate addition to the reference, which ranks by NCut alone.
Appearance features come from any
:class:`seg_suite.features.FeatureExtractor`; the default is the weight-free ``handcrafted`` one
(IMAS uses DINO ViT-S/8 keys, which need weights we cannot download here).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from seg_suite.pseudo.ncut import binarized_affinity, ncut_value

MAA_TAU = 0.2  # NCutEvalHead default in maa.py


def border_share(mask: np.ndarray) -> float:
    """Fraction of the image border covered by a soft mask [h, w]."""
    b = np.concatenate([mask[0], mask[-1], mask[1:-1, 0], mask[1:-1, -1]])
    return float(b.mean())


def channel_ncut_costs(images: list[np.ndarray], masks: list[np.ndarray], extractor=None, tau: float = MAA_TAU):
    """Mean NCut cost per channel. images: HxWx3 uint8; masks: [K, h, w] soft, any h, w -> (K,)."""
    if extractor is None:
        from seg_suite.features import build_extractor

        extractor = build_extractor("handcrafted")
    K = masks[0].shape[0]
    costs = np.zeros(K)
    for image, m in zip(images, masks):
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(extractor.device)
        with torch.no_grad():
            feats = extractor(extractor.crop(extractor.normalize(x)), facets=("k",))["k"][0]  # h, w, C
        gh, gw = feats.shape[:2]
        A = binarized_affinity(feats.reshape(gh * gw, -1), tau)
        mt = F.interpolate(torch.from_numpy(m)[None].float(), size=(gh, gw), mode="bilinear", align_corners=False)[0]
        for k in range(K):
            costs[k] += ncut_value(A, (mt[k] > 0.5).numpy())
    return costs / len(images)


def select_object_channel(images, masks, extractor=None, tau: float = MAA_TAU, border_weight: float = 1.0):
    """-> (object channel, per-channel NCut costs, per-channel border share).

    The channel with the lowest ``NCut + border_weight * border share`` is the object channel
    (``border_weight=0`` is IMAS's rule).
    """
    costs = channel_ncut_costs(images, masks, extractor, tau)
    border = np.array([np.mean([border_share(m[k]) for m in masks]) for k in range(masks[0].shape[0])])
    return int(np.argmin(costs + border_weight * border)), costs, border
