"""The interface every feature backbone offers (ViTs and the weight-free stand-in).

A FeatureExtractor maps a normalized image batch to dense patch features:

    ext = build_extractor("dino_vitb8")
    x = ext.normalize(images)                    # uint8 or [0,1] float [B,3,H,W] -> normalized
    feats = ext(x, facets=("k",))["k"]           # [B, H//8, W//8, 768]

Facets (names as in DINO's and CutLER's ``feat`` option):
    "k", "q", "v"  the last block's attention key/query/value, heads concatenated (C = embed_dim)
    "token"        the last block's output tokens after the final LayerNorm
    "cls"          the class token after the final LayerNorm, [B, C] (no spatial grid)
Only patch tokens are returned on the grid; the class token is dropped from it.

An extractor's ``precision`` (``fp32``, ``bf16``, ``fp16``; see :mod:`seg_suite.features.precision`)
sets the autocast of its forward; the features it returns are float32 whatever it is.
"""

from __future__ import annotations

import abc

import torch
from torch import nn

from seg_suite.errors import UserError
from seg_suite.features.precision import DEFAULT_PRECISION, autocast, to_float32

# ImageNet statistics; DINO and DINOv2 both normalize with these (dino/main_dino.py, CutLER maskcut.py).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

GRID_FACETS = ("k", "q", "v", "token")
FACETS = GRID_FACETS + ("cls",)
ATTENTION_MODES = ("sdpa", "naive")


def check_facets(facets) -> tuple[str, ...]:
    """Validate a facet tuple (a single string is accepted too)."""
    facets = (facets,) if isinstance(facets, str) else tuple(facets)
    bad = [f for f in facets if f not in FACETS]
    if bad or not facets:
        raise UserError(f"unknown feature facet(s) {bad or '(none given)'}; choose from {', '.join(FACETS)}")
    return facets


class FeatureExtractor(nn.Module, abc.ABC):
    """Base class: a frozen backbone that returns patch features on a grid.

    Attributes:
        name: backbone name (a key of BACKBONES, or "handcrafted").
        patch_size: side of one patch in pixels; the grid is (H // patch_size, W // patch_size).
        embed_dim: channels C of every grid facet.
        mean, std: the per-channel normalization the backbone expects (RGB, [0,1] scale).
        precision: the autocast of :meth:`forward` (set by ``build_extractor``, which checks the hardware).

    Subclasses implement :meth:`extract`; :meth:`forward` runs it at ``precision``.
    """

    name: str = ""
    patch_size: int = 16
    embed_dim: int = 0
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    precision: str = DEFAULT_PRECISION

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid (h, w) for an image of ``height`` x ``width`` (the remainder is cropped)."""
        return height // self.patch_size, width // self.patch_size

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """Crop [B,3,H,W] at the bottom/right to a multiple of the patch size."""
        h, w = self.grid_size(x.shape[-2], x.shape[-1])
        if h == 0 or w == 0:
            raise UserError(
                f"image of {x.shape[-2]}x{x.shape[-1]} pixels is smaller than one {self.patch_size}-pixel patch"
            )
        return x[..., : h * self.patch_size, : w * self.patch_size]

    @property
    def device(self) -> torch.device:
        t = next(self.parameters(), None)
        t = t if t is not None else next(self.buffers(), None)
        return t.device if t is not None else torch.device("cpu")

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B,3,H,W] in 0..255, or float in [0,1] -> float normalized with mean/std."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def forward(self, x: torch.Tensor, facets=("k",)) -> dict[str, torch.Tensor]:
        """x: normalized [B,3,H,W] -> {facet: [B,h,w,C]} (and "cls": [B,C] when asked), float32.

        :meth:`extract` runs under the autocast of ``precision``; the features are cast back to float32.
        """
        with autocast(self.precision, x.device):
            out = self.extract(x, facets)
        return to_float32(out)

    @abc.abstractmethod
    def extract(self, x: torch.Tensor, facets=("k",)) -> dict[str, torch.Tensor]:
        """x: normalized [B,3,H,W] -> {facet: [B,h,w,C]} (and "cls": [B,C] when asked)."""

    @abc.abstractmethod
    def forward_layers(self, x: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        """x: normalized [B,3,H,W] -> outputs of the given blocks, each [B,C,h,w]."""
