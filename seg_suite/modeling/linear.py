"""Linear layers whose CPU float32 products can run on oneDNN instead of the BLAS.

On CPU, ``F.linear`` hands float32 products to the BLAS that PyTorch was built with (MKL in the
official wheels), while convolutions go to oneDNN. On the AMD EPYC (Zen, AVX-512) machine this
project is developed on, MKL's sgemm ran at about 184 GFLOP/s on 2 threads against 375 GFLOP/s
for oneDNN's 1x1 convolution of the same product (2688 x 256 -> 1024, forward and backward each
about 2x faster; the profile shows MKL in its ``sgemm_kernel_0_zen`` kernel, at about half the
machine's AVX-512 peak). On Intel processors, where MKL has AVX-512 kernels, expect little or no
difference.

:func:`linear` therefore computes ``x @ weight.T + bias`` as a 1x1 convolution when the input is
a float32 CPU tensor of at least :data:`MIN_ELEMENTS` elements: the rows of ``x`` are the pixels
of a channels-last (1, C_in, rows, 1) image, a zero-copy view, and the output comes back the same
way. The maths is the same float32 product (results differ from ``F.linear`` only in summation
order, ~1e-6 relative) and so are the gradients, which autograd takes through the convolution.
PyTorch itself sends such a convolution to the BLAS path when it runs on one thread, so there the
two are equally fast. Every other case (CUDA, other dtypes, small inputs) calls ``F.linear``.

Set the environment variable ``SEG_SUITE_CPU_LINEAR=aten`` (read at import) or call
:func:`set_onednn_linear` to always use ``F.linear``; ``tools/benchmark_model.py --cpu-linear``
measures both.
"""

import os
import warnings

import torch
from torch import nn
from torch.nn import functional as F

# Below this many input elements the view and dispatch overhead (~20 us) outweighs the gain.
MIN_ELEMENTS = 32768

_CHOICES = ("onednn", "aten")
_setting = os.environ.get("SEG_SUITE_CPU_LINEAR", "onednn").strip().lower() or "onednn"
if _setting not in _CHOICES:
    warnings.warn(f"SEG_SUITE_CPU_LINEAR={_setting!r} is not one of {', '.join(_CHOICES)}; using onednn",
                  stacklevel=2)
    _setting = "onednn"
_use_onednn = _setting == "onednn"


def set_onednn_linear(enabled: bool) -> bool:
    """Turn the oneDNN route of :func:`linear` on or off; returns the previous setting."""
    global _use_onednn
    previous, _use_onednn = _use_onednn, bool(enabled)
    return previous


def onednn_linear_enabled() -> bool:
    return _use_onednn


def linear(x: torch.Tensor, weight: torch.Tensor, bias=None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``; on CPU float32 inputs, computed by oneDNN (module docstring).

    Args:
        x: (..., C_in).  weight: (C_out, C_in).  bias: (C_out,) or None.
    Returns:
        (..., C_out).
    """
    if (not _use_onednn or x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32
            or x.dim() < 2 or x.numel() < MIN_ELEMENTS or not torch.backends.mkldnn.is_available()):
        return F.linear(x, weight, bias)
    in_features = x.shape[-1]
    # (rows, C_in) row-major is the memory of a channels-last (1, C_in, rows, 1) image.
    image = x.reshape(1, -1, 1, in_features).permute(0, 3, 1, 2)
    out = F.conv2d(image, weight[:, :, None, None], bias)
    # The output is channels-last too, so this is again a view whenever the input was one.
    return out.permute(0, 2, 3, 1).reshape(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state-dict names) computed with :func:`linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
