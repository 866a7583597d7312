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
"""

import os
from typing import Any, Dict

from detectron2.checkpoint import DetectionCheckpointer

from seg_suite.errors import MissingWeightsError, UserError
from seg_suite.io.checkpoints import load_checkpoint

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


class MaskFormerCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` with safe file loading; same constructor and ``load``/``save`` API."""

    def load(self, path: str, *args, **kwargs) -> Dict[str, Any]:
        if path:
            path = _local_path_or_error(path)
        return super().load(path, *args, **kwargs)

    def _load_file(self, filename: str) -> Dict[str, Any]:
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
