"""``handcrafted``: a weight-free STAND-IN for DINO features, so everything runs offline.

It is not a learned representation and knows nothing about objects; it separates regions that
differ in colour or texture, which is what the synthetic demo data needs. Use a DINO backbone
for real images. Per 8x8 patch (the grid of dino_vitb8) it computes five groups:
  - Lab colour mean (3) and standard deviation (3)
  - gradient magnitude mean (1) and an 8-bin magnitude-weighted orientation histogram (8)
  - Gabor energy at 2 wavelengths x 4 orientations (8)
and the same five groups averaged over the 3x3 patch neighbourhood (textures whose period is
longer than a patch). Each channel is standardised over the image's patches and each group is
weighted by 1/sqrt(its channel count), so colour counts as much as texture. Then:
  - a border prior (1 channel, see ``border_likeness``): +1 for patches that look like the
    image border, -1 for those that do not. It plays the part of DINO's object-centric bias,
    so that sky and ground resemble each other more than either resembles an object;
  - a weak position term: normalized (y, x), scaled by ``position_weight`` (2).
All facets ("k", "q", "v", "token") return the same features; "cls" is their mean over patches.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from seg_suite.features.extractor import FeatureExtractor, check_facets

_N_ORIENT = 8
# Opening size (patches) for the object map of border_likeness: removes bands up to 4 patches
# wide (a horizon's mixed patches), keeps objects (>= ~8x8 patches at 480 px, patch 8).
_OPENING = 5
_GABOR_WAVELENGTHS = (4.0, 8.0)  # pixels; roughly the patch side and half of it
_GABOR_ANGLES = 4
_BASE_DIM = 6 + 1 + _N_ORIENT + len(_GABOR_WAVELENGTHS) * _GABOR_ANGLES


def _gabor_bank(size: int = 11) -> torch.Tensor:
    """Even (cosine) Gabor kernels [K,1,size,size], zero mean so flat regions give no response."""
    r = torch.arange(size, dtype=torch.float32) - size // 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    kernels = []
    for lam in _GABOR_WAVELENGTHS:
        sigma = 0.56 * lam  # about one octave of bandwidth
        for i in range(_GABOR_ANGLES):
            th = math.pi * i / _GABOR_ANGLES
            xr = xx * math.cos(th) + yy * math.sin(th)
            g = torch.exp(-(xx**2 + yy**2) / (2 * sigma**2)) * torch.cos(2 * math.pi * xr / lam)
            g = g - g.mean()
            kernels.append(g / g.abs().sum())
    return torch.stack(kernels)[:, None]


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0,1] [B,3,H,W] -> CIE Lab (D65) [B,3,H,W], L in 0..100."""
    lin = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    m = torch.tensor(
        [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]],
        device=rgb.device,
    )
    xyz = torch.einsum("ij,bjhw->bihw", m, lin)
    xyz = xyz / torch.tensor([0.950456, 1.0, 1.088754], device=rgb.device).view(1, 3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-12) ** (1 / 3), 7.787 * xyz + 16 / 116)
    lum = 116 * f[:, 1] - 16
    return torch.stack([lum, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], dim=1)


