"""Streaming forward/backward flow over a sequence, with an on-disk cache per frame pair.

:func:`stream_motion` reads frames one at a time and keeps only a window of ``2 * max(gaps) + 1``
frames and the flows between them, so memory does not grow with the video length. For each frame
``t`` it yields the forward flows ``t -> t+g`` and the backward flows ``t -> t-g`` for every gap
``g`` (``(1,)`` by default, ``(1, 2)`` optionally) that stays inside the video.

:class:`FlowCache` stores one file per ordered pair, ``<root>/<seq>/<src>_<dst>.npz``
(``np.savez_compressed``, float32, key ``flow``) or ``.flo`` (Middlebury format, readable by
most flow tools). Writes are atomic; an unreadable cache file is recomputed, so an interrupted
run resumes by simply running again.
"""

from __future__ import annotations

import io
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from seg_suite.io.files import atomic_write
from seg_suite.pseudo.motion.video import VideoReadError

FLO_MAGIC = 202021.25  # Middlebury .flo tag (the bytes read "PIEH")


def write_flo(path: str | os.PathLike, flow: np.ndarray) -> None:
    """Write an HxWx2 float32 flow as Middlebury ``.flo`` atomically."""
    h, w = flow.shape[:2]
    with atomic_write(path, "wb") as fh:
        np.array([FLO_MAGIC], "<f4").tofile(fh)
        np.array([w, h], "<i4").tofile(fh)
        np.ascontiguousarray(flow, dtype="<f4").tofile(fh)


def read_flo(path: str | os.PathLike) -> np.ndarray:
    with open(path, "rb") as fh:
        magic = np.fromfile(fh, "<f4", 1)
        if magic.size != 1 or magic[0] != np.float32(FLO_MAGIC):
            raise ValueError(f"not a .flo file: {path}")
        w, h = np.fromfile(fh, "<i4", 2)
        data = np.fromfile(fh, "<f4", int(w) * int(h) * 2)
    if data.size != int(w) * int(h) * 2:
        raise ValueError(f"truncated .flo file: {path}")
    return data.reshape(int(h), int(w), 2)


class FlowCache:
    """Per-pair flow files under ``root/<seq_key>/``; ``fmt`` is ``npz`` or ``flo``."""

    def __init__(self, root: str | os.PathLike, fmt: str = "npz"):
        if fmt not in ("npz", "flo"):
            raise ValueError(f"flow cache format must be npz or flo, not {fmt!r}")
        self.root = Path(root)
        self.fmt = fmt
        self.hits = 0
        self.misses = 0

    def path(self, seq_key: str, src: str, dst: str) -> Path:
        return self.root / seq_key / f"{src}_{dst}.{self.fmt}"

    def load(self, seq_key: str, src: str, dst: str) -> np.ndarray | None:
        p = self.path(seq_key, src, dst)
        if not p.is_file():
            return None
        try:
            if self.fmt == "flo":
                return read_flo(p)
            with np.load(p) as z:
                return z["flow"].astype(np.float32, copy=False)
        except (OSError, ValueError, KeyError, EOFError):
            return None  # torn or foreign file: recompute it

    def save(self, seq_key: str, src: str, dst: str, flow: np.ndarray) -> None:
        p = self.path(seq_key, src, dst)
        if self.fmt == "flo":
            write_flo(p, flow)
            return
        buf = io.BytesIO()
        np.savez_compressed(buf, flow=flow.astype(np.float32, copy=False))
        with atomic_write(p, "wb") as fh:
            fh.write(buf.getvalue())

    def get_or_compute(self, seq_key: str, src: str, dst: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        flow = self.load(seq_key, src, dst)
        if flow is not None:
            self.hits += 1
            return flow
        self.misses += 1
        flow = compute()
        self.save(seq_key, src, dst, flow)
        return flow


@dataclass
class FrameMotion:
    """One frame and its flows. ``forward[g]``: HxWx2 flow t -> t+g; ``backward[g]``: t -> t-g;
    ``neighbours[o]``: the frame t+o for o = +-1 when it exists (for photometric checks)."""

    index: int
    name: str
    frame: np.ndarray
    forward: dict[int, np.ndarray] = field(default_factory=dict)
    backward: dict[int, np.ndarray] = field(default_factory=dict)
    neighbours: dict[int, np.ndarray] = field(default_factory=dict)


def stream_motion(
    frames: Iterable[tuple[str, np.ndarray]],
    flow_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    gaps: tuple[int, ...] = (1,),
    backward: bool = True,
    cache: FlowCache | None = None,
    seq_key: str = "",
) -> Iterator[FrameMotion]:
    """Yield a :class:`FrameMotion` per frame, in order, lagging the reader by ``max(gaps)`` frames.

    Raises :class:`VideoReadError` for a sequence with fewer than two frames (no motion exists).
    """
    gaps = tuple(sorted(set(int(g) for g in gaps)))
    if not gaps or gaps[0] < 1:
        raise ValueError(f"gaps must be positive integers, got {gaps}")
    gmax = gaps[-1]
    window: deque[tuple[int, str, np.ndarray]] = deque()
    flows: dict[tuple[int, int], np.ndarray] = {}

    def flow(i, j):
        (_, ni, fi), (_, nj, fj) = by_index[i], by_index[j]
        if cache is None:
            return flow_fn(fi, fj)
        return cache.get_or_compute(seq_key, ni, nj, lambda: flow_fn(fi, fj))

    def emit(t):
        _, name, frame = by_index[t]
        fm = FrameMotion(t, name, frame)
        for g in gaps:
            if (t, t + g) in flows:
                fm.forward[g] = flows[(t, t + g)]
            if (t, t - g) in flows:
                fm.backward[g] = flows[(t, t - g)]
        for o in (-1, 1):
            if t + o in by_index:
                fm.neighbours[o] = by_index[t + o][2]
        return fm

    by_index: dict[int, tuple[int, str, np.ndarray]] = {}
    n = 0
    next_emit = 0
    for name, frame in frames:
        j = n
        n += 1
        window.append((j, name, frame))
        by_index[j] = (j, name, frame)
        for g in gaps:
            i = j - g
            if i >= 0:
                flows[(i, j)] = flow(i, j)
                if backward:
                    flows[(j, i)] = flow(j, i)
        while next_emit <= j - gmax:
            yield emit(next_emit)
            next_emit += 1
            # Frames older than next_emit - gmax are no longer an endpoint of any pending flow.
            while window and window[0][0] < next_emit - gmax:
                old = window.popleft()[0]
                by_index.pop(old, None)
                for key in [k for k in flows if old in k]:
                    del flows[key]
    if n < 2:
        raise VideoReadError(f"sequence has {n} frame{'s' if n != 1 else ''}; motion needs at least 2")
    while next_emit < n:
        yield emit(next_emit)
        next_emit += 1
