"""seg_suite's additions to a pure-Python build of detectron2 (not part of detectron2).

tools/install_detectron2.py in seg_suite writes this file when it builds detectron2 from the
pb1-detectron2 sdist without the C++/CUDA extension ``detectron2._C``. Patched detectron2 modules
ask here for the extension instead of importing it directly:

* ``_C`` is the extension module, or None when it was not built;
* ``require_compiled(op)`` returns it, or raises a clear RuntimeError when an op is *called*
  (rotated boxes have no pure-Python implementation);
* ``deform_conv`` and ``modulated_deform_conv`` take detectron2's arguments and run
  ``torchvision.ops.deform_conv2d`` (CPU and CUDA, with autograd), which uses the same offset
  and mask layout as detectron2's kernels. ``im2col_step`` only tunes the C++ kernel's memory
  use and is ignored.
"""
from torch.nn.modules.utils import _pair

try:
    from detectron2 import _C
except ImportError:
    _C = None


def require_compiled(op_name, feature="rotated boxes"):
    """Returns ``detectron2._C``; raises RuntimeError naming ``op_name`` when it is absent."""
    if _C is None:
        raise RuntimeError(
            f"detectron2 compiled op unavailable: {op_name} exists only in detectron2's C++/CUDA "
            "extension, which this pure-Python build (installed by seg_suite) does not have; "
            f"build detectron2 from source with CUDA/C++ to use {feature}"
        )
    return _C


def _check_groups(input, offset, weight, groups, deformable_groups, mask=None):
    kh, kw = weight.shape[2:4]
    if input.shape[1] != weight.shape[1] * groups:
        raise ValueError(
            f"deform_conv: input has {input.shape[1]} channels, weight expects "
            f"{weight.shape[1]} x groups={groups}"
        )
    if offset.shape[1] != 2 * deformable_groups * kh * kw:
        raise ValueError(
            f"deform_conv: offset has {offset.shape[1]} channels, expected "
            f"2 x deformable_groups={deformable_groups} x {kh} x {kw}"
        )
    if mask is not None and mask.shape[1] != deformable_groups * kh * kw:
        raise ValueError(
            f"deform_conv: mask has {mask.shape[1]} channels, expected "
            f"deformable_groups={deformable_groups} x {kh} x {kw}"
        )


def deform_conv(
    input, offset, weight, stride=1, padding=0, dilation=1, groups=1, deformable_groups=1,
    im2col_step=64,
):
    """Deformable convolution (DCNv1).

    input (N, C_in, H, W); offset (N, 2*deformable_groups*kh*kw, H_out, W_out);
    weight (C_out, C_in/groups, kh, kw) -> (N, C_out, H_out, W_out).
    """
    from torchvision.ops import deform_conv2d

    _check_groups(input, offset, weight, groups, deformable_groups)
    return deform_conv2d(
        input, offset, weight, stride=_pair(stride), padding=_pair(padding),
        dilation=_pair(dilation),
    )


def modulated_deform_conv(
    input, offset, mask, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
    deformable_groups=1,
):
    """Modulated deformable convolution (DCNv2): like deform_conv, each sampled value is scaled
    by mask (N, deformable_groups*kh*kw, H_out, W_out); bias (C_out,) or None."""
    from torchvision.ops import deform_conv2d

    _check_groups(input, offset, weight, groups, deformable_groups, mask)
    return deform_conv2d(
        input, offset, weight, bias=bias, stride=_pair(stride), padding=_pair(padding),
        dilation=_pair(dilation), mask=mask,
    )
