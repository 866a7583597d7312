"""``motion-masks`` on the shared dataset runner: one work item = one video sequence.

Each sequence's record holds one COCO image entry per frame and that frame's annotations (one per
connected foreground component, category 1 "object", score = mean foreground probability), so the
final file is a COCO instance file usable for training. ``file_name`` is ``<seq>/<frame file>``,
relative to the folder holding the sequence folders (e.g. ``DAVIS/JPEGImages/480p``); frames of
video *files* are written as JPEG (quality 95) under ``frames_dir/<seq>/`` and named relative to it.
Beside it, per-frame binary masks (0/255, the DAVIS-2016 encoding, so ``seg-suite evaluate-video``
reads them directly) go to ``masks_dir/<seq>/<frame>.png``; every file is written atomically and a
resumed run rewrites the masks of the sequences it redoes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from seg_suite.io.files import atomic_write, atomic_write_png
from seg_suite.pseudo.inputs import WorkItem
from seg_suite.pseudo.jobs import CocoMaskJob, ItemError
from seg_suite.pseudo.model_job import ModelJob
from seg_suite.pseudo.motion.flow import build_flow
from seg_suite.pseudo.motion.flow_cache import FlowCache
from seg_suite.pseudo.motion.pipeline import MotionMaskParams, segment_sequence
from seg_suite.pseudo.motion.video import Sequence, VideoReadError, frame_files, discover_sequences


def sequence_items(spec) -> list[WorkItem]:
    """Runner work items for the sequences of ``spec`` (key = sequence name)."""
    from seg_suite.errors import UserError

    seqs = discover_sequences(spec)
    keys = [s.key for s in seqs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise UserError(f"two inputs give the same sequence name ({', '.join(dup)}); rename one")
    return [WorkItem(s.key, s.path) for s in seqs]


class MotionMasksJob(ModelJob, CocoMaskJob):
    name: ClassVar[str] = "motion_masks"
    unit: ClassVar[str] = "video"
    heavy_attrs: ClassVar[tuple[str, ...]] = ("_flow",)

    def __init__(self, params: MotionMaskParams | None = None, masks_dir: str | None = None,
                 frames_dir: str | None = None, flow_cache: str | None = None, flow_cache_format: str = "npz",
                 flow_weights: str | None = None, device: str = "cpu"):
        self.motion = params or MotionMaskParams()
        self.masks_dir = masks_dir
        self.frames_dir = frames_dir
        self.flow_cache = flow_cache
        self.flow_cache_format = flow_cache_format
        self.flow_weights = flow_weights
        self.device = device
        self._flow = None

    def params(self) -> dict:
        return {"motion": self.motion.to_dict()}

    @classmethod
    def from_params(cls, params: dict) -> "MotionMasksJob":
        return cls(MotionMaskParams.from_dict(params["motion"]))

    def runtime_info(self) -> dict:
        return {"device": self.device, "flow_cache": self.flow_cache}

    def output_folders(self, items: list[WorkItem]) -> list[Path]:
        folders = [] if self.masks_dir is None else [Path(self.masks_dir)]
        # Frames are exported for video files only; a run over frame folders creates no frames folder.
        if self.frames_dir is not None and any(Path(item.path).is_file() for item in items):
            folders.append(Path(self.frames_dir))
        return folders

    def _flow_fn(self):
        if self._flow is None:
            m = self.motion
            self._flow = build_flow(m.flow_backend, m.flow_preset, self.flow_weights, self.device)
        return self._flow

    def prepare(self, item: WorkItem) -> Any:
        # Frames are streamed in process(): a video never sits in memory or in a worker queue.
        path = Path(item.path)
        if not path.exists():
            raise ItemError(f"not found: {path}")
        if path.is_dir() and len(frame_files(path)) == 0:
            raise ItemError(f"no frame images in {path}")
        return item

    def process(self, batch: list[WorkItem]) -> list[dict | ItemError]:
        return [self._one(item) for item in batch]

    def frame_masks(self, seq: Sequence):
        """Yield FrameMasks for ``seq`` (the weight-free grouping; RCFMasksJob overrides this)."""
        cache = FlowCache(self.flow_cache, self.flow_cache_format) if self.flow_cache else None
        yield from segment_sequence(seq, self._flow_fn(), self.motion, cache)

    def _one(self, item: WorkItem) -> dict | ItemError:
        seq = Sequence(item.key, item.path)
        names = {}
        if not seq.is_file:
            names = {p.stem: p.name for p in frame_files(Path(seq.path))}
        images, annotations = [], []
        try:
            for fr in self.frame_masks(seq):
                file_name = f"{seq.key}/{names.get(fr.name, fr.name + '.jpg')}"
                images.append({"file_name": file_name, "width": fr.width, "height": fr.height,
                               "sequence": seq.key, "frame_index": fr.index})
                annotations.append([self.mask_annotation(m, s) for m, s in fr.instances])
                if self.masks_dir is not None:
                    atomic_write_png(Path(self.masks_dir) / seq.key / f"{fr.name}.png",
                                     fr.mask.astype(np.uint8) * 255)
            if seq.is_file and self.frames_dir is not None:
                self.export_video_frames(seq)  # a second decoding pass; frames are never held
        except VideoReadError as err:
            return ItemError(str(err))
        return {"images": images, "annotations": annotations}

    def export_video_frames(self, seq: Sequence) -> None:
        """Write the frames of a video file as JPEGs under ``frames_dir/<seq>/`` (atomic)."""
        from PIL import Image

        for name, frame in seq.frames():
            with atomic_write(Path(self.frames_dir) / seq.key / f"{name}.jpg", "wb") as fh:
                Image.fromarray(frame).save(fh, format="JPEG", quality=95)


class RCFMasksJob(MotionMasksJob):
    """Export a trained RCF segmenter's object channel as pseudo-masks (same outputs as above).

    Components smaller than ``min_area`` of the frame are dropped, as in the weight-free job.
    """

    name: ClassVar[str] = "rcf_masks"
    heavy_attrs: ClassVar[tuple[str, ...]] = ("_flow", "_model")

    def __init__(self, checkpoint: str, min_area: float = 0.002, masks_dir=None, frames_dir=None,
                 device: str = "cpu", checkpoint_sha256: str | None = None):
        super().__init__(None, masks_dir=masks_dir, frames_dir=frames_dir, device=device)
        self.checkpoint = checkpoint
        self.min_area = min_area
        self.checkpoint_sha256 = checkpoint_sha256 or self._checkpoint_sha256(checkpoint)
        self._model = None

    def _checkpoint_sha256(self, path) -> str:
        """Digest of the checkpoint, or "" when there is none to read (a job rebuilt from its params)."""
        if not path or not Path(path).is_file():
            return ""
        return self.weights_file_record(path)["sha256"]

    def params(self) -> dict:
        return {"rcf_checkpoint_sha256": self.checkpoint_sha256, "min_area": self.min_area}

    @classmethod
    def from_params(cls, params: dict) -> "RCFMasksJob":
        return cls("", params["min_area"], checkpoint_sha256=params["rcf_checkpoint_sha256"])

    def load(self) -> "RCFMasksJob":
        from seg_suite.pseudo.motion.rcf_segmenter import load_checkpoint

        self._model = load_checkpoint(self.checkpoint, self.model_device())
        return self

    def frame_masks(self, seq: Sequence):
        from seg_suite.pseudo.motion.grouping import split_components
        from seg_suite.pseudo.motion.pipeline import FrameMasks
        from seg_suite.pseudo.motion.rcf_segmenter import predict_sequence

        if self._model is None:
            self.load()
        model, cfg, channel = self._model
        for i, name, mask, prob in predict_sequence(model, cfg, channel, seq, self.device):
            mask, inst = split_components(mask, prob, self.min_area)
            yield FrameMasks(i, name, mask.shape[0], mask.shape[1], mask, inst)
