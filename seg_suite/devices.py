"""The one rule for ``--device``: every seg_suite command resolves its device here.

``cpu``, ``cuda`` and ``cuda:N`` are accepted. A CUDA device on a machine without CUDA, or an
index beyond the machine's GPUs, is refused with one line: nothing falls back to the CPU
silently, so a job meant for a GPU never runs for days on a CPU instead. (detectron2's
``MODEL.DEVICE`` follows the same rule in :mod:`seg_suite.engine.launch`.)
"""

from __future__ import annotations

import os


def parse_device(device, what: str = "--device"):
    """``device`` as a ``torch.device`` of type cpu or cuda (its spelling only; see :func:`resolve_device`)."""
    import torch

    from seg_suite.errors import UserError

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"{what} '{device}' is not a device; use cpu or cuda") from None
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported {what} '{device}'; use cpu or cuda")
    return dev


def resolve_device(device, what: str = "--device"):
    """``device`` as a ``torch.device`` that exists here, or a one-line :class:`~seg_suite.errors.UserError`."""
    import torch

    from seg_suite.errors import UserError

    dev = parse_device(device, what)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{what} '{device}' requested but CUDA is not available here; use {what} cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise UserError(f"{what} '{device}' requested but this machine has {count} CUDA device(s)")
    return dev


def local_device(device: str) -> str:
    """Plain ``cuda`` under torchrun means this process's GPU, ``cuda:LOCAL_RANK``."""
    if device == "cuda" and os.environ.get("LOCAL_RANK", "").isdigit():
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device
