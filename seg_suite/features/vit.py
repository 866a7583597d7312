"""A compact ViT whose state_dict keys are those of the official DINO and DINOv2 checkpoints.

Keys: cls_token, pos_embed, [mask_token], patch_embed.proj.{weight,bias},
blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.{weight,bias}, [blocks.N.ls1.gamma,
blocks.N.ls2.gamma], norm.{weight,bias}. Bracketed keys exist for DINOv2 only.

The math follows facebookresearch/dino ``vision_transformer.py`` and facebookresearch/dinov2
``dinov2/models/vision_transformer.py`` + ``dinov2/layers`` (pre-norm blocks, exact GELU,
LayerNorm eps 1e-6, optional LayerScale, bicubic position-embedding interpolation with the
``+offset`` scale-factor kludge). Where we differ: the input is cropped to a multiple of the
patch size first (DINO's strided conv drops the remainder silently, DINOv2 asserts), so the
"no interpolation" shortcut compares the cropped grid, not the raw image sides.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from seg_suite.features.backbones import BackboneConfig
from seg_suite.features.extractor import ATTENTION_MODES, GRID_FACETS, FeatureExtractor, check_facets
from seg_suite.errors import UserError


def interpolate_pos_embed(pos_embed: torch.Tensor, h: int, w: int, offset: float, antialias: bool) -> torch.Tensor:
    """Resize a square pos_embed [1, 1+M*M, C] to a h x w patch grid -> [1, 1+h*w, C].

    As the official code: returned unchanged when the grid has the trained size and is square;
    otherwise bicubic with scale_factor ((h+offset)/M, (w+offset)/M), because torch samples with
    the given scale factor (not output/input), which the checkpoints were fit to.
    """
    n = pos_embed.shape[1] - 1
    if n == h * w and h == w:
        return pos_embed
    m = int(math.sqrt(n))
    if m * m != n:
        raise ValueError(f"pos_embed has {n} patch positions, not a square grid")
    dim = pos_embed.shape[-1]
    grid = pos_embed[:, 1:].float().reshape(1, m, m, dim).permute(0, 3, 1, 2)
    if offset:
        kwargs = {"scale_factor": ((h + offset) / m, (w + offset) / m)}
    else:
        kwargs = {"size": (h, w)}
    grid = F.interpolate(grid, mode="bicubic", antialias=antialias, **kwargs)
    if grid.shape[-2:] != (h, w):  # cannot happen with offset > 0; guards against a bad offset
        raise ValueError(f"pos_embed interpolation gave {tuple(grid.shape[-2:])}, expected {(h, w)}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, dim).to(pos_embed.dtype)
    return torch.cat([pos_embed[:, :1], grid], dim=1)


class PatchEmbed(nn.Module):
    """[B,3,H,W] -> [B, (H/p)*(W/p), C] with a strided conv (``patch_embed.proj``)."""

    def __init__(self, patch_size: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention; ``mode`` "sdpa" (fused) or "naive" (explicit softmax(qk^T)v, as DINO)."""

    def __init__(self, dim: int, num_heads: int, mode: str = "sdpa"):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.mode = mode
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B,N,C] (already norm1-ed) -> q, k, v each [B, heads, N, C/heads]."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv_heads(x)
        if self.mode == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v)  # default scale = head_dim**-0.5, as DINO's
        else:
            attn = (q @ k.transpose(-2, -1)) * self.scale
            out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel residual scale (DINOv2 ``ls1``/``ls2``; key ``gamma``)."""

    def __init__(self, dim: int, init_value: float = 1.0):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1 x)), then x + ls2(mlp(norm2 x))."""

    def __init__(self, dim: int, num_heads: int, layer_scale: bool, attention: str):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, attention)
        self.ls1 = LayerScale(dim) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.ls2 = LayerScale(dim) if layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class VisionTransformer(FeatureExtractor):
    """DINO / DINOv2 ViT as a FeatureExtractor. Parameters are frozen (``requires_grad_(True)`` to tune).

    Args:
        config: a BackboneConfig row (see BACKBONES).
        attention: "sdpa" (torch's scaled_dot_product_attention) or "naive" (explicit softmax, as
            the official code; slower and O(N^2) memory, kept for reference timings).
        depth: number of blocks to build; None = config.depth (smaller only for tests/benchmarks).
    """

    def __init__(self, config: BackboneConfig, attention: str = "sdpa", depth: int | None = None):
        super().__init__()
        if attention not in ATTENTION_MODES:
            raise UserError(f"unknown attention mode '{attention}'; choose from {', '.join(ATTENTION_MODES)}")
        self.config = config
        self.name = config.name
        self.patch_size = config.patch_size
        self.embed_dim = config.embed_dim
        self.interpolate_offset = config.interpolate_offset
        self.interpolate_antialias = config.interpolate_antialias
        dim = config.embed_dim
        self.patch_embed = PatchEmbed(config.patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.grid**2, dim))
        if config.mask_token:
            self.mask_token = nn.Parameter(torch.zeros(1, dim))  # DINOv2 masked-token training; unused here
        self.blocks = nn.ModuleList(
            Block(dim, config.num_heads, config.layer_scale, attention)
            for _ in range(config.depth if depth is None else depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.requires_grad_(False)
        self.eval()

    @property
    def attention(self) -> str:
        return self.blocks[0].attn.mode

    def init_random(self, seed: int = 0) -> "VisionTransformer":
        """Deterministic random init in the official style: normal(0, 0.02) for every weight matrix,
        the patch conv, pos_embed and cls_token; zero biases and mask_token; unit LayerNorm;
        LayerScale 1.0 as DINOv2's hub. Parameters must live on the CPU (the generator does)."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("gamma") or (p.ndim == 1 and "norm" in name and name.endswith("weight")):
                    p.fill_(1.0)
                elif p.ndim == 1 or name == "mask_token":
                    p.zero_()
                else:
                    # DINO's trunc_normal_(std=.02) truncates at +-2 absolute, i.e. never at std .02.
                    p.normal_(0.0, 0.02, generator=gen)
        return self

    def prepare_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Normalized [B,3,H,W] -> tokens [B, 1+h*w, C] with position embedding, and (h, w)."""
        x = self.crop(x)
        h, w = self.grid_size(x.shape[-2], x.shape[-1])
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        pos = interpolate_pos_embed(self.pos_embed, h, w, self.interpolate_offset, self.interpolate_antialias)
        return tokens + pos, h, w

    def extract(self, x: torch.Tensor, facets=("k",)) -> dict[str, torch.Tensor]:
        """x: normalized [B,3,H,W] -> {facet: [B, H//p, W//p, C]}, plus {"cls": [B, C]} if asked.

        k/q/v need blocks 0..L-2 and only norm1+qkv of the last block; "token"/"cls" run all of it.
        """
        facets = check_facets(facets)
        t, h, w = self.prepare_tokens(x)
        b = t.shape[0]
        for blk in self.blocks[:-1]:
            t = blk(t)
        last = self.blocks[-1]
        out: dict[str, torch.Tensor] = {}
        wanted_qkv = [f for f in facets if f in ("q", "k", "v")]
        if wanted_qkv:
            q, k, v = last.attn.qkv_heads(last.norm1(t))
            for f in wanted_qkv:
                heads = {"q": q, "k": k, "v": v}[f]  # [B, heads, N, d] -> [B, N, heads*d]
                out[f] = heads.transpose(1, 2).reshape(b, -1, self.embed_dim)[:, 1:].reshape(b, h, w, -1)
        if "token" in facets or "cls" in facets:
            t = self.norm(last(t))
            if "token" in facets:
                out["token"] = t[:, 1:].reshape(b, h, w, -1)
            if "cls" in facets:
                out["cls"] = t[:, 0]
        return {f: out[f] for f in facets}

    def forward_layers(self, x: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        """x: normalized [B,3,H,W] -> raw outputs (no final norm) of blocks ``layers``, each [B,C,h,w].

        Negative indices count from the end; blocks after the deepest requested one are not run.
        """
        depth = len(self.blocks)
        idx = [i + depth if i < 0 else i for i in layers]
        if not idx or any(i < 0 or i >= depth for i in idx):
            raise ValueError(f"layers {layers} out of range for a {depth}-block ViT")
        t, h, w = self.prepare_tokens(x)
        b = t.shape[0]
        outputs = {}
        for i, blk in enumerate(self.blocks[: max(idx) + 1]):
            t = blk(t)
            if i in idx:
                outputs[i] = t[:, 1:].transpose(1, 2).reshape(b, -1, h, w)
        return [outputs[i] for i in idx]
