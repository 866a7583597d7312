"""Putting a checkpoint's weights into a motion model (RAFT, the RCF ResNet and heads), or one line why not.

The file itself is read by :mod:`seg_suite.io.checkpoints` (``weights_only`` loading: a corrupt,
truncated or code-carrying file is a one-line UserError and runs nothing). What is left to
check here is the fit: ``torch.nn.Module.load_state_dict`` reports missing or unexpected keys
and shape mismatches as a multi-paragraph RuntimeError listing every parameter, which says
nothing useful to someone who passed the wrong file; :func:`load_weights_into` says it in one
line, with the first few names.
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping

import torch

from seg_suite.errors import UserError


def _few(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" ... ({len(names)} in all)" if len(names) > n else "")


def load_weights_into(module: torch.nn.Module, state: Mapping[str, object], path: str | os.PathLike, what: str,
                      optional: Iterable[str] = ()) -> None:
    """Load ``state`` into ``module`` strictly; a state dict that does not fit is a one-line UserError.

    ``what`` names the expected checkpoint in the message ("a torchvision raft_small state dict").
    Keys starting with one of ``optional`` may be absent from, or extra in, ``state``.
    """
    optional = tuple(optional)
    not_tensors = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise UserError(f"{path} is not {what}: {_few(not_tensors)} hold no tensors")
    own = module.state_dict()
    missing = sorted(k for k in own if k not in state and not k.startswith(optional))
    unexpected = sorted(k for k in state if k not in own and not k.startswith(optional))
    if missing or unexpected:
        parts = ([f"missing keys {_few(missing)}"] if missing else []) + \
                ([f"unexpected keys {_few(unexpected)}"] if unexpected else [])
        raise UserError(f"{path} is not {what}: {'; '.join(parts)}")
    bad = [f"{k} {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model"
           for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        raise UserError(f"{path} is not {what}: shape mismatch, {_few(bad, 2)}")
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
