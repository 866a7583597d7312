"""Optical flow backends: OpenCV DIS (default), Farneback, RAFT (torchvision).

Every backend maps two HxWx3 uint8 RGB frames to an HxWx2 float32 flow ``(dx, dy)`` from the
first frame to the second: ``frame1[y, x] ~ frame2[y + dy, x + dx]``.

* ``dis``: OpenCV's Dense Inverse Search (Kroeger et al. 2016), no weights, presets
  ``ultrafast|fast|medium`` (OpenCV's own presets). Our default preset is ``fast``, not
  OpenCV's ``medium``: at 854x480 on 2 cores it costs 6-13 ms per pair against 36-54 ms for
  ``medium`` (measured; see tools/benchmark_motion.py), which the 20 frames/s end-to-end target
  needs; ``--flow-preset medium`` gives finer flow.
* ``farneback``: ``cv2.calcOpticalFlowFarneback`` with the parameters of OpenCV's tutorial
  (pyr_scale 0.5, levels 3, winsize 15, iterations 3, poly_n 5, poly_sigma 1.2).
* ``raft_small`` / ``raft_large``: torchvision's RAFT (Teed & Deng 2020). Weights come from a
  local file (torchvision's ``Raft_*_Weights`` state dict, read by
  :func:`seg_suite.io.checkpoints.load_state_dict`, which runs no code from it); nothing is downloaded. ``random_init=True`` builds an untrained network (tests only).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from seg_suite.errors import MissingWeightsError, UserError

FLOW_BACKENDS = ("dis", "farneback", "raft_small", "raft_large")
DIS_PRESETS = ("ultrafast", "fast", "medium")


def _gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    return frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


class DISFlow:
    """OpenCV DIS optical flow. Not thread-safe: one instance per worker."""

    name = "dis"

    def __init__(self, preset: str = "fast"):
        import cv2

        if preset not in DIS_PRESETS:
            raise UserError(f"unknown DIS preset {preset!r}; choose one of {', '.join(DIS_PRESETS)}")
        self.preset = preset
        self._dis = cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{preset.upper()}"))

    def params(self) -> dict:
        return {"backend": self.name, "preset": self.preset}

    def __call__(self, frame1: np.ndarray, frame2: np.ndarray) -> np.ndarray:
        return self._dis.calc(_gray(frame1), _gray(frame2), None).astype(np.float32, copy=False)


class FarnebackFlow:
    """OpenCV Farneback dense flow (OpenCV tutorial parameters)."""

    name = "farneback"

    def __init__(self, pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2):
        self.kw = dict(pyr_scale=pyr_scale, levels=levels, winsize=winsize, iterations=iterations,
                       poly_n=poly_n, poly_sigma=poly_sigma)

    def params(self) -> dict:
        return {"backend": self.name, **self.kw}

    def __call__(self, frame1: np.ndarray, frame2: np.ndarray) -> np.ndarray:
        import cv2

        k = self.kw
        flow = cv2.calcOpticalFlowFarneback(
            _gray(frame1), _gray(frame2), None, k["pyr_scale"], k["levels"], k["winsize"],
            k["iterations"], k["poly_n"], k["poly_sigma"], 0,
        )
        return flow.astype(np.float32, copy=False)


class RAFTFlow:
    """torchvision RAFT. Frames are padded (replicate) to a multiple of 8 and at least 128 px, as
    RAFT's stride and correlation pyramid need, and the flow is cropped back.

    ``num_flow_updates`` defaults to 12, torchvision's default for both variants.
    """

    def __init__(self, variant: str = "raft_small", weights: str | os.PathLike | None = None,
                 device: str = "cpu", random_init: bool = False, num_flow_updates: int = 12):
        from torchvision.models import optical_flow

        if variant not in ("raft_small", "raft_large"):
            raise UserError(f"unknown RAFT variant {variant!r} (raft_small or raft_large)")
        from seg_suite.devices import resolve_device

        self.name = variant
        self.device = resolve_device(device)
        self.num_flow_updates = num_flow_updates
        self.weights = None if weights is None else str(weights)
        model = getattr(optical_flow, variant)(weights=None, progress=False)
        if weights is not None:
            path = Path(weights)
            if not path.is_file():
                raise MissingWeightsError(
                    f"RAFT weights not found: {path} (need torchvision's {variant} state dict, e.g. "
                    f"{'raft_small_C_T_V2-01064c6d.pth' if variant == 'raft_small' else 'raft_large_C_T_SKHT_V2-ff5fadd5.pth'}; "
                    "nothing can be downloaded here)"
                )
            from seg_suite.io.checkpoints import load_state_dict
            from seg_suite.pseudo.motion.weights import load_weights_into

            state = load_state_dict(path, nesting=("state_dict", "model"))
            load_weights_into(model, state, path, f"a torchvision {variant} state dict")
        elif not random_init:
            raise MissingWeightsError(
                f"{variant} needs --flow-weights PATH (a local torchvision state dict); "
                "use the 'dis' backend to run without weights"
            )
        self.model = model.to(self.device).eval()

    def params(self) -> dict:
        return {"backend": self.name, "weights": self.weights, "num_flow_updates": self.num_flow_updates}

    def _prep(self, frame: np.ndarray):
        import torch

        t = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float()
        return (t / 127.5 - 1.0)[None].to(self.device)  # RAFT expects [-1, 1]

    def __call__(self, frame1: np.ndarray, frame2: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        h, w = frame1.shape[:2]
        # RAFT's correlation pyramid needs >= 128 px per side and multiples of 8.
        ph, pw = max(128, h + (-h) % 8) - h, max(128, w + (-w) % 8) - w
        a, b = self._prep(frame1), self._prep(frame2)
        if ph or pw:
            a = F.pad(a, (0, pw, 0, ph), mode="replicate")
            b = F.pad(b, (0, pw, 0, ph), mode="replicate")
        with torch.inference_mode():
            flow = self.model(a, b, num_flow_updates=self.num_flow_updates)[-1]
        return flow[0, :, :h, :w].permute(1, 2, 0).float().cpu().numpy()


def build_flow(backend: str = "dis", preset: str = "fast", weights=None, device: str = "cpu",
               random_init: bool = False):
    """Factory over :data:`FLOW_BACKENDS`; raises UserError for an unknown name."""
    if backend == "dis":
        return DISFlow(preset)
    if backend == "farneback":
        return FarnebackFlow()
    if backend in ("raft_small", "raft_large"):
        return RAFTFlow(backend, weights=weights, device=device, random_init=random_init)
    raise UserError(f"unknown flow backend {backend!r}; choose one of {', '.join(FLOW_BACKENDS)}")
