"""Mask2Former's pixel decoder: deformable-attention encoder over res3-res5, FPN fusion with res2.

The coarse levels (strides 8, 16, 32 for a ResNet) are projected to ``conv_dim`` channels (1x1 conv
+ GroupNorm(32)), tagged with sine positions plus a learned level embedding, and refined jointly by
``transformer_enc_layers`` (6) multi-scale deformable self-attention layers. The finer levels
(res2, stride 4) are then fused top-down as in an FPN (lateral 1x1 conv + bilinearly upsampled
coarser map, then a 3x3 conv), and a 1x1 conv turns the finest map into the mask features.

Returns the mask features (stride 4), the encoder's coarsest output, and the three coarsest maps
(1/32, 1/16, 1/8) for the transformer decoder. Parameter names follow
``MSDeformAttnPixelDecoder`` in Mask2Former's ``pixel_decoder/msdeformattn.py``.
"""

import math
from typing import Callable, Dict, List, Optional, Union

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn
from torch.nn import functional as F

from seg_suite.modeling.linear import Linear
from seg_suite.modeling.ms_deform_attn import MSDeformAttn
from seg_suite.modeling.position_encoding import PositionEmbeddingSine


class MSDeformAttnTransformerEncoderLayer(nn.Module):
    """Deformable self-attention + FFN, each residual with post-LayerNorm."""

    def __init__(self, d_model: int = 256, d_ffn: int = 1024, dropout: float = 0.1, n_levels: int = 4,
                 n_heads: int = 8, n_points: int = 4):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, spatial_shapes, padding_mask=None):
        """src, pos: (N, S, C); reference_points: (N, S, L, 2) -> (N, S, C)."""
        attended = self.self_attn(src + pos, reference_points, src, spatial_shapes, None, padding_mask)
        src = self.norm1(src + self.dropout1(attended))
        ffn = self.linear2(self.dropout2(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout3(ffn))


class MSDeformAttnTransformerEncoder(nn.Module):
    """A stack of encoder layers sharing the per-pixel reference points."""

    def __init__(self, layer_factory: Callable[[], nn.Module], num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(layer_factory() for _ in range(num_layers))
        self.num_layers = num_layers

    @staticmethod
    def get_reference_points(spatial_shapes: List, batch: int, device, dtype=torch.float32) -> torch.Tensor:
        """Pixel centres of every level in [0, 1]^2, repeated for every level.

        Returns (N, S, L, 2). No padding mask is used by Mask2Former, so valid ratios are 1.
        """
        refs = []
        for h, w in spatial_shapes:
            ys, xs = torch.meshgrid(
                torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device) / h,
                torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device) / w,
                indexing="ij")
            refs.append(torch.stack((xs.reshape(-1), ys.reshape(-1)), -1))
        ref = torch.cat(refs, 0).to(dtype)
        return ref[None, :, None, :].expand(batch, -1, len(spatial_shapes), -1)

    def forward(self, src, spatial_shapes, pos, padding_mask=None):
        ref = self.get_reference_points(spatial_shapes, src.shape[0], src.device, src.dtype)
        for layer in self.layers:
            src = layer(src, pos, ref, spatial_shapes, padding_mask)
        return src


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """Flattens the levels, adds level embeddings and runs the encoder."""

    def __init__(self, d_model: int = 256, nhead: int = 8, num_encoder_layers: int = 6,
                 dim_feedforward: int = 1024, dropout: float = 0.1, num_feature_levels: int = 4,
                 enc_n_points: int = 4):
        super().__init__()
        self.d_model = d_model
        self.nhead = nhead
        self.encoder = MSDeformAttnTransformerEncoder(
            lambda: MSDeformAttnTransformerEncoderLayer(d_model, dim_feedforward, dropout,
                                                        num_feature_levels, nhead, enc_n_points),
            num_encoder_layers)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        # Reference init: Xavier for every matrix, then the deformable layers' own init.
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, srcs: List[torch.Tensor], pos_embeds: List[torch.Tensor]):
        """
        Args:
            srcs, pos_embeds: L maps (N, C, H_l, W_l).
        Returns:
            memory (N, S, C), spatial shapes [(H_l, W_l)], level start indices [int].
        """
        shapes = [tuple(s.shape[-2:]) for s in srcs]
        flat = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos = torch.cat([p.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1)
                         for lvl, p in enumerate(pos_embeds)], 1)
        starts = [0]
        for h, w in shapes[:-1]:
            starts.append(starts[-1] + h * w)
        return self.encoder(flat, shapes, pos), shapes, starts


