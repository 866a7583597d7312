"""Turn an ``--input`` spec into the sorted list of work items a dataset run processes.

A spec is one of:

* a directory: searched recursively (flat or nested layouts alike) for files whose
  extension is in ``extensions`` (default :data:`seg_suite.io.images.IMAGE_EXTENSIONS`,
  case-insensitive); hidden files and hidden folders (name starting with ``.``) are skipped;
* a glob pattern (contains ``*``, ``?`` or ``[``), ``**`` allowed; its root is the
  longest leading part of the pattern without wildcards;
* a ``.txt`` list: one path per line, absolute or relative to the list's folder; blank
  lines and ``#`` comments are ignored; listed paths are kept even when missing or
  unreadable, so that they show up in the run's failures with a reason;
* a single image file (its folder is the root).

Every item has a stable ``key``: its path relative to the input root, in POSIX form
(``cats/001.jpg``). Keys order the work, assign shards and name images in the output
(``file_name``), so the same files give the same keys wherever the root is mounted.
Paths are only ever opened as data, never executed or expanded by a shell.
"""

from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from seg_suite.errors import UserError
from seg_suite.io.images import IMAGE_EXTENSIONS
from seg_suite.io.paths import PathEscapeError, resolve_under

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, order=True)
class WorkItem:
    """One unit of work. ``key``: POSIX path relative to the input root; ``path``: absolute path.

    ``error``, when set, is why the item is refused before anything reads it (a name from a data
    file that leaves its root): the runner lists it among the failures with that reason.
    """

    key: str
    path: str
    error: str = field(default="", compare=False)


def _is_glob(spec: str) -> bool:
    return any(c in _GLOB_CHARS for c in spec)


def _hidden(rel: PurePath) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _has_ext(name: str, extensions: tuple[str, ...]) -> bool:
    return name.lower().endswith(extensions)


def _key(path: Path, root: Path) -> str:
    # relpath, not Path.relative_to: a list may name files outside its folder (key "../x.png").
    return Path(os.path.relpath(path, root)).as_posix()


def _from_dir(root: Path, extensions: tuple[str, ...]) -> list[WorkItem]:
    items = []
    # followlinks=False: a symlinked folder loop cannot make the walk endless; symlinked
    # files (dangling ones too) are listed and fail later with a reason.
    def unreadable(err: OSError) -> None:  # say so instead of silently missing a folder's images
        print(f"warning: cannot list folder {err.filename} ({err.strerror}); its images are skipped", file=sys.stderr)

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or not _has_ext(name, extensions):
                continue
            path = Path(dirpath) / name
            items.append(WorkItem(_key(path, root), str(path)))
    return items


def _glob_root(spec: str) -> Path:
    parts = []
    for part in Path(spec).parts:
        if _is_glob(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _from_glob(spec: str, extensions: tuple[str, ...]) -> tuple[Path, list[WorkItem]]:
    root = _glob_root(spec).absolute()
    items = []
    for match in glob.glob(spec, recursive=True):
        path = Path(match).absolute()
        rel = PurePath(os.path.relpath(path, root))
        if path.is_dir() or _hidden(rel) or not _has_ext(path.name, extensions):
            continue
        items.append(WorkItem(_key(path, root), str(path)))
    return root, items


def _from_list(list_path: Path) -> list[WorkItem]:
    root = list_path.parent.absolute()
    try:
        lines = list_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read input list {list_path}: {err}") from None
    items = []
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = Path(entry).expanduser()
        path = path if path.is_absolute() else root / path
        path = Path(os.path.normpath(path))
        items.append(WorkItem(_key(path, root), str(path)))
    return items


def discover_inputs(spec: str | os.PathLike, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[WorkItem]:
    """Sorted, de-duplicated work items for ``spec`` (see the module docstring).

    Raises :class:`UserError` naming what was searched when nothing is found.
    """
    spec = os.fspath(spec)
    extensions = tuple(e.lower() for e in extensions)
    path = Path(spec).expanduser()
    if path.is_dir():
        items = _from_dir(path.absolute(), extensions)
        searched = f"folder {spec} (recursively, for {', '.join(extensions)}; hidden files skipped)"
    elif path.is_file() and path.suffix.lower() == ".txt":
        items = _from_list(path)
        searched = f"list file {spec}"
    elif path.is_file():
        items = [WorkItem(path.name, str(path.absolute()))]
        searched = f"file {spec}"
    elif _is_glob(spec):
        _, items = _from_glob(str(path), extensions)
        searched = f"glob pattern {spec!r} (for {', '.join(extensions)})"
    elif not path.exists() and not path.is_symlink():
        raise UserError(f"input not found: {spec} (expected a folder, a glob pattern or a .txt list)")
    else:
        raise UserError(f"input {spec} is not a folder, a .txt list, an image file or a glob pattern")
    unique = sorted({item.key: item for item in items}.values())
    if not unique:
        raise UserError(f"no input images found in {searched}")
    return unique


def named_items(names, root: str | os.PathLike, what: str = "file_name") -> list[WorkItem]:
    """Sorted work items for file names read from a data file (a COCO ``file_name``), under ``root``.

    The key is the name as written. A name that leaves ``root`` (absolute, or ``..`` above it)
    becomes an item that carries its refusal in ``error``: it is listed among the run's failures
    with the reason and never opened. Raises :class:`UserError` when ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"image folder not found: {root}")
    items = {}
    for name in names:
        try:
            items[name] = WorkItem(name, str(resolve_under(root, name, what)))
        except PathEscapeError as err:
            items[name] = WorkItem(name, str(name), error=str(err))
    return sorted(items.values())


def image_items(coco: dict, image_root: str | os.PathLike) -> list[WorkItem]:
    """One work item per image of a (checked) COCO file: key = ``file_name``, path under ``image_root``.

    A name that leaves the root fails its item (:func:`named_items`); a file with no images at all
    is a UserError, since there would be nothing to do.
    """
    if not coco["images"]:
        raise UserError("the annotation file lists no images")
    return named_items((im["file_name"] for im in coco["images"]), image_root)
