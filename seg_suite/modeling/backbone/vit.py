"""Plain-ViT backbone from :mod:`seg_suite.features` with a simple feature pyramid (ViTDet).

One ViT block output (stride = patch size) is turned into the four maps a Mask2Former head
expects, "res2".."res5" at strides 4, 8, 16, 32, as in ViTDet's simple feature pyramid (Li et al.
2022, "Exploring Plain Vision Transformer Backbones for Object Detection"): stride 2x up-sampling
by transposed convs, down-sampling by max-pooling, then a 1x1 and a 3x3 conv per level. This lets
unsupervised runs start from DINO/DINOv2 self-supervised weights (MODEL.VIT.WEIGHTS).

Deliberate differences from ViTDet: the pyramid's conv norm defaults to GroupNorm (detectron2 0.6
has no channel LayerNorm; "LN" selects the local one), and ViTs whose patch size is not 8 or 16
(DINOv2: 14) have their token grid resized bilinearly to stride 16 first, so the pyramid strides
stay powers of two as the pixel decoder requires. Inputs are cropped at the bottom/right to
whole patches; with MODEL.MASK_FORMER.SIZE_DIVISIBILITY 32 that drops at most 13 pixels for a
patch-14 ViT (set it to ``size_divisibility`` of this backbone, 224, or -1 to avoid any crop).
"""

import math
from typing import Dict, List, Sequence

import torch
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn
from torch.nn import functional as F

from seg_suite.features import build_extractor

_STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (N, C, H, W) map (ViTDet's pyramid norm)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


def _norm(norm: str, channels: int) -> nn.Module:
    return LayerNorm2d(channels) if norm == "LN" else get_norm(norm, channels)


class ViTSimpleFeaturePyramid(Backbone):
    """detectron2 Backbone over a :class:`seg_suite.features.FeatureExtractor`.

    Args:
        extractor: a ViT FeatureExtractor (``forward_layers``, ``patch_size``, ``embed_dim``).
        layer: block whose output feeds the pyramid (negative counts from the end).
        out_channels: channels of every output map.
        norm: "GN", "LN", "BN", "" ... for the pyramid convs.
        out_features: subset of "res2".."res5".
        freeze: keep the ViT frozen (no gradients); the pyramid still trains.

    Input: (N, 3, H, W) normalised with ImageNet mean/std (Mask2Former's PIXEL_MEAN/STD), H and W
    multiples of ``size_divisibility``. Output: {name: (N, out_channels, H/s, W/s)}.
    """

    def __init__(self, extractor: nn.Module, layer: int = -1, out_channels: int = 256, norm: str = "GN",
                 out_features: Sequence[str] = ("res2", "res3", "res4", "res5"), freeze: bool = False):
        super().__init__()
        unknown = [f for f in out_features if f not in _STRIDES]
        if unknown:
            raise ValueError(f"unknown ViT pyramid features {unknown}; choose from {list(_STRIDES)}")
        self.vit = extractor
        self.layer = layer
        self.freeze = freeze
        self.vit.requires_grad_(not freeze)
        patch = int(extractor.patch_size)
        # Token grid stride the pyramid starts from: the patch size when it is 8 or 16.
        self.base_stride = patch if patch in (8, 16) else 16
        self._out_features = list(out_features)
        dim = int(extractor.embed_dim)
        self.stages = nn.ModuleDict()
        for name in self._out_features:
            scale = self.base_stride / _STRIDES[name]
            layers: List[nn.Module] = []
            channels = dim
            if scale >= 1:
                for step in range(int(round(math.log2(scale)))):
                    if step > 0:
                        layers += [_norm("LN", channels), nn.GELU()]
                    layers.append(nn.ConvTranspose2d(channels, channels // 2, kernel_size=2, stride=2))
                    channels //= 2
            else:
                k = int(round(1 / scale))
                layers.append(nn.MaxPool2d(kernel_size=k, stride=k))
            layers += [
                Conv2d(channels, out_channels, kernel_size=1, bias=norm == "", norm=_norm(norm, out_channels)),
                Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=norm == "",
                       norm=_norm(norm, out_channels)),
            ]
            self.stages[name] = nn.Sequential(*layers)
        self._out_feature_strides = {n: _STRIDES[n] for n in self._out_features}
        self._out_feature_channels = {n: out_channels for n in self._out_features}

    @property
    def size_divisibility(self) -> int:
        # Every level must tile the padded image exactly; the ViT needs whole patches too.
        return math.lcm(max(self._out_feature_strides.values()), int(self.vit.patch_size))

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        h, w = x.shape[-2:]
        patch = int(self.vit.patch_size)
        crop = x[..., : h // patch * patch, : w // patch * patch]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            tokens = self.vit.forward_layers(crop, [self.layer])[0]  # (N, C, h/p, w/p)
        grid = (h // self.base_stride, w // self.base_stride)
        if tuple(tokens.shape[-2:]) != grid:
            tokens = F.interpolate(tokens, size=grid, mode="bilinear", align_corners=False)
        return {name: stage(tokens) for name, stage in self.stages.items()}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {n: ShapeSpec(channels=self._out_feature_channels[n], stride=self._out_feature_strides[n])
                for n in self._out_features}


@BACKBONE_REGISTRY.register()
def build_vit_sfp_backbone(cfg, input_shape: ShapeSpec) -> ViTSimpleFeaturePyramid:
    """MODEL.BACKBONE.NAME "build_vit_sfp_backbone"; settings under MODEL.VIT (seg_suite.config)."""
    vit = cfg.MODEL.VIT
    extractor = build_extractor(vit.NAME, weights=vit.WEIGHTS or None, device="cpu",
                                random_init=vit.RANDOM_INIT, depth=vit.DEPTH or None)
    return ViTSimpleFeaturePyramid(extractor, layer=vit.LAYER, out_channels=vit.OUT_CHANNELS, norm=vit.NORM,
                                   out_features=vit.OUT_FEATURES, freeze=vit.FREEZE)
