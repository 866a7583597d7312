"""Self-supervised feature backbones: DINO / DINOv2 ViTs and a weight-free stand-in.

    from seg_suite.features import build_extractor
    ext = build_extractor("dino_vitb8", weights="dino_vitbase8_pretrain.pth", device="cpu")
    k = ext(ext.normalize(images), facets=("k",))["k"]     # [B, H//8, W//8, 768]

Never imports detectron2.
"""

from seg_suite.features.backbones import BACKBONE_NAMES, BACKBONES, DEFAULT_BACKBONE, HANDCRAFTED, BackboneConfig
from seg_suite.features.extractor import FACETS, IMAGENET_MEAN, IMAGENET_STD, FeatureExtractor
from seg_suite.features.factory import build_extractor
from seg_suite.features.handcrafted import HandcraftedExtractor
from seg_suite.features.vit import VisionTransformer, interpolate_pos_embed

__all__ = [
    "BACKBONES",
    "BACKBONE_NAMES",
    "BackboneConfig",
    "DEFAULT_BACKBONE",
    "FACETS",
    "FeatureExtractor",
    "HANDCRAFTED",
    "HandcraftedExtractor",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VisionTransformer",
    "build_extractor",
    "interpolate_pos_embed",
]
