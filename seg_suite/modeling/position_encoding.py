"""2-D sine position encoding of DETR (Carion et al. 2020), as Mask2Former uses it.

Channels 0..F-1 encode y and F..2F-1 encode x; within each half, even channels are sin and odd
channels cos of ``coord / T ** (2 * (i // 2) / F)``. With ``normalize=True`` the cumulative
coordinates (1..H) are scaled to (0, 2*pi]. Same maths as ``position_encoding.py`` in
Mask2Former's ``transformer_decoder``.
"""

import math
from typing import Optional

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """Args:
        num_pos_feats: F, channels per axis (the output has 2F channels).
        temperature: T.
        normalize: scale coordinates to (0, ``scale``].
        scale: defaults to 2*pi; only meaningful with ``normalize``.
    """

    def __init__(self, num_pos_feats: int = 64, temperature: float = 10000, normalize: bool = False,
                 scale: Optional[float] = None):
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("scale is only used when normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x: (B, C, H, W); only its shape and device are used.
            mask: optional (B, H, W) bool, True on padding (excluded from the coordinates).
        Returns:
            (B, 2F, H, W) float32.
        """
        b, _, h, w = x.shape
        if mask is None:
            mask = torch.zeros((b, h, w), dtype=torch.bool, device=x.device)
        valid = ~mask
        y = valid.cumsum(1, dtype=torch.float32)
        xx = valid.cumsum(2, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            y = y / (y[:, -1:, :] + eps) * self.scale
            xx = xx / (xx[:, :, -1:] + eps) * self.scale
        i = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
        freq = self.temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x = xx[..., None] / freq
        pos_y = y[..., None] / freq
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature}, "
                f"normalize={self.normalize}, scale={self.scale}")
