"""Atomic file writes: a reader never sees a partial output file.

Each writer goes to a temporary file in the destination folder, fsyncs it and renames it
over the destination (``os.replace`` is atomic on POSIX within one filesystem).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np

from seg_suite.errors import UserError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` atomically.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, bytes):
        return obj.decode("ascii")
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    """Write ``obj`` as JSON atomically (numpy scalars and arrays are converted)."""
    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=indent, default=json_default)


def atomic_write_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8/uint16 HxW or HxWx3 array as PNG atomically."""
    from PIL import Image

    with atomic_write(path, "wb") as fh:
        Image.fromarray(np.ascontiguousarray(array)).save(fh, format="PNG")


def load_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read a JSON file, or raise a one-line :class:`UserError` naming ``what`` was expected."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {what} {path}: {str(err).splitlines()[0]}") from None
