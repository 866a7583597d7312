"""Self-supervised feature backbones: DINO / DINOv2 ViTs and a weight-free stand-in.

    from seg_suite.features import build_extractor
    ext = build_extractor("dino_vitb8", weights="dino_vitbase8_pretrain.pth", device="cpu")
    k = ext(ext.normalize(images), facets=("k",))["k"]     # [B, H//8, W//8, 768]

Never imports detectron2. The names below load their module (and torch) on first use, so that
the backbone table (:mod:`seg_suite.features.backbones`) and the precision rules
(:mod:`seg_suite.features.precision`) can be read without importing torch.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "BACKBONES": "backbones", "BACKBONE_NAMES": "backbones", "BackboneConfig": "backbones",
    "DEFAULT_BACKBONE": "backbones", "HANDCRAFTED": "backbones",
    "FACETS": "extractor", "IMAGENET_MEAN": "extractor", "IMAGENET_STD": "extractor", "FeatureExtractor": "extractor",
    "build_extractor": "factory",
    "HandcraftedExtractor": "handcrafted",
    "VisionTransformer": "vit", "interpolate_pos_embed": "vit",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
