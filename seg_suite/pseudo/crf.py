"""Dense CRF refinement of a binary mask (Kraehenbuehl & Koltun), as CutLER applies it.

The parameters and the soft unary are CutLER's ``maskcut/crf.py``: the hard mask becomes
two logits (background 1 - m, foreground m), bilinearly resized to the image, softmaxed
(so a pixel starts at 0.73 / 0.27, not certainty), then 10 mean-field iterations with a
Gaussian kernel (xy std 3, weight 7) and a bilateral kernel (xy std 50, rgb std 5,
weight 10). Needs ``pydensecrf`` (PyPI ``pydensecrf2``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from seg_suite.errors import UserError

# CutLER maskcut/crf.py module constants.
MAX_ITER = 10
POS_XY_STD = 3
POS_W = 7
BI_XY_STD = 50
BI_RGB_STD = 5
BI_W = 10


def densecrf_module():
    """The pydensecrf modules (densecrf, utils); a one-line UserError when it is not installed."""
    try:
        import pydensecrf.densecrf as dcrf
        import pydensecrf.utils as dcrf_utils
    except ImportError as e:
        raise UserError(
            "the CRF step needs pydensecrf: install it with `pip install pydensecrf2` "
            "(or run MaskCut with --no-crf)"
        ) from e
    return dcrf, dcrf_utils


def densecrf(image: np.ndarray, mask: np.ndarray, n_iter: int = MAX_ITER) -> np.ndarray:
    """Refine ``mask`` on ``image``.

    image: uint8 ``[H, W, 3]`` RGB. mask: ``[h, w]`` bool or {0,1} float, any size (it is
    resized bilinearly to ``[H, W]``, as the reference does). Returns bool ``[H, W]``, the
    MAP labelling (True = foreground).
    """
    dcrf, dcrf_utils = densecrf_module()
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"densecrf needs a uint8 HxWx3 image, got {image.dtype} {image.shape}")
    H, W = image.shape[:2]
    fg = torch.from_numpy(np.asarray(mask, dtype=np.float64))[None]
    logits = torch.cat([1.0 - fg, fg], dim=0)[None]  # [1, 2, h, w]
    logits = F.interpolate(logits, size=(H, W), mode="bilinear")[0]
    probs = F.softmax(logits, dim=0).numpy()

    crf = dcrf.DenseCRF2D(W, H, 2)
    crf.setUnaryEnergy(np.ascontiguousarray(dcrf_utils.unary_from_softmax(probs)))
    crf.addPairwiseGaussian(sxy=POS_XY_STD, compat=POS_W)
    crf.addPairwiseBilateral(sxy=BI_XY_STD, srgb=BI_RGB_STD, rgbim=np.array(image, dtype=np.uint8, order="C"), compat=BI_W)
    q = np.array(crf.inference(n_iter)).reshape(2, H, W)
    return np.argmax(q, axis=0).astype(bool)
