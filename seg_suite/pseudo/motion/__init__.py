"""Motion pseudo-masks from unlabeled video: video input, optical flow (+ cache), weight-free
parametric motion grouping, the RCF-style learned segmenter and its export. No detectron2."""

from seg_suite.pseudo.motion.flow import FLOW_BACKENDS, build_flow
from seg_suite.pseudo.motion.flow_cache import FlowCache, stream_motion
from seg_suite.pseudo.motion.grouping import GroupingParams, MotionGrouper
from seg_suite.pseudo.motion.pipeline import MotionMaskParams, segment_sequence
from seg_suite.pseudo.motion.video import Sequence, VideoReadError, discover_sequences

__all__ = [
    "FLOW_BACKENDS", "FlowCache", "GroupingParams", "MotionGrouper", "MotionMaskParams", "Sequence",
    "VideoReadError", "build_flow", "discover_sequences", "segment_sequence", "stream_motion",
]
