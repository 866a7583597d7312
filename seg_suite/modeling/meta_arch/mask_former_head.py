"""``MaskFormerHead``: pixel decoder + transformer decoder, registered as a detectron2 sem-seg head.

Same structure and names as Mask2Former's ``meta_arch/mask_former_head.py`` (``pixel_decoder``,
``predictor``), so ``MODEL.SEM_SEG_HEAD.NAME: "MaskFormerHead"`` in official YAML files works.
"""

import logging
from typing import Dict

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from seg_suite.modeling.transformer_decoder.build import build_transformer_decoder


def build_pixel_decoder(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """Build ``cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME`` from the sem-seg head registry."""
    name = cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME
    model = SEM_SEG_HEADS_REGISTRY.get(name)(cfg, input_shape)
    if not callable(getattr(model, "forward_features", None)):
        raise ValueError(f"pixel decoder {name} has no forward_features method")
    return model


@SEM_SEG_HEADS_REGISTRY.register()
class MaskFormerHead(nn.Module):
    """Runs the pixel decoder, then the transformer decoder on its multi-scale output."""

    _version = 2

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, num_classes: int, pixel_decoder: nn.Module,
                 loss_weight: float = 1.0, ignore_value: int = -1, transformer_predictor: nn.Module,
                 transformer_in_feature: str):
        """
        Args:
            input_shape: backbone feature shapes used by the head.
            num_classes: K.
            pixel_decoder: module with ``forward_features(features)``.
            loss_weight, ignore_value: kept for config compatibility.
            transformer_predictor: the transformer decoder.
            transformer_in_feature: "multi_scale_pixel_decoder" (Mask2Former), or the MaskFormer
                options "transformer_encoder", "pixel_embedding", or a backbone feature name.
        """
        super().__init__()
        self.in_features = [k for k, _ in sorted(input_shape.items(), key=lambda kv: kv[1].stride)]
        self.ignore_value = ignore_value
        self.common_stride = 4
        self.loss_weight = loss_weight
        self.pixel_decoder = pixel_decoder
        self.predictor = transformer_predictor
        self.transformer_in_feature = transformer_in_feature
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        feature = cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE
        if feature in ("transformer_encoder", "multi_scale_pixel_decoder"):
            predictor_channels = cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM
        elif feature == "pixel_embedding":
            predictor_channels = cfg.MODEL.SEM_SEG_HEAD.MASK_DIM
        else:
            predictor_channels = input_shape[feature].channels
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES},
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "pixel_decoder": build_pixel_decoder(cfg, input_shape),
            "loss_weight": cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT,
            "transformer_in_feature": feature,
            "transformer_predictor": build_transformer_decoder(cfg, predictor_channels, mask_classification=True),
        }

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # Version-1 (MaskFormer) checkpoints kept the pixel decoder directly under the head.
        if (local_metadata.get("version") or 1) < 2:
            moved = False
            for key in [k for k in state_dict if k.startswith(prefix)]:
                if "sem_seg_head" in key and not key.startswith(prefix + "predictor") \
                        and not key.startswith(prefix + "pixel_decoder."):
                    state_dict[prefix + "pixel_decoder." + key[len(prefix):]] = state_dict.pop(key)
                    moved = True
            if moved:
                logging.getLogger(__name__).warning(
                    "%s: converting a version-1 checkpoint layout", type(self).__name__)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def forward(self, features, mask=None):
        """features: backbone maps by name. Returns the decoder's prediction dict."""
        return self.layers(features, mask)

    def layers(self, features, mask=None):
        mask_features, encoder_features, multi_scale = self.pixel_decoder.forward_features(features)
        feature = self.transformer_in_feature
        if feature == "multi_scale_pixel_decoder":
            return self.predictor(multi_scale, mask_features, mask)
        if feature == "transformer_encoder":
            if encoder_features is None:
                raise ValueError("TRANSFORMER_IN_FEATURE 'transformer_encoder' needs a transformer pixel decoder")
            return self.predictor(encoder_features, mask_features, mask)
        if feature == "pixel_embedding":
            return self.predictor(mask_features, mask_features, mask)
        return self.predictor(features[feature], mask_features, mask)
