"""Mask2Former's masked-attention transformer decoder (Cheng et al. 2022, sec. 3.2).

Learnable queries (features ``query_feat`` and positions ``query_embed``) go through
``dec_layers`` layers of [masked cross-attention -> self-attention -> FFN]. Layer i attends to
feature level ``i % 3`` (coarse to fine: 1/32, 1/16, 1/8), and only to the pixels where the
previous prediction's mask probability is >= 0.5; a query whose mask would be empty attends
everywhere. A prediction (class logits + mask logits from dot products with the per-pixel mask
features) is made from the learnable queries before the first layer and after every layer;
all but the last become ``aux_outputs``.

Parameter names equal ``MultiScaleMaskedTransformerDecoder`` in Mask2Former's
``transformer_decoder/mask2former_transformer_decoder.py``. Differences: batch-first tensors with
``scaled_dot_product_attention``, and no attention mask is computed after the last layer (nothing
uses it).

Training outputs (same losses and gradients, less work): while gradients are on in training mode,
``pred_masks`` are computed without autograd (they feed the matcher and the attention masks,
neither of which is differentiated) and the outputs also carry each layer's ``mask_embed`` (B, Q,
C) and the shared ``mask_features`` (B, C, H, W). The criterion rebuilds, with gradients, only
the masks of the queries it matched (about 5 of 100 per image). The reference differentiates
every query's full-resolution mask, whose gradient is zero for every unmatched query. In CPU
profiles the backward of those per-layer mask products and the zero-filled (B, Q, H, W)
gradients took about 7% of a train step at 512x512 (0.67 of 9.7 s); paired runs could not
resolve the gain at 256x256, where runs vary by +-10%.
"""

from typing import Dict, List, Optional, Tuple

import torch
from detectron2.config import configurable
from torch import nn
from torch.nn import functional as F

from seg_suite.modeling.linear import Linear
from seg_suite.modeling.position_encoding import PositionEmbeddingSine
from seg_suite.modeling.transformer_decoder.build import TRANSFORMER_DECODER_REGISTRY
from seg_suite.modeling.transformer_decoder.layers import (
    MLP,
    CrossAttentionLayer,
    FFNLayer,
    SelfAttentionLayer,
)


