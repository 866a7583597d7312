"""One sequence in, per-frame motion masks out: flow streaming + grouping (+ optional dense CRF).

:func:`segment_sequence` is the pure per-video function behind ``seg-suite motion-masks``; the
dataset-level driver (sharding, resume, failures) is :class:`seg_suite.pseudo.motion.job.MotionMasksJob`
on the shared runner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from seg_suite.params import INT_SET, Params, Rule, one_of, param
from seg_suite.pseudo.motion.flow import DIS_PRESETS, FLOW_BACKENDS
from seg_suite.pseudo.motion.flow_cache import FlowCache, stream_motion
from seg_suite.pseudo.motion.grouping import GroupingParams, MotionGrouper, split_components
from seg_suite.pseudo.motion.video import Sequence


@dataclass(frozen=True)
class MotionMaskParams(Params):
    """Everything that changes the masks (recorded in the output's info)."""

    flow_backend: str = param("dis", "flow backend", "OpenCV DIS, no weights", one_of(*FLOW_BACKENDS))
    flow_preset: str = param("fast", "DIS preset", "measured the best speed/quality at 854x480 on 2 cores, see "
                                                   "seg_suite/pseudo/motion/flow.py", one_of(*DIS_PRESETS))
    gaps: tuple[int, ...] = param((1,), "frame gaps at which forward and backward flow are computed (and cached); "
                                        "grouping uses gap 1", None,
                                  Rule("positive integers including 1", lambda g: min(g) >= 1 and 1 in g),
                                  INT_SET, "1[,2]")
    backward: bool = param(True, "also use flow t -> t-1", "both directions, as RCF does")
    crf: bool = param(False, "refine each frame's mask with a dense CRF on the image (seg_suite.pseudo.crf, "
                             "CutLER's parameters); sharper masks, ~0.2-0.4 s per frame")
    grouping: GroupingParams = field(default_factory=GroupingParams)


@dataclass
class FrameMasks:
    """Per-frame result: ``mask`` HxW bool foreground, ``instances`` [(HxW bool, score)]."""

    index: int
    name: str
    height: int
    width: int
    mask: np.ndarray
    instances: list[tuple[np.ndarray, float]]


def segment_sequence(
    seq: Sequence,
    flow_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    params: MotionMaskParams,
    cache: FlowCache | None = None,
) -> Iterator[FrameMasks]:
    """Stream ``seq`` and yield one :class:`FrameMasks` per frame, in order.

    Raises :class:`~seg_suite.pseudo.motion.video.VideoReadError` for an unusable sequence
    (unreadable or variable-size frames, fewer than 2 frames). A static video yields empty masks.
    Flows at gap 1 drive the grouping; larger gaps are computed (and cached) for consumers such
    as RCF training, which samples pairs at +-2 as well.
    """
    grouper = MotionGrouper(params.grouping)
    crf = None
    if params.crf:
        from seg_suite.pseudo.crf import densecrf as crf
    for fm in stream_motion(seq.frames(), flow_fn, params.gaps, params.backward, cache, seq.key):
        seg = grouper.segment(fm.forward.get(1), fm.backward.get(1), fm.frame,
                              fm.neighbours.get(1), fm.neighbours.get(-1))
        mask, instances = seg.mask, seg.instances
        if crf is not None and mask.any():
            import cv2

            H, W = mask.shape
            prob_full = cv2.resize(seg.prob.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
            mask, instances = split_components(crf(fm.frame, seg.prob), prob_full, params.grouping.min_area)
        h, w = fm.frame.shape[:2]
        yield FrameMasks(fm.index, fm.name, h, w, mask, instances)
