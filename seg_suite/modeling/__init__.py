"""Mask2Former-style models on detectron2.

Importing this package registers, under the official Mask2Former names:
- ``MaskFormer`` in detectron2's META_ARCH_REGISTRY,
- ``MaskFormerHead`` and ``MSDeformAttnPixelDecoder`` in SEM_SEG_HEADS_REGISTRY,
- ``MultiScaleMaskedTransformerDecoder`` in TRANSFORMER_DECODER_REGISTRY ("TRANSFORMER_MODULE"),
- ``build_vit_sfp_backbone`` (plain ViT from seg_suite.features + simple feature pyramid) in
  BACKBONE_REGISTRY.
Configure with :func:`seg_suite.config.add_seg_suite_config`.
"""

from seg_suite.modeling.backbone.vit import ViTSimpleFeaturePyramid, build_vit_sfp_backbone
from seg_suite.modeling.checkpoint import MaskFormerCheckpointer
from seg_suite.modeling.criterion import SetCriterion
from seg_suite.modeling.matcher import HungarianMatcher
from seg_suite.modeling.meta_arch.mask_former_head import MaskFormerHead, build_pixel_decoder
from seg_suite.modeling.meta_arch.maskformer import MaskFormer, build_criterion
from seg_suite.modeling.ms_deform_attn import MSDeformAttn, ms_deform_attn_core
from seg_suite.modeling.pixel_decoder.msdeformattn import MSDeformAttnPixelDecoder
from seg_suite.modeling.transformer_decoder.build import (
    TRANSFORMER_DECODER_REGISTRY,
    build_transformer_decoder,
)
from seg_suite.modeling.transformer_decoder.masked_decoder import MultiScaleMaskedTransformerDecoder

__all__ = [
    "HungarianMatcher",
    "MSDeformAttn",
    "MSDeformAttnPixelDecoder",
    "MaskFormer",
    "MaskFormerCheckpointer",
    "MaskFormerHead",
    "MultiScaleMaskedTransformerDecoder",
    "SetCriterion",
    "TRANSFORMER_DECODER_REGISTRY",
    "ViTSimpleFeaturePyramid",
    "build_criterion",
    "build_pixel_decoder",
    "build_transformer_decoder",
    "build_vit_sfp_backbone",
    "ms_deform_attn_core",
]