def masked_attention_mask(mask_logits: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Attention mask for the next layer from the current mask prediction.

    Args:
        mask_logits: (B, Q, H, W) mask logits.
        size: (h, w) of the feature level the next layer attends to.
    Returns:
        (B, 1, Q, h*w) bool, True where attention is allowed: pixels with sigmoid >= 0.5 after
        bilinear resizing, or every pixel for a query with no such pixel. Detached.
    """
    resized = F.interpolate(mask_logits.detach(), size=size, mode="bilinear", align_corners=False)
    blocked = resized.sigmoid().flatten(2) < 0.5
    # A fully blocked row would give NaN softmax; such queries attend to the whole image instead.
    blocked &= ~blocked.all(-1, keepdim=True)
    return (~blocked).unsqueeze(1)


@TRANSFORMER_DECODER_REGISTRY.register()
class MultiScaleMaskedTransformerDecoder(nn.Module):
    """See module docstring. Inputs/outputs are documented in :meth:`forward`."""

    _version = 2

    @configurable
    def __init__(self, in_channels: int, mask_classification: bool = True, *, num_classes: int,
                 hidden_dim: int, num_queries: int, nheads: int, dim_feedforward: int, dec_layers: int,
                 pre_norm: bool, mask_dim: int, enforce_input_project: bool):
        """
        Args:
            in_channels: channels of the multi-scale features.
            mask_classification: must be True (kept for the official signature).
            num_classes: K; the classifier has K+1 outputs (last = no object).
            hidden_dim: query/feature width (official 256).
            num_queries: official 100 (200 for some Swin-L models).
            nheads: attention heads (8).  dim_feedforward: FFN width (2048).
            dec_layers: number of decoder layers (9 = cfg DEC_LAYERS - 1).
            pre_norm: LayerNorm before instead of after each sub-layer (official False).
            mask_dim: channels of the mask features.
            enforce_input_project: add a 1x1 projection even if in_channels == hidden_dim.
        """
        super().__init__()
        if not mask_classification:
            raise ValueError("only mask classification is supported")
        self.mask_classification = True
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads, dropout=0.0, normalize_before=pre_norm)
            for _ in range(dec_layers))
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads, dropout=0.0, normalize_before=pre_norm)
            for _ in range(dec_layers))
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward, dropout=0.0, normalize_before=pre_norm)
            for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.num_queries = num_queries
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.num_feature_levels = 3  # always three scales, as in the paper
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(self.num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                proj = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
                # detectron2's c2_xavier_fill: Caffe2 "XavierFill" = kaiming_uniform(a=1), zero bias.
                nn.init.kaiming_uniform_(proj.weight, a=1)
                nn.init.constant_(proj.bias, 0.0)
                self.input_proj.append(proj)
            else:
                self.input_proj.append(nn.Sequential())
        self.class_embed = Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    @classmethod
    def from_config(cls, cfg, in_channels: int, mask_classification: bool):
        if cfg.MODEL.MASK_FORMER.DEC_LAYERS < 1:
            raise ValueError("MODEL.MASK_FORMER.DEC_LAYERS must be >= 1")
        return {
            "in_channels": in_channels,
            "mask_classification": mask_classification,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "hidden_dim": cfg.MODEL.MASK_FORMER.HIDDEN_DIM,
            "num_queries": cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES,
            "nheads": cfg.MODEL.MASK_FORMER.NHEADS,
            "dim_feedforward": cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD,
            # DEC_LAYERS counts the prediction from the learnable queries as one "layer", so
            # that the number of losses equals DEC_LAYERS (official from_config does the same).
            "dec_layers": cfg.MODEL.MASK_FORMER.DEC_LAYERS - 1,
            "pre_norm": cfg.MODEL.MASK_FORMER.PRE_NORM,
            "enforce_input_project": cfg.MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
        }

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # Version-1 checkpoints (MaskFormer era) called the query features "static_query".
        if (local_metadata.get("version") or 1) < 2:
            for key in [k for k in state_dict if k.startswith(prefix) and "static_query" in k]:
                state_dict[key.replace("static_query", "query_feat")] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def forward(self, x: List[torch.Tensor], mask_features: torch.Tensor,
                mask: Optional[torch.Tensor] = None) -> Dict:
        """
        Args:
            x: three (B, C_in, H_l, W_l) feature maps, coarse to fine.
            mask_features: (B, mask_dim, H, W) per-pixel embeddings (stride 4).
            mask: ignored (padding is not masked, as in the reference).
        Returns:
            "pred_logits" (B, Q, K+1), "pred_masks" (B, Q, H, W) of the last layer, and
            "aux_outputs": list of dec_layers dicts with the same keys for the earlier predictions.
            When training with gradients (module docstring): "pred_masks" carry no gradient, each
            prediction also has "mask_embed" (B, Q, C), and the dict has "mask_features".
        """
        if len(x) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature levels, got {len(x)}")
        src, pos, sizes = [], [], []
        for i, feat in enumerate(x):
            sizes.append(tuple(feat.shape[-2:]))
            pos.append(self.pe_layer(feat).flatten(2).transpose(1, 2).to(feat.dtype))
            proj = self.input_proj[i](feat).flatten(2) + self.level_embed.weight[i][None, :, None]
            src.append(proj.transpose(1, 2))  # (B, HW, C)
        batch = src[0].shape[0]
        query_pos = self.query_embed.weight.unsqueeze(0).expand(batch, -1, -1)
        output = self.query_feat.weight.unsqueeze(0).expand(batch, -1, -1)

        embed_outputs = self.training and torch.is_grad_enabled()
        classes, masks, embeds = [], [], []
        cls, msk, emb, attn_mask = self._predict(output, mask_features, sizes[0], embed_outputs)
        classes.append(cls)
        masks.append(msk)
        embeds.append(emb)
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            output = self.transformer_cross_attention_layers[i](
                output, src[level], attn_mask=attn_mask, pos=pos[level], query_pos=query_pos)
            output = self.transformer_self_attention_layers[i](output, query_pos=query_pos)
            output = self.transformer_ffn_layers[i](output)
            last = i == self.num_layers - 1
            next_size = None if last else sizes[(i + 1) % self.num_feature_levels]
            cls, msk, emb, attn_mask = self._predict(output, mask_features, next_size, embed_outputs)
            classes.append(cls)
            masks.append(msk)
            embeds.append(emb)
        predictions = [{"pred_logits": c, "pred_masks": m} for c, m in zip(classes, masks)]
        if embed_outputs:
            for pred, emb in zip(predictions, embeds):
                pred["mask_embed"] = emb
        out = dict(predictions[-1], aux_outputs=predictions[:-1])
        if embed_outputs:
            out["mask_features"] = mask_features
        return out

    def _predict(self, output: torch.Tensor, mask_features: torch.Tensor,
                 attn_size: Optional[Tuple[int, int]], detach_masks: bool = False):
        """Class logits (B, Q, K+1), mask logits (B, Q, H, W), mask embeddings (B, Q, C) and the
        next attention mask; with ``detach_masks`` the mask logits are computed without autograd."""
        decoded = self.decoder_norm(output)
        logits = self.class_embed(decoded)
        embed = self.mask_embed(decoded)
        b, c, h, w = mask_features.shape
        with torch.set_grad_enabled(torch.is_grad_enabled() and not detach_masks):
            mask_logits = torch.bmm(embed, mask_features.reshape(b, c, h * w)).view(b, -1, h, w)
        attn_mask = None if attn_size is None else masked_attention_mask(mask_logits, attn_size)
        return logits, mask_logits, embed, attn_mask
