"""The trained RCF segmenter: its config, its checkpoint file and per-frame inference.

Shared by training (:mod:`seg_suite.pseudo.motion.rcf_train`, ``seg-suite train-motion``), which
writes checkpoints, and the ``rcf`` method of ``seg-suite motion-masks``
(:mod:`seg_suite.pseudo.motion.job`), which reads them, so neither command's module imports the other.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch

from seg_suite.errors import MissingWeightsError, UserError
from seg_suite.io.files import atomic_write
from seg_suite.pseudo.motion.rcf_config import RCFConfig  # noqa: F401 - part of this module's API
from seg_suite.pseudo.motion.rcf_model import RCFNet
from seg_suite.pseudo.motion.video import Sequence, VideoReadError


def resize_frame(frame: np.ndarray, size) -> np.ndarray:
    """HxWx3 frame -> the segmenter's input size ``(h, w)`` (area interpolation)."""
    return cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)


# ------------------------------------------------------------------------------ checkpoints
def save_checkpoint(path: str | os.PathLike, model: RCFNet, cfg: RCFConfig, info: dict) -> None:
    """Atomic ``torch.save`` of {"model", "config", "object_channel", "maa_ncut"} (weights_only-loadable)."""
    state = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": cfg.to_dict(),
        "object_channel": int(info["object_channel"]),
        "maa_ncut": [float(c) for c in info.get("maa_ncut", [])],
    }
    with atomic_write(path, "wb") as fh:
        torch.save(state, fh)


# Bounds on the sizes a checkpoint's config may ask for: the network is built from them before its
# weights are checked, so an absurd value must not get to allocate memory first.
_MAX_MASKS, _MAX_HEAD_CHANNELS, _MAX_SIDE = 64, 4096, 8192


def _checkpoint_config(raw, path: Path) -> RCFConfig:
    """The RCFConfig recorded in a checkpoint, or a one-line UserError."""
    not_rcf = f"{path} is not a seg-suite RCF checkpoint"
    try:
        cfg = RCFConfig.from_dict(raw)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{not_rcf} (its config is unusable: {type(err).__name__}: {err})") from None
    ints = (cfg.num_masks, cfg.head_channels, *cfg.size)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints) or len(cfg.size) != 2 \
            or not 2 <= cfg.num_masks <= _MAX_MASKS or not 1 <= cfg.head_channels <= _MAX_HEAD_CHANNELS \
            or not all(32 <= v <= _MAX_SIDE for v in cfg.size) \
            or not isinstance(cfg.eval_threshold, (int, float)):
        raise UserError(f"{not_rcf} (its config has out-of-range sizes: num_masks {cfg.num_masks!r}, "
                        f"head_channels {cfg.head_channels!r}, size {cfg.size!r})")
    return cfg


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> tuple[RCFNet, RCFConfig, int]:
    """The segmenter, its config and its object channel from a ``save_checkpoint`` file.

    The file is read by :func:`seg_suite.io.checkpoints.load_checkpoint` (no code from it runs);
    anything that is not what ``save_checkpoint`` writes is a one-line UserError.
    """
    from seg_suite.io.checkpoints import load_checkpoint as read_checkpoint
    from seg_suite.pseudo.motion.weights import load_weights_into

    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"RCF checkpoint not found: {path} (train one with `seg-suite train-motion`)")
    state = read_checkpoint(path)
    not_rcf = f"{path} is not a seg-suite RCF checkpoint"
    if not isinstance(state, dict) or not {"model", "config", "object_channel"} <= set(state):
        found = sorted(map(str, state))[:6] if isinstance(state, dict) else type(state).__name__
        raise UserError(f"{not_rcf} (expected model, config and object_channel; found {found}); "
                        f"write one with `seg-suite train-motion`")
    if not isinstance(state["model"], dict) or not isinstance(state["config"], dict):
        raise UserError(f"{not_rcf} (its model or config is not a dict)")
    cfg = _checkpoint_config(state["config"], path)
    channel = state["object_channel"]
    if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < cfg.num_masks:
        raise UserError(f"{not_rcf} (object_channel {channel!r} is not one of its {cfg.num_masks} masks)")
    model = RCFNet(cfg.backbone, cfg.num_masks, cfg.head_channels)
    load_weights_into(model, state["model"], path, f"an RCF {cfg.backbone} segmenter with {cfg.num_masks} masks "
                                                   f"(as its config says)")
    return model.to(device).eval(), cfg, channel


# ------------------------------------------------------------------------------ inference
@torch.no_grad()
def predict_sequence(model: RCFNet, cfg: RCFConfig, object_channel: int, seq: Sequence, device: str = "cpu"):
    """Yield ``(index, name, mask HxW bool, prob HxW float32)`` per frame at the frame's own size.

    Inference needs no flow: one frame in, its object channel thresholded at ``cfg.eval_threshold``.
    """
    model.eval()
    n = 0
    for i, (name, frame) in enumerate(seq.frames()):
        n += 1
        x = torch.from_numpy(resize_frame(frame, cfg.size)).permute(2, 0, 1)[None].to(device)
        prob = model.predict_masks(model.normalize(x))[0, object_channel].cpu().numpy()
        H, W = frame.shape[:2]
        full = cv2.resize(prob.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
        yield i, name, full > cfg.eval_threshold, full
    if n == 0:
        raise VideoReadError(f"no frames in {seq.path}")