@SEM_SEG_HEADS_REGISTRY.register()
class MSDeformAttnPixelDecoder(nn.Module):
    """See module docstring."""

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, transformer_dropout: float,
                 transformer_nheads: int, transformer_dim_feedforward: int, transformer_enc_layers: int,
                 conv_dim: int, mask_dim: int, norm: Optional[Union[str, Callable]] = None,
                 transformer_in_features: List[str], common_stride: int):
        """
        Args:
            input_shape: backbone features used (name -> channels, stride).
            transformer_dropout, transformer_nheads, transformer_dim_feedforward,
            transformer_enc_layers: deformable encoder settings (official: 0.0, 8, 1024, 6).
            conv_dim: decoder width (256).  mask_dim: mask feature channels (256).
            norm: norm of the FPN convs ("GN").
            transformer_in_features: features refined by the encoder (res3, res4, res5).
            common_stride: stride of the mask features (4).
        """
        super().__init__()
        enc_shape = sorted(((k, v) for k, v in input_shape.items() if k in transformer_in_features),
                           key=lambda kv: kv[1].stride)
        all_shape = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [k for k, _ in all_shape]
        self.feature_strides = [v.stride for _, v in all_shape]
        self.feature_channels = [v.channels for _, v in all_shape]
        self.transformer_in_features = [k for k, _ in enc_shape]
        self.transformer_feature_strides = [v.stride for _, v in enc_shape]
        self.transformer_num_feature_levels = len(enc_shape)
        # input_proj[0] takes the coarsest level: projections are ordered coarse to fine.
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(v.channels, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
            for _, v in reversed(enc_shape))
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)
        self.transformer = MSDeformAttnTransformerEncoderOnly(
            d_model=conv_dim, dropout=transformer_dropout, nhead=transformer_nheads,
            dim_feedforward=transformer_dim_feedforward, num_encoder_layers=transformer_enc_layers,
            num_feature_levels=self.transformer_num_feature_levels)
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)
        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1, stride=1, padding=0)
        weight_init.c2_xavier_fill(self.mask_features)
        self.maskformer_num_feature_levels = 3  # the decoder always takes three scales
        self.common_stride = common_stride
        min_stride = min(self.transformer_feature_strides)
        self.num_fpn_levels = int(round(math.log2(min_stride) - math.log2(common_stride)))
        use_bias = norm == ""
        lateral, output = [], []
        for idx, channels in enumerate(self.feature_channels[: self.num_fpn_levels]):
            lateral_conv = Conv2d(channels, conv_dim, kernel_size=1, bias=use_bias,
                                  norm=get_norm(norm, conv_dim))
            output_conv = Conv2d(conv_dim, conv_dim, kernel_size=3, stride=1, padding=1, bias=use_bias,
                                 norm=get_norm(norm, conv_dim), activation=F.relu)
            weight_init.c2_xavier_fill(lateral_conv)
            weight_init.c2_xavier_fill(output_conv)
            # Registered under the official names; the lists below hold the same modules.
            self.add_module(f"adapter_{idx + 1}", lateral_conv)
            self.add_module(f"layer_{idx + 1}", output_conv)
            lateral.append(lateral_conv)
            output.append(output_conv)
        # Plain lists (not ModuleLists) so parameters are not registered twice; coarse to fine.
        self.lateral_convs = lateral[::-1]
        self.output_convs = output[::-1]

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "conv_dim": head.CONVS_DIM,
            "mask_dim": head.MASK_DIM,
            "norm": head.NORM,
            "transformer_dropout": cfg.MODEL.MASK_FORMER.DROPOUT,
            "transformer_nheads": cfg.MODEL.MASK_FORMER.NHEADS,
            # The official decoder hard-codes 1024 here, not MASK_FORMER.DIM_FEEDFORWARD (2048).
            "transformer_dim_feedforward": 1024,
            "transformer_enc_layers": head.TRANSFORMER_ENC_LAYERS,
            "transformer_in_features": head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES,
            "common_stride": head.COMMON_STRIDE,
        }

    def forward_features(self, features: Dict[str, torch.Tensor]):
        """
        Args:
            features: backbone maps by name, (N, C_f, H_f, W_f).
        Returns:
            mask_features (N, mask_dim, H/4, W/4), the coarsest encoder map (N, conv_dim, H/32, W/32),
            and a list of three maps coarse to fine (1/32, 1/16, 1/8) of conv_dim channels.
        """
        srcs, pos = [], []
        # The deformable encoder runs in fp32 (as the reference), also under autocast; float64
        # (gradient checks) stays float64.
        with torch.autocast(device_type=_device_type(features), enabled=False):
            for idx, name in enumerate(self.transformer_in_features[::-1]):
                x = _at_least_fp32(features[name])
                srcs.append(self.input_proj[idx](x))
                pos.append(self.pe_layer(x))
            memory, shapes, _ = self.transformer(srcs, pos)
            batch = memory.shape[0]
            out = [z.transpose(1, 2).reshape(batch, -1, h, w)
                   for z, (h, w) in zip(memory.split([h * w for h, w in shapes], dim=1), shapes)]
            for idx, name in enumerate(self.in_features[: self.num_fpn_levels][::-1]):
                lateral = self.lateral_convs[idx](_at_least_fp32(features[name]))
                fused = lateral + F.interpolate(out[-1], size=lateral.shape[-2:], mode="bilinear",
                                                align_corners=False)
                out.append(self.output_convs[idx](fused))
            multi_scale = out[: self.maskformer_num_feature_levels]
            return self.mask_features(out[-1]), out[0], multi_scale


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _device_type(features: Dict[str, torch.Tensor]) -> str:
    return next(iter(features.values())).device.type
