"""Video input: video files, folders of frames, DAVIS and synthetic layouts, streamed frame by frame.

A *sequence* is one video: a video file (decoded with PyAV, or OpenCV when PyAV cannot open it)
or a folder of frame images sorted by name. :func:`discover_sequences` turns an ``--input`` spec
into sequences:

* a video file, or a folder of frames  -> that one sequence;
* a DAVIS root (``JPEGImages/480p/<seq>/``), our synthetic layout (``videos/JPEGImages/<seq>/``),
  a ``JPEGImages`` folder, or any folder whose sub-folders hold frames or whose files are
  videos -> one sequence per sub-folder / video file.

Frames come out of :meth:`Sequence.frames` one at a time as HxWx3 uint8 RGB, never all in memory.
A bad sequence raises :class:`VideoReadError` with a one-line reason (the runner records it and
goes on): an unreadable frame, frames of different sizes, fewer than two frames.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from seg_suite.errors import UserError
from seg_suite.io.images import IMAGE_EXTENSIONS, ImageReadError, load_image

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif")
FRAME_EXTENSIONS = tuple(e for e in IMAGE_EXTENSIONS if e != ".gif")


class VideoReadError(Exception):
    """A sequence cannot be used; ``str(err)`` is a one-line reason for ``failures.jsonl``."""


@dataclass(frozen=True, order=True)
class Sequence:
    """One video. ``key``: stable name (POSIX path relative to the input root); ``path``: file or folder."""

    key: str
    path: str

    @property
    def is_file(self) -> bool:
        return Path(self.path).is_file()

    def frame_names(self) -> list[str]:
        """Frame stems used for output files (``00000`` ...). Decodes nothing for folders."""
        if not self.is_file:
            return [p.stem for p in frame_files(Path(self.path))]
        return [f"{i:05d}" for i in range(count_video_frames(self.path))]

    def frames(self) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(frame_name, HxWx3 uint8 RGB)`` in order; raises VideoReadError on bad input."""
        it = _read_video(self.path) if self.is_file else _read_folder(Path(self.path))
        size = None
        for name, frame in it:
            if size is None:
                size = frame.shape[:2]
            elif frame.shape[:2] != size:
                raise VideoReadError(
                    f"frame {name} is {frame.shape[1]}x{frame.shape[0]} but the sequence is "
                    f"{size[1]}x{size[0]} (variable-size frames): {self.path}"
                )
            yield name, frame


def frame_files(folder: Path) -> list[Path]:
    try:
        entries = list(folder.iterdir())
    except OSError as err:
        raise VideoReadError(f"cannot list frames ({err.strerror}): {folder}") from None
    return sorted(p for p in entries if p.suffix.lower() in FRAME_EXTENSIONS and not p.name.startswith("."))


def _read_folder(folder: Path) -> Iterator[tuple[str, np.ndarray]]:
    for path in frame_files(folder):
        try:
            yield path.stem, load_image(path)
        except ImageReadError as err:
            raise VideoReadError(f"unreadable frame: {err}") from None


def _read_video(path: str) -> Iterator[tuple[str, np.ndarray]]:
    try:
        import av

        container = av.open(path)
    except Exception:  # PyAV missing or cannot demux it: let OpenCV try
        yield from _read_video_cv2(path)
        return
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            yield f"{i:05d}", frame.to_ndarray(format="rgb24")
    except (IndexError, av.error.FFmpegError) as err:
        raise VideoReadError(f"cannot decode video ({type(err).__name__}: {err}): {path}") from None
    finally:
        container.close()


def _read_video_cv2(path: str) -> Iterator[tuple[str, np.ndarray]]:
    import cv2

    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise VideoReadError(f"cannot open video (neither PyAV nor OpenCV can read it): {path}")
    try:
        i = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            yield f"{i:05d}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            i += 1
    finally:
        cap.release()


def count_video_frames(path: str) -> int:
    """Number of decodable frames of a video file (decodes it; container counts can lie)."""
    return sum(1 for _ in _read_video(path))


def _has_frames(folder: Path) -> bool:
    try:
        return any(p.suffix.lower() in FRAME_EXTENSIONS for p in folder.iterdir())
    except OSError:
        return False


def discover_sequences(spec: str | os.PathLike) -> list[Sequence]:
    """Sequences named by ``spec`` (see the module docstring), sorted by key.

    Raises :class:`UserError` when nothing is found.
    """
    root = Path(spec).expanduser()
    if root.is_file():
        if root.suffix.lower() not in VIDEO_EXTENSIONS:
            raise UserError(f"{spec} is not a video file ({', '.join(VIDEO_EXTENSIONS)}) or a folder")
        return [Sequence(root.stem, str(root.absolute()))]
    if not root.is_dir():
        raise UserError(f"input not found: {spec} (expected a video file or a folder)")
    # DAVIS: <root>/JPEGImages/480p/<seq>; synthetic: <root>/videos/JPEGImages/<seq>.
    for sub in ("JPEGImages/480p", "videos/JPEGImages", "JPEGImages"):
        if (root / sub).is_dir():
            root = root / sub
            break
    if _has_frames(root) and not any(p.is_dir() for p in root.iterdir() if not p.name.startswith(".")):
        return [Sequence(root.name, str(root.absolute()))]
    seqs = []
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            seqs.append(Sequence(p.name, str(p.absolute())))
        elif p.suffix.lower() in VIDEO_EXTENSIONS:
            seqs.append(Sequence(p.stem, str(p.absolute())))
    if not seqs:
        raise UserError(f"no videos or frame folders found in {root}")
    return seqs
