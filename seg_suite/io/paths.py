"""Paths named inside data files, kept inside the root folder the user gave.

A COCO ``file_name``, a panoptic PNG name or a listed frame comes from a file that somebody else
may have written. Joined naively to a root, ``../../etc/x`` or an absolute name reads or writes
outside it. Every such name goes through :func:`resolve_under` once, where it enters.

The check is on the name itself (lexical): an absolute name, a drive, or a ``..`` that climbs above
the root is refused. Symbolic links that already sit inside the user's root are the user's own
layout (COCO folders are often links to shared storage) and are followed as usual. For files we
write, :func:`output_path_under` also refuses a destination whose existing folders lead out of the
output root through a link.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from seg_suite.errors import UserError


class PathEscapeError(UserError, ValueError):
    """A path taken from a data file points outside the root it must stay under."""


def safe_relative(name: str, what: str = "path") -> PurePosixPath:
    """``name`` as a normalised relative POSIX path, or :class:`PathEscapeError` if it leaves its root.

    Refused: empty names, absolute paths (``/x``, ``C:\\x``, ``\\\\server\\x``), NUL bytes, and names
    whose ``..`` parts climb above the start (``a/../../b``). ``a/./b`` and ``a/../b`` are normalised.
    """
    if not isinstance(name, str):
        raise PathEscapeError(f"{what} must be a string, got {type(name).__name__}")
    if not name or "\x00" in name:
        raise PathEscapeError(f"{what} {name!r} is empty or holds a NUL byte")
    win = PureWindowsPath(name)
    if name.startswith(("/", "\\")) or win.drive or win.is_absolute():
        raise PathEscapeError(f"{what} {name!r} is absolute; data files must name paths relative to their root")
    parts: list[str] = []
    for part in name.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise PathEscapeError(f"{what} {name!r} climbs out of its root folder with '..'")
            parts.pop()
        else:
            parts.append(part)
    if not parts:
        raise PathEscapeError(f"{what} {name!r} names the root folder itself, not a file")
    return PurePosixPath(*parts)


def resolve_under(root: str | os.PathLike, name: str, what: str = "path") -> Path:
    """``root / name`` for a ``name`` read from a data file; :class:`PathEscapeError` if it escapes ``root``."""
    return Path(root) / safe_relative(name, what)


def output_path_under(root: str | os.PathLike, name: str, what: str = "output path") -> Path:
    """Where to write ``name`` under the output folder ``root``; refuses names and linked folders that leave it."""
    dest = resolve_under(root, name, what)
    real_root = os.path.realpath(root)
    # The deepest folder of dest that exists already: if a link there leads outside, so would the write.
    probe = dest.parent
    while not probe.exists() and probe != Path(root) and probe != probe.parent:
        probe = probe.parent
    real_probe = os.path.realpath(probe)
    if os.path.commonpath([real_root, real_probe]) != real_root:
        raise PathEscapeError(f"{what} {name!r} leads outside the output folder {root} through a link")
    return dest
