"""Mixed-precision training on the CPU: bfloat16 autocast where the CPU computes in bfloat16.

``SOLVER.AMP.ENABLED`` means float16 autocast with a gradient scaler on CUDA (detectron2's
``AMPTrainer``, as Mask2Former trains). On the CPU the format is bfloat16
(``torch.autocast("cpu", dtype=torch.bfloat16)``): it keeps float32's exponent range, so no
gradient scaler is needed, and CPUs with AMX or AVX512-BF16 units (recent Xeon, AMD Zen 4) or
Arm's BF16 extension run its matrix products natively. Without such a unit bfloat16 is emulated
and slower than float32, so it is refused (:func:`check_cpu_bf16`). Parameters, gradients and the
optimizer stay float32; only the forward's operations that autocast lists run in bfloat16.
"""

from __future__ import annotations

import time

import torch
from detectron2.engine import SimpleTrainer

from seg_suite.errors import UserError
from seg_suite.features.precision import BF16_FLAGS, cpu_flags  # the one reading of the CPU's units


def check_cpu_bf16(what: str = "SOLVER.AMP.ENABLED", flags: set[str] | None = None) -> None:
    """A one-line :class:`~seg_suite.errors.UserError` unless this CPU computes in bfloat16 natively.

    ``flags``: the CPU's feature flags (default: :func:`cpu_flags`). Where they cannot be read,
    torch's own check (oneDNN's bfloat16 support) decides.
    """
    flags = cpu_flags() if flags is None else flags
    if flags is None:
        supported = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    else:
        supported = bool(flags & set(BF16_FLAGS))
    if not supported:
        raise UserError(f"{what} on the CPU trains in bfloat16, but this CPU has no bfloat16 unit (AMX-BF16 or "
                        f"AVX512-BF16 on x86, BF16 on Arm); set {what} False to train in float32")


class CPUAutocastTrainer(SimpleTrainer):
    """detectron2's ``SimpleTrainer`` step with the forward and the losses under bfloat16 autocast.

    The backward runs outside autocast (as torch recommends) on the float32 parameters; there is
    no gradient scaler, since bfloat16 has float32's range. The losses are summed in float32.
    """

    def run_step(self):
        assert self.model.training, "[CPUAutocastTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss_dict = self.model(data)
        if isinstance(loss_dict, torch.Tensor):
            loss_dict = {"total_loss": loss_dict}
        losses = sum(loss.float() for loss in loss_dict.values())
        self.optimizer.zero_grad()
        losses.backward()
        self._write_metrics(loss_dict, data_time)
        self.optimizer.step()
