"""The backbone table: architecture, official checkpoint file and where users download it.

Architectures and checkpoint URLs follow facebookresearch/dino (``hubconf.py``,
``vision_transformer.py``: vit_small = 384/6 heads, vit_base = 768/12 heads, depth 12,
qkv_bias, LayerNorm eps 1e-6, pos_embed for 224) and facebookresearch/dinov2
(``dinov2/hub/backbones.py``: img_size 518, LayerScale init_values 1.0, block_chunks 0,
interpolate_offset 0.1, no antialias; vit_large = 1024/16 heads/depth 24).
"""

from __future__ import annotations

from dataclasses import dataclass

_DINO_PAGE = "https://github.com/facebookresearch/dino#pretrained-models"
_DINOV2_PAGE = "https://github.com/facebookresearch/dinov2#pretrained-models"
_DINO_URL = "https://dl.fbaipublicfiles.com/dino/{stem}/{stem}.pth"
_DINOV2_URL = "https://dl.fbaipublicfiles.com/dinov2/{name}/{name}_pretrain.pth"


@dataclass(frozen=True)
class BackboneConfig:
    """One ViT backbone: enough to build it and to tell the user which file it needs."""

    name: str
    family: str  # "dino" | "dinov2"
    arch: str  # vit_small | vit_base | vit_large, as the official repos name them
    patch_size: int
    embed_dim: int
    num_heads: int
    depth: int
    pretrain_size: int  # input side the pos_embed was trained at: 224 (DINO) or 518 (DINOv2)
    layer_scale: bool  # DINOv2 blocks carry ls1/ls2 LayerScale gammas
    mask_token: bool  # DINOv2 checkpoints carry mask_token (unused at inference)
    interpolate_offset: float  # the "+0.1" kludge of DINO/DINOv2 pos-embed interpolation
    interpolate_antialias: bool
    checkpoint_file: str  # official file name, also the name looked for in the local cache
    url: str  # direct download URL of checkpoint_file
    page: str  # page documenting the checkpoints
    timm_name: str  # the same weights in timm's hub (for reference)

    @property
    def grid(self) -> int:
        return self.pretrain_size // self.patch_size


def _dino(name: str, arch: str, patch: int, stem: str, timm_name: str) -> BackboneConfig:
    dim, heads = {"vit_small": (384, 6), "vit_base": (768, 12)}[arch]
    return BackboneConfig(
        name=name, family="dino", arch=arch, patch_size=patch, embed_dim=dim, num_heads=heads,
        depth=12, pretrain_size=224, layer_scale=False, mask_token=False,
        interpolate_offset=0.1, interpolate_antialias=False,
        checkpoint_file=f"{stem}.pth", url=_DINO_URL.format(stem=stem), page=_DINO_PAGE,
        timm_name=timm_name,
    )


def _dinov2(name: str, arch: str, timm_name: str) -> BackboneConfig:
    dim, heads, depth = {"vit_small": (384, 6, 12), "vit_base": (768, 12, 12), "vit_large": (1024, 16, 24)}[arch]
    return BackboneConfig(
        name=name, family="dinov2", arch=arch, patch_size=14, embed_dim=dim, num_heads=heads,
        depth=depth, pretrain_size=518, layer_scale=True, mask_token=True,
        interpolate_offset=0.1, interpolate_antialias=False,
        checkpoint_file=f"{name}_pretrain.pth", url=_DINOV2_URL.format(name=name), page=_DINOV2_PAGE,
        timm_name=timm_name,
    )


BACKBONES: dict[str, BackboneConfig] = {
    c.name: c
    for c in (
        _dino("dino_vits16", "vit_small", 16, "dino_deitsmall16_pretrain", "vit_small_patch16_224.dino"),
        _dino("dino_vits8", "vit_small", 8, "dino_deitsmall8_pretrain", "vit_small_patch8_224.dino"),
        _dino("dino_vitb16", "vit_base", 16, "dino_vitbase16_pretrain", "vit_base_patch16_224.dino"),
        _dino("dino_vitb8", "vit_base", 8, "dino_vitbase8_pretrain", "vit_base_patch8_224.dino"),
        _dinov2("dinov2_vits14", "vit_small", "vit_small_patch14_dinov2.lvd142m"),
        _dinov2("dinov2_vitb14", "vit_base", "vit_base_patch14_dinov2.lvd142m"),
        _dinov2("dinov2_vitl14", "vit_large", "vit_large_patch14_dinov2.lvd142m"),
    )
}

# The weight-free stand-in; it has no config row because it has no architecture or weights.
HANDCRAFTED = "handcrafted"

# CutLER runs MaskCut on DINO ViT-B/8 (CutLER README, maskcut/maskcut.py --vit-arch base --patch-size 8).
DEFAULT_BACKBONE = "dino_vitb8"

BACKBONE_NAMES = tuple(BACKBONES) + (HANDCRAFTED,)
