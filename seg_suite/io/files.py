"""Atomic file writes: a reader never sees a partial output file.

Each writer goes to a temporary file in the destination folder, fsyncs it and renames it
over the destination (``os.replace`` is atomic on POSIX within one filesystem). The final file
gets the mode a plain ``open()`` would give under the user's umask (``mkstemp`` alone gives
0600, which hides results from the rest of a group on a shared cluster).

A destination that cannot be written (read-only file system, full disk, missing permission, a
folder that is a file) is a :class:`~seg_suite.errors.UserError` naming the path and the reason,
never a half-written file. :func:`check_writable_dir` finds the same problems before a long run
starts.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np

from seg_suite.errors import UserError


# errno values that mean "this place cannot be written", a user's problem rather than a bug.
_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
               errno.EISDIR, errno.EEXIST, errno.EFBIG, errno.ENAMETOOLONG, errno.ELOOP, errno.ENOENT,
               errno.EINVAL, errno.ENXIO, errno.ENODEV}


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _file_in_the_way(path: Path) -> Path | None:
    """The first of ``path``'s folders that exists as something other than a folder, if any."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def cannot_write(path: str | os.PathLike, err: OSError) -> UserError:
    """The one-line UserError for an OSError met while writing ``path``."""
    reason = err.strerror or str(err) or type(err).__name__
    if err.errno in (errno.EEXIST, errno.ENOTDIR):
        blocker = _file_in_the_way(Path(path))
        if blocker is not None:
            reason = f"{blocker} is a file, not a folder"
    return UserError(f"cannot write {path}: {reason}; choose an output location you can write to"
                     + (" and free some space" if err.errno in (errno.ENOSPC, errno.EDQUOT) else ""))


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` atomically.

    On any exception the temporary file is removed and ``path`` is left as it was. An OSError
    that means the place cannot be written becomes a one-line UserError.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        _discard(tmp)
        if err.errno in _UNWRITABLE:
            raise cannot_write(path, err) from None
        raise
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: str | None) -> None:
    if tmp is not None:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def check_writable_dir(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``folder`` if needed and prove it takes a file; one-line UserError if it cannot.

    Call it where a command starts, so that an unwritable output fails in a second, not after
    hours of work.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".seg_suite-write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        if err.errno in _UNWRITABLE:
            blocker = _file_in_the_way(folder / "x")
            reason = f"{blocker} is a file, not a folder" if blocker is not None else err.strerror or err
            raise UserError(f"cannot write to the {what} {folder}: {reason}; "
                            f"choose a location you can write to") from None
        raise
    return folder


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


def atomic_write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as a ``.npy`` file atomically (the folder is created if needed)."""
    with atomic_write(path, "wb") as fh:
        np.save(fh, array)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes, read in ``chunk``-sized blocks so large checkpoints stay out of RAM."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def png_name(file_name: str) -> str:
    """The PNG that belongs to an image ``file_name``: same relative path, ``.png`` suffix (POSIX form).

    Label maps written per image (stuff maps, panoptic and semantic PNGs) are named this way, so an
    image and its maps pair up by name across folders.
    """
    return str(Path(file_name).with_suffix(".png").as_posix())


def load_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read a JSON file, or raise a one-line :class:`UserError` naming ``what`` was expected."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {what} {path}: {str(err).splitlines()[0]}") from None
    except RecursionError:  # "[[[[...": nested deeper than any annotation file
        raise UserError(f"cannot read {what} {path}: it is nested too deeply to be an annotation file") from None
