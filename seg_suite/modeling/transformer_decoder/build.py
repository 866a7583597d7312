"""Registry of transformer decoders ("TRANSFORMER_MODULE", the official Mask2Former name)."""

from detectron2.utils.registry import Registry

TRANSFORMER_DECODER_REGISTRY = Registry("TRANSFORMER_MODULE")
TRANSFORMER_DECODER_REGISTRY.__doc__ = """
Registry for transformer decoders, which turn multi-scale features and mask features into
per-query class logits and mask logits. Selected by MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME.
"""


def build_transformer_decoder(cfg, in_channels: int, mask_classification: bool = True):
    """Build the decoder named by ``cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME``."""
    name = cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
    return TRANSFORMER_DECODER_REGISTRY.get(name)(cfg, in_channels, mask_classification)