def border_likeness(feats: torch.Tensor, k: int = 3) -> torch.Tensor:
    """[B,D,h,w] standardised features -> [B,1,h,w] in (-1, 1): +1 where a patch looks like some
    patch on the image border, -1 where it looks like none of them.

    The boundary prior of saliency detection (Wei et al., ECCV 2012, "Geodesic saliency using
    background priors"; Zhu et al., CVPR 2014): background regions touch the border, objects
    mostly do not. A patch's distance to the border is the mean of its k nearest border-patch
    distances, measured in units of the border patches' own spread (the same statistic between
    border patches, median over the border).
    """
    b, d, h, w = feats.shape
    flat = feats.flatten(2).transpose(1, 2)  # [B, N, D]
    ring = torch.zeros(h, w, dtype=torch.bool, device=feats.device)
    ring[0], ring[-1], ring[:, 0], ring[:, -1] = True, True, True, True
    border = flat[:, ring.flatten()]  # [B, Nb, D]
    kk = min(k, border.shape[1] - 1) if border.shape[1] > 1 else 1
    dist = torch.cdist(flat, border)  # [B, N, Nb]
    dist_k = dist.topk(kk, dim=2, largest=False).values.mean(2)  # [B, N]
    # The border's own spread: distances between border patches at least 3 cells apart, since
    # nearer ones share pixels of the 3x3 context statistics and would look alike regardless.
    yy, xx = torch.meshgrid(torch.arange(h, device=feats.device), torch.arange(w, device=feats.device), indexing="ij")
    cells = torch.stack([yy.flatten(), xx.flatten()], 1)[ring.flatten()]
    close = (cells[:, None] - cells[None]).abs().amax(-1) < 3  # [Nb, Nb]
    inner = dist[:, ring.flatten()].masked_fill(close, float("inf"))
    kk_inner = max(1, min(kk, int((~close).sum(1).min())))
    own = inner.topk(kk_inner, dim=2, largest=False).values.mean(2)
    if not torch.isfinite(own).all():  # a grid too small for far-apart border pairs
        own = dist_k
    spread = own.median(dim=1).values.clamp_min(1e-3).view(b, 1)
    z = (dist_k / spread - 2.0) / 0.5  # 1 spread: clearly background; 3 spreads: clearly not
    objectness = torch.sigmoid(z).view(b, 1, h, w)
    # Morphological opening: thin bands of mixed patches along a boundary between two
    # background regions (a horizon) look like no border patch; objects are wider than that.
    objectness = F.max_pool2d(-F.max_pool2d(-objectness, _OPENING, 1, _OPENING // 2), _OPENING, 1, _OPENING // 2)
    return 1 - 2 * objectness


class HandcraftedExtractor(FeatureExtractor):
    """Weight-free colour/gradient/texture patch statistics with the FeatureExtractor interface."""

    def __init__(self, patch_size: int = 8, position_weight: float = 0.5, background_prior_weight: float = 1.0):
        super().__init__()
        self.name = "handcrafted"
        self.patch_size = patch_size
        self.position_weight = position_weight
        self.background_prior_weight = background_prior_weight
        self.embed_dim = 2 * _BASE_DIM + 3
        self.register_buffer("gabor", _gabor_bank(), persistent=False)
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
        self.register_buffer("sobel", torch.stack([sobel, sobel.T])[:, None], persistent=False)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized [B,3,H,W] -> standardised features [B, h, w, embed_dim]."""
        x = self.crop(x)
        p = self.patch_size
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        rgb = (x * std + mean).clamp(0, 1)
        lab = rgb_to_lab(rgb)
        lum = lab[:, :1] / 100.0

        pool = lambda t: F.avg_pool2d(t, p)  # noqa: E731 - per-patch mean
        lab_mean = pool(lab)
        lab_std = (pool(lab**2) - lab_mean**2).clamp_min(0).sqrt()

        grad = F.conv2d(F.pad(lum, (1, 1, 1, 1), mode="replicate"), self.sobel)
        mag = grad.norm(dim=1, keepdim=True)
        # Unsigned orientation in [0, pi), soft-assigned to the two nearest of _N_ORIENT bins.
        ang = torch.atan2(grad[:, 1:], grad[:, :1]) % math.pi
        pos = ang / math.pi * _N_ORIENT
        lo = pos.floor().long() % _N_ORIENT
        frac = pos - pos.floor()
        hist = torch.zeros(x.shape[0], _N_ORIENT, *mag.shape[-2:], device=x.device)
        hist.scatter_add_(1, lo, mag * (1 - frac))
        hist.scatter_add_(1, (lo + 1) % _N_ORIENT, mag * frac)
        hist = pool(hist) / (pool(mag) + 1e-3)

        k = self.gabor.shape[-1]
        gabor = F.conv2d(F.pad(lum, (k // 2,) * 4, mode="reflect"), self.gabor).abs()

        groups = [lab_mean, lab_std, pool(mag), hist, pool(gabor)]
        groups += [F.avg_pool2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), 3, stride=1) for g in groups]
        # Standardise every channel over the image, then weight each group by 1/sqrt(its size),
        # so colour (3 channels) counts as much as the 8 Gabor energies; |feats|^2 ~ #groups.
        feats = torch.cat(
            [(g - g.mean(dim=(2, 3), keepdim=True)) / ((g.std(dim=(2, 3), keepdim=True, correction=0) + 1e-4) * math.sqrt(g.shape[1]))
             for g in groups], dim=1)  # [B, 2*_BASE_DIM, h, w]
        b, _, h, w = feats.shape
        prior = self.background_prior_weight * math.sqrt(len(groups)) * border_likeness(feats)
        ys = torch.linspace(-1, 1, h, device=x.device).view(1, 1, h, 1).expand(b, 1, h, w)
        xs = torch.linspace(-1, 1, w, device=x.device).view(1, 1, 1, w).expand(b, 1, h, w)
        feats = torch.cat([feats, prior, self.position_weight * ys, self.position_weight * xs], dim=1)
        return feats.permute(0, 2, 3, 1).contiguous()

    def extract(self, x: torch.Tensor, facets=("k",)) -> dict[str, torch.Tensor]:
        """x: normalized [B,3,H,W] -> {facet: [B, H//8, W//8, C]} (same tensor for every grid facet)."""
        facets = check_facets(facets)
        feats = self._features(x)
        return {f: feats.mean(dim=(1, 2)) if f == "cls" else feats for f in facets}

    def forward_layers(self, x: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        """The same features for every requested "layer", each [B, C, h, w] (there are no layers)."""
        feats = self._features(x).permute(0, 3, 1, 2)
        return [feats for _ in layers]
