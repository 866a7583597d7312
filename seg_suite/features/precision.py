"""The floating-point precision of a backbone's forward pass: ``fp32``, ``bf16`` or ``fp16``.

    check_precision("bf16", torch.device("cpu"))   # a one-line UserError where the hardware lacks it
    with autocast("bf16", "cpu"):
        feats = model(x)
    feats = to_float32(feats)

Reduced precision covers the backbone forward only (``torch.autocast``); whatever reads the
features (affinities, eigensolvers, clustering, SAM's mask decoder) gets them as float32.

Where each precision runs:
  - ``fp32`` everywhere (the reference);
  - ``bf16`` on a CPU with a bfloat16 unit (x86: AMX-BF16 or AVX512-BF16; Arm: the BF16
    extension), read from ``/proc/cpuinfo``, and on a CUDA GPU that supports it (compute
    capability 8.0 or newer, ``torch.cuda.is_bf16_supported``). oneDNN also runs bfloat16 on
    plain AVX512 CPUs by conversion, which is slower than float32, so those are refused;
  - ``fp16`` on CUDA only.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from seg_suite.errors import UserError

PRECISIONS = ("fp32", "bf16", "fp16")
# DINO, CutLER's maskcut.py, U2Seg, STEGO and segment-anything all extract features in float32.
DEFAULT_PRECISION = "fp32"
PRECISION_SOURCE = "float32, as DINO, CutLER's maskcut.py and segment-anything run inference"

# /proc/cpuinfo flags of the units that compute in bfloat16 natively.
X86_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
ARM_BF16_FLAGS = ("bf16",)
BF16_FLAGS = X86_BF16_FLAGS + ARM_BF16_FLAGS
CPUINFO = Path("/proc/cpuinfo")


def check_precision_name(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a one-line UserError."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    return precision


def cpu_flags(cpuinfo: Path | None = None) -> set[str] | None:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features``) from ``cpuinfo`` (default :data:`CPUINFO`),
    or None where it is not readable."""
    try:
        text = Path(cpuinfo or CPUINFO).read_text(errors="replace")
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def cpu_bf16_units(cpuinfo: Path | None = None) -> tuple[str, ...] | None:
    """The bfloat16 units this CPU has (e.g. ``("amx_bf16", "avx512_bf16")``); None when it cannot be told."""
    flags = cpu_flags(cpuinfo)
    if flags is None:
        return None
    return tuple(f for f in BF16_FLAGS if f in flags)


def check_precision(precision: str, device) -> None:
    """A one-line UserError unless ``precision`` runs on ``device`` (a ``torch.device``) here."""
    check_precision_name(precision)
    if precision == "fp32":
        return
    if device.type == "cpu":
        if precision == "fp16":
            raise UserError("--precision fp16 runs on CUDA only; on the CPU use bf16 (where the CPU has a bfloat16 "
                            "unit) or fp32")
        units = cpu_bf16_units()
        if units is None:
            raise UserError("--precision bf16 on the CPU needs a bfloat16 unit, and /proc/cpuinfo cannot be read to "
                            f"find one; use --precision fp32")
        if not units:
            raise UserError("--precision bf16 on the CPU needs a bfloat16 unit (AMX-BF16 or AVX512-BF16 on x86, "
                            "BF16 on Arm) and this CPU has none; use --precision fp32")
    elif device.type == "cuda" and precision == "bf16":
        import torch

        if not torch.cuda.is_bf16_supported(including_emulation=False):
            raise UserError(f"--precision bf16 needs a GPU of compute capability 8.0 or newer; "
                            f"{torch.cuda.get_device_name(device)} has none; use fp16 or fp32")


def autocast(precision: str, device):
    """The context under which a backbone's forward runs at ``precision`` on ``device`` (type or device)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    device_type = device if isinstance(device, str) else device.type
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[check_precision_name(precision)]
    return torch.autocast(device_type, dtype=dtype)


def to_float32(value):
    """Floating tensors in ``value`` (a tensor, or a dict/list/tuple of them) as float32; the rest unchanged."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: to_float32(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_float32(v) for v in value)
    return value


class AutocastForward:
    """Wraps a module's ``forward`` so it runs at ``precision`` and returns float32 (SAM's image encoder).

    ``apply`` replaces the instance's ``forward``; the module keeps its attributes and state_dict keys.
    """

    def __init__(self, forward, precision: str):
        self.forward, self.precision = forward, check_precision_name(precision)

    def __call__(self, x, *args, **kwargs):
        with autocast(self.precision, x.device):
            out = self.forward(x, *args, **kwargs)
        return to_float32(out)

    @classmethod
    def apply(cls, module, precision: str):
        """Make ``module`` run its forward at ``precision`` (fp32: left as it is); returns ``module``."""
        if check_precision_name(precision) != "fp32":
            module.forward = cls(module.forward, precision)
        return module
