"""A detectron2 checkpointer that never runs code from a checkpoint file.

detectron2's ``DetectionCheckpointer`` reads ``.pkl`` files with plain ``pickle.load`` and
``.pth`` files with ``torch.load`` (full unpickling). ``MaskFormerCheckpointer`` reads both through
:mod:`seg_suite.io.checkpoints` (a restricted unpickler admitting only numpy arrays and plain
containers; ``torch.load(weights_only=True)``) and keeps everything else of detectron2's
behaviour: model-zoo ``.pkl`` layouts (``{"model": ..., "__author__": ...}``), Caffe2/Detectron1
blobs with their name conversion for the ResNet backbone (``matching_heuristics``), and
detectron2's own training checkpoints for ``--resume``.

Remote paths (``detectron2://``, ``http(s)://``) cannot be downloaded here; they raise
:class:`~seg_suite.errors.MissingWeightsError` naming the file to fetch.

Resuming (``resume_or_load(..., resume=True)``) starts from the newest checkpoint in the output
folder that loads: the file named by ``last_checkpoint``, then ``model_final.pth``, then
``model_NNNNNNN.pth`` from the highest iteration down. A damaged file (truncated by a kill in the
middle of a non-atomic save, e.g. by another tool, zeroed by a full disk) is skipped with one
warning line naming it; training then continues from the older state and overwrites it.
"""

import logging
import os
import re
from typing import Any, Dict, List, Optional

from detectron2.checkpoint import DetectionCheckpointer

from seg_suite.errors import MissingWeightsError, UserError
from seg_suite.io.checkpoints import load_checkpoint
from seg_suite.io.paths import PathEscapeError, resolve_under

_PERIODIC = re.compile(r"^model_(\d+)\.pth$")

_REMOTE_PREFIXES = ("detectron2://", "http://", "https://", "catalog://", "manifold://")
_D2_MODEL_ZOO = "https://dl.fbaipublicfiles.com/detectron2/"


def _local_path_or_error(path: str) -> str:
    if path.startswith(_REMOTE_PREFIXES):
        url = _D2_MODEL_ZOO + path[len("detectron2://"):] if path.startswith("detectron2://") else path
        raise MissingWeightsError(
            f"checkpoint {path} is remote and nothing can be downloaded here: download {url} "
            f"elsewhere and set MODEL.WEIGHTS to the local file")
    expanded = os.path.expanduser(path)
    if not os.path.isfile(expanded):
        raise MissingWeightsError(f"checkpoint file not found: {path} (MODEL.WEIGHTS)")
    return expanded


def resume_candidates(save_dir: str) -> List[str]:
    """The checkpoints in ``save_dir`` a resume may start from, most preferred first: the file named
    by ``last_checkpoint``, ``model_final.pth``, then ``model_NNNNNNN.pth`` newest first."""
    if not save_dir or not os.path.isdir(save_dir):
        return []
    names = []
    tag = os.path.join(save_dir, "last_checkpoint")
    if os.path.isfile(tag):
        with open(tag, encoding="utf-8", errors="replace") as fh:
            named = fh.read().strip()
        try:
            names.append(str(resolve_under(save_dir, named, "last_checkpoint entry")))
        except PathEscapeError as err:
            logging.getLogger(__name__).warning("ignored %s: %s", tag, err)
    files = os.listdir(save_dir)
    if "model_final.pth" in files:
        names.append(os.path.join(save_dir, "model_final.pth"))
    periodic = sorted((int(m.group(1)), f) for f in files if (m := _PERIODIC.match(f)))
    names += [os.path.join(save_dir, f) for _, f in reversed(periodic)]
    unique = dict.fromkeys(os.path.normpath(n) for n in names)
    return [n for n in unique if os.path.isfile(n)]


class MaskFormerCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` with safe file loading and resuming past damaged files; same
    constructor and ``load``/``save`` API.

    After ``resume_or_load``, :attr:`resumed_from` is the checkpoint training continues from
    (None: none, the run starts from ``MODEL.WEIGHTS``) and :attr:`skipped` lists the damaged
    files passed over.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.resumed_from: Optional[str] = None
        self.skipped: List[str] = []
        self._read_ahead: Optional[tuple] = None

    def load(self, path: str, *args, **kwargs) -> Dict[str, Any]:
        if path:
            path = _local_path_or_error(path)
        return super().load(path, *args, **kwargs)

    def resume_candidates(self) -> List[str]:
        """The checkpoints of ``save_dir`` a resume may start from (:func:`resume_candidates`)."""
        return resume_candidates(self.save_dir)

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """With ``resume``, load the newest checkpoint of ``save_dir`` that loads (model and every
        checkpointable: optimizer, scheduler, iteration); otherwise, or when ``save_dir`` holds
        none, only the model weights of ``path``.

        Raises:
            UserError: ``save_dir`` holds checkpoints and none of them loads.
        """
        self.resumed_from, self.skipped = None, []
        if not resume:
            return self.load(path, checkpointables=[])
        candidates = self.resume_candidates()
        if not candidates:
            return self.load(path, checkpointables=[])
        for candidate in candidates:
            try:
                data = self._load_file(candidate)
            except UserError as err:
                self.skipped.append(candidate)
                self.logger.warning("skipped a damaged checkpoint: %s; trying an older one",
                                    str(err).splitlines()[0])
                continue
            self._read_ahead = (candidate, data)
            try:
                loaded = self.load(candidate)
            finally:
                self._read_ahead = None
            self.resumed_from = candidate
            return loaded
        names = ", ".join(map(os.path.basename, candidates))
        raise UserError(f"none of the checkpoints in {self.save_dir} loads ({names} are damaged): delete them "
                        f"to train from the start, or resume from a copy")

    def _load_file(self, filename: str) -> Dict[str, Any]:
        if self._read_ahead is not None and self._read_ahead[0] == filename:
            # Already read (and found sound) by resume_or_load; do not read a large file twice.
            return self._read_ahead[1]
        data = load_checkpoint(filename)
        if not isinstance(data, dict):
            raise UserError(f"cannot load {filename}: it holds a {type(data).__name__}, not a dict")
        if filename.endswith((".pkl", ".pickle")):
            if "model" in data and "__author__" in data:
                # detectron2 model-zoo layout (e.g. the official Mask2Former and R-50.pkl files)
                self.logger.info("Reading a file from '%s'", data["__author__"])
                return data
            # Caffe2 / Detectron1 layout: detection models keep weights under "blobs".
            blobs = data.get("blobs", data)
            blobs = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
            return {"model": blobs, "__author__": "Caffe2", "matching_heuristics": True}
        if "model" not in data:
            data = {"model": data}
        return data
