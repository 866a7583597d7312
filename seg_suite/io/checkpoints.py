"""Reading model checkpoints safely: ``.pth``/``.pt`` (torch) and detectron2-style ``.pkl``.

Nothing here can run code from a file. Torch files go through ``torch.load(weights_only=True)``;
pickles go through an unpickler that admits only numpy array reconstruction and plain
containers, and refuses every other global by name.

    raw = load_checkpoint("dino_vitbase8_pretrain.pth")        # whatever the file holds
    sd = load_state_dict("R-50.pkl")                            # {name: Tensor}, unwrapped
    sd = load_state_dict("ckpt.pth", nesting=("teacher",))      # steer the unwrapping
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from seg_suite.errors import MissingWeightsError, UserError

# Keys under which training scripts nest the weights, tried in this order. "teacher" precedes
# "student" because DINO evaluates the teacher (dino/eval_linear.py, checkpoint_key="teacher").
DEFAULT_NESTING = ("teacher", "model_ema", "model", "state_dict", "student", "module")

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
PICKLE_SUFFIXES = (".pkl", ".pickle")

# (module, name) pairs a weights pickle may reference. numpy 1.x pickles arrays through
# numpy.core.*, numpy 2.x through numpy._core.*; _frombuffer is what protocol 5 uses;
# _codecs.encode is how protocol-2 pickles written by Python 3 carry raw bytes.
_SAFE_GLOBALS = {
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}
for _core in ("numpy.core", "numpy._core"):
    _SAFE_GLOBALS |= {
        (f"{_core}.multiarray", "_reconstruct"),
        (f"{_core}.multiarray", "scalar"),
        (f"{_core}.numeric", "_frombuffer"),
    }
# numpy 2 pickles dtypes of arrays as numpy.dtypes.<Kind>DType classes.
_SAFE_DTYPE_MODULE = "numpy.dtypes"


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler for weight files: numpy arrays, scalars, dtypes and OrderedDicts only."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS or (module == _SAFE_DTYPE_MODULE and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refused global '{module}.{name}': weight pickles may only hold numpy arrays and dicts"
        )


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise MissingWeightsError(f"checkpoint file not found: {path}")
    if not path.is_file():
        raise UserError(f"checkpoint path is not a file: {path}")


# Lines of torch's weights_only error that are advice, not the reason; one of them suggests
# weights_only=False, which would run code from the file, so none of them reaches the user.
_TORCH_ADVICE = ("Weights only load failed", "Please file an issue", "Check the documentation", "Re-running",
                 "In PyTorch 2.6")


def _reason(err: Exception) -> str:
    """One line out of torch's multi-paragraph errors: the line naming the refused global, if any."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in str(err).splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(_TORCH_ADVICE)]
    named = [ln for ln in lines if "GLOBAL" in ln]
    detail = (named or lines or [type(err).__name__])[0]
    detail = detail.split("WeightsUnpickler error:")[-1].strip() or type(err).__name__
    return detail.split(". ")[0] if len(detail) > 160 else detail


def load_checkpoint(path: str | os.PathLike) -> Any:
    """Load a checkpoint file as stored (tensors on CPU; a ``.pkl`` keeps its numpy arrays).

    Raises MissingWeightsError when the file is absent and UserError (one line) when it is
    corrupt, of an unknown kind, or references code it is not allowed to run.
    """
    path = Path(path).expanduser()
    _check_exists(path)
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        try:
            with open(path, "rb") as fh:
                # latin1 lets Python-2 era Detectron pickles load, as detectron2's checkpointer does.
                return RestrictedUnpickler(fh, encoding="latin1").load()
        except pickle.UnpicklingError as err:
            raise UserError(f"cannot load {path}: {err}") from None
        except (EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as err:
            raise UserError(f"cannot load {path}: corrupt or truncated pickle ({err})") from None
    if suffix in TORCH_SUFFIXES:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise UserError(f"cannot load {path}: corrupt, or holds objects other than tensors and plain "
                            f"containers, which are never unpickled ({_reason(err)})") from None
        except (RuntimeError, EOFError, ValueError, OSError) as err:
            first = _reason(err)
            raise UserError(f"cannot load {path}: corrupt or not a torch checkpoint ({first})") from None
    raise UserError(
        f"cannot load {path}: unknown checkpoint suffix '{path.suffix}' "
        f"(expected one of {', '.join(TORCH_SUFFIXES + PICKLE_SUFFIXES)})"
    )


_ARRAY_TYPES = (torch.Tensor, np.ndarray, np.generic)


def _is_weight_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(v, _ARRAY_TYPES) for v in obj.values()
    )


def unwrap_state_dict(obj: Any, nesting: Iterable[str] = DEFAULT_NESTING) -> dict[str, Any]:
    """Descend through wrapper dicts (``{"model": {...}, "optimizer": ...}``) to the weights.

    At each level the first key of ``nesting`` that is present and holds a dict is entered,
    until the dict holds only arrays/tensors. Non-array entries left at the last level (e.g.
    detectron2's ``"__author__"``) are dropped. Raises UserError if no weights are found.
    """
    nesting = tuple(nesting)
    seen = 0
    while isinstance(obj, Mapping) and not _is_weight_dict(obj) and seen < 8:
        inner = next((obj[k] for k in nesting if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj, seen = inner, seen + 1
    if not isinstance(obj, Mapping):
        raise UserError(f"checkpoint holds a {type(obj).__name__}, not a dict of weights")
    weights = {str(k): v for k, v in obj.items() if isinstance(v, _ARRAY_TYPES)}
    if not weights:
        raise UserError(
            f"no weights found in checkpoint (top-level keys: {sorted(map(str, obj))[:8]}; "
            f"looked inside {list(nesting)})"
        )
    return weights


def strip_prefixes(state_dict: Mapping[str, Any], prefixes: Iterable[str]) -> dict[str, Any]:
    """Remove each of ``prefixes`` from the start of keys, repeatedly (``module.backbone.x`` -> ``x``)."""
    prefixes = tuple(prefixes)
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if key.startswith(p):
                    key, changed = key[len(p):], True
        out[key] = value
    return out


def load_state_dict(path: str | os.PathLike, nesting: Iterable[str] = DEFAULT_NESTING) -> dict[str, torch.Tensor]:
    """Load ``path`` and return its weights as ``{name: Tensor}`` on CPU (numpy arrays converted)."""
    weights = unwrap_state_dict(load_checkpoint(path), nesting)
    # np.array copies into a writable, contiguous array (numpy scalars become 0-d arrays).
    return {k: v if isinstance(v, torch.Tensor) else torch.from_numpy(np.array(v)) for k, v in weights.items()}
