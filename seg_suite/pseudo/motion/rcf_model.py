"""The RCF segmenter network: a ResNet, a mask head (K soft masks) and a residual-flow head.

Shaped after RCF (Lian et al., "Bootstrapping Objectness from Videos by Relaxed Common Fate and
Visual Grouping", CVPR 2023; github.com/TonyLianLong/RCF-UnsupVideoSeg ``models/rcf_model.py`` and
``configs/rcf/rcf_stage1.yaml``):

* mask head (``decode_head2``): an FCN head (two 3x3 conv-BN-ReLU, dropout 0.1, 1x1 classifier) on
  the concatenation of the first and the last ResNet stage, the last upsampled to the first
  (``resize_concat`` of stages 0 and 3); K = 4 masks (``mask_layer: 4``) at stride 4;
* residual head (``decode_head3``): the same FCN shape on the last-stage features of *both* frames
  concatenated, predicting 2 (forward, backward) x 2 (x, y) x K residual-flow maps
  (``separate_residual``), bounded later by tanh.

Differences from the reference, on purpose: the reference ResNet-50 is dilated to stride 8 at the
last stage (``dilations [1, 1, 2, 4]``); ``resnet50`` here uses torchvision's
``replace_stride_with_dilation=[False, True, True]`` (stride 8 as well), but ``resnet18`` (the CPU
default) cannot be dilated in torchvision and keeps stride 32 at its last stage. The reference
head channels are 256; ``head_channels`` defaults to 128 to keep CPU training quick.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from seg_suite.errors import MissingWeightsError, UserError
from seg_suite.pseudo.motion.rcf_config import BACKBONES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _fcn_head(cin: int, mid: int, cout: int, dropout: float = 0.1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
        nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
        nn.Dropout2d(dropout), nn.Conv2d(mid, cout, 1),
    )


def load_backbone_weights(resnet: nn.Module, path: str | os.PathLike) -> None:
    """Load a local torchvision (or DenseCL/MoCo-style ``state_dict`` / ``module.`` prefixed) ResNet."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"backbone weights not found: {path} (a torchvision ResNet state dict; "
                                  "RCF starts from DenseCL ResNet-50, densecl_r50_imagenet_200ep.pth)")
    from seg_suite.io.checkpoints import load_state_dict
    from seg_suite.pseudo.motion.weights import load_weights_into

    state = load_state_dict(path, nesting=("state_dict", "model", "module"))
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
    # The classifier is not part of the segmenter: a file may have it or not.
    load_weights_into(resnet, state, path, "a matching torchvision ResNet state dict", optional=("fc.",))


class RCFNet(nn.Module):
    """``forward(img1, img2)`` with normalised images [B, 3, H, W] returns a dict:

    ``logits1``, ``logits2``: [B, K, H/4, W/4] mask logits of each frame;
    ``residual_fw``, ``residual_bw``: [B, 2, K, H/4, W/4] raw residual flows (before tanh).
    """

    def __init__(self, backbone: str = "resnet18", num_masks: int = 4, head_channels: int = 128,
                 weights: str | os.PathLike | None = None):
        super().__init__()
        import torchvision

        if backbone not in BACKBONES:
            raise UserError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
        if backbone == "resnet18":
            net = torchvision.models.resnet18(weights=None)
            c_low, c_high = 64, 512
        else:
            net = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, True, True])
            c_low, c_high = 256, 2048
        if weights is not None:
            load_backbone_weights(net, weights)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.num_masks = num_masks
        self.mask_head = _fcn_head(c_low + c_high, head_channels, num_masks)
        self.residual_head = _fcn_head(2 * c_high, head_channels, 2 * 2 * num_masks)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> ImageNet-normalised float."""
        return (images_uint8.float() / 255.0 - self.mean) / self.std

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.layer1(self.stem(x))
        high = self.layer4(self.layer3(self.layer2(low)))
        return low, high

    def mask_logits(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.mask_head(torch.cat([low, up], dim=1))

    def predict_masks(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised [B, 3, H, W] -> softmax masks [B, K, H/4, W/4] (single frame, no flow needed)."""
        return self.mask_logits(*self.features(x)).softmax(dim=1)

    def forward(self, img1: torch.Tensor, img2: torch.Tensor) -> dict[str, torch.Tensor]:
        B = img1.shape[0]
        low, high = self.features(torch.cat([img1, img2], dim=0))
        logits = self.mask_logits(low, high)
        h1, h2 = high[:B], high[B:]
        res = self.residual_head(torch.cat([h1, h2], dim=1))
        res = F.interpolate(res, size=logits.shape[-2:], mode="bilinear", align_corners=False)
        K = self.num_masks
        res_fw, res_bw = res[:, : 2 * K], res[:, 2 * K :]
        return {
            "logits1": logits[:B],
            "logits2": logits[B:],
            "residual_fw": res_fw.unflatten(1, (2, K)),
            "residual_bw": res_bw.unflatten(1, (2, K)),
        }
