"""Masked-attention decoder: attention mask rule, attention equivalence, output structure."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from seg_suite.modeling.position_encoding import PositionEmbeddingSine
from seg_suite.modeling.transformer_decoder.layers import MultiheadAttention
from seg_suite.modeling.transformer_decoder.masked_decoder import (
    MultiScaleMaskedTransformerDecoder,
    masked_attention_mask,
)


def test_attention_mask_threshold_and_clearing_rule():
    logits = torch.full((1, 3, 4, 4), -5.0)
    logits[0, 0, :2, :2] = 5.0      # query 0: top-left quarter is foreground
    logits[0, 2] = 5.0              # query 2: everything foreground
    # query 1 stays all negative: its mask is empty, so it must attend everywhere
    allowed = masked_attention_mask(logits, (4, 4))
    assert allowed.shape == (1, 1, 3, 16) and allowed.dtype == torch.bool
    expected_q0 = torch.zeros(4, 4, dtype=torch.bool)
    expected_q0[:2, :2] = True
    assert torch.equal(allowed[0, 0, 0], expected_q0.flatten())
    assert allowed[0, 0, 1].all()
    assert allowed[0, 0, 2].all()


def test_attention_mask_resizes_bilinearly_before_thresholding():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 8, 8, generator=g)
    allowed = masked_attention_mask(logits, (4, 4))
    resized = F.interpolate(logits, size=(4, 4), mode="bilinear", align_corners=False)
    blocked = resized.sigmoid().flatten(2) < 0.5
    empty = blocked.all(-1, keepdim=True)
    assert torch.equal(allowed[:, 0], ~(blocked & ~empty))


def test_multihead_attention_equals_torch_with_inverted_mask():
    torch.manual_seed(0)
    ours = MultiheadAttention(16, 4)
    ref = nn.MultiheadAttention(16, 4, batch_first=True)
    ref.load_state_dict(ours.state_dict())  # same parameter names and shapes
    q, kv = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    allowed = torch.rand(2, 1, 5, 7) > 0.4
    allowed[..., 0] = True  # no empty rows
    out = ours(q, kv, kv, attn_mask=allowed)
    ref_mask = (~allowed).expand(2, 4, 5, 7).reshape(8, 5, 7)  # True = blocked, per (batch*head)
    expected = ref(q, kv, kv, attn_mask=ref_mask, need_weights=False)[0]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_position_encoding_values():
    pe = PositionEmbeddingSine(4, normalize=True)(torch.zeros(1, 1, 2, 3))
    assert pe.shape == (1, 8, 2, 3)
    # channel 0: sin(y_norm / 1) with y_norm = (i + 1) / H * 2pi; channel 4 the same for x
    y = torch.tensor([1.0, 2.0]) / (2 + 1e-6) * 2 * torch.pi
    x = torch.tensor([1.0, 2.0, 3.0]) / (3 + 1e-6) * 2 * torch.pi
    torch.testing.assert_close(pe[0, 0, :, 0], y.sin())
    torch.testing.assert_close(pe[0, 1, :, 0], y.cos())
    torch.testing.assert_close(pe[0, 4, 0, :], x.sin())
    # channel 2 uses frequency 10000 ** (2 * 1 / 4) = 100
    torch.testing.assert_close(pe[0, 6, 0, :], (x / 100).sin())


def _decoder(**kw):
    args = dict(in_channels=32, mask_classification=True, num_classes=5, hidden_dim=32, num_queries=6,
                nheads=4, dim_feedforward=64, dec_layers=3, pre_norm=False, mask_dim=16,
                enforce_input_project=False)
    args.update(kw)
    return MultiScaleMaskedTransformerDecoder(**args)


@pytest.mark.parametrize("pre_norm", [False, True])
def test_decoder_outputs_and_aux(pre_norm):
    torch.manual_seed(0)
    dec = _decoder(pre_norm=pre_norm)
    feats = [torch.randn(2, 32, 2, 2), torch.randn(2, 32, 4, 4), torch.randn(2, 32, 8, 8)]
    out = dec(feats, torch.randn(2, 16, 16, 16))
    assert out["pred_logits"].shape == (2, 6, 6)
    assert out["pred_masks"].shape == (2, 6, 16, 16)
    assert len(out["aux_outputs"]) == 3  # learnable-query prediction + 2 intermediate layers
    for aux in out["aux_outputs"]:
        assert aux["pred_logits"].shape == (2, 6, 6) and aux["pred_masks"].shape == (2, 6, 16, 16)
    # The first prediction depends only on the learnable queries, not on the image features.
    out2 = dec([f + 1 for f in feats], torch.randn(2, 16, 16, 16))
    first = dec.class_embed(dec.decoder_norm(dec.query_feat.weight))
    torch.testing.assert_close(out2["aux_outputs"][0]["pred_logits"][0], first)
    # ... while the last one does depend on them.
    assert not torch.allclose(out2["pred_logits"], out["pred_logits"])


def test_decoder_input_projection_and_version1_keys():
    dec = _decoder(in_channels=24)
    assert isinstance(dec.input_proj[0], nn.Conv2d) and dec.input_proj[0].in_channels == 24
    state = dec.state_dict()
    old = {k.replace("query_feat", "static_query"): v for k, v in state.items()}
    fresh = _decoder(in_channels=24)
    fresh.load_state_dict(old)  # version-1 name is converted
    torch.testing.assert_close(fresh.query_feat.weight, dec.query_feat.weight)
