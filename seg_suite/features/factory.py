"""``build_extractor``: one factory over every backbone (as timm's ``create_model``)."""

from __future__ import annotations

import os

import torch

from seg_suite.errors import UserError
from seg_suite.features.backbones import BACKBONE_NAMES, BACKBONES, DEFAULT_BACKBONE, HANDCRAFTED
from seg_suite.devices import resolve_device
from seg_suite.features.extractor import FeatureExtractor
from seg_suite.features.handcrafted import HandcraftedExtractor
from seg_suite.features.precision import DEFAULT_PRECISION, check_precision, check_precision_name
from seg_suite.features.vit import VisionTransformer
from seg_suite.features.weights import load_weights, resolve_weights


def build_extractor(
    name: str = DEFAULT_BACKBONE,
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    random_init: bool = False,
    attention: str = "sdpa",
    seed: int = 0,
    depth: int | None = None,
    precision: str = DEFAULT_PRECISION,
) -> FeatureExtractor:
    """Build a frozen feature extractor in eval mode on ``device``.

    Args:
        name: a key of BACKBONES or "handcrafted" (default dino_vitb8, as CutLER's MaskCut).
        weights: a local checkpoint (official DINO/DINOv2 file, or a training checkpoint with a
            "teacher"); None looks in the local cache and, if reachable, the official URL
            (see seg_suite.features.weights), else raises MissingWeightsError.
        random_init: skip weights and initialise deterministically from ``seed`` (tests, timing).
        attention: "sdpa" or "naive" (explicit softmax attention, as the official code).
        depth: build only this many blocks (tests/benchmarks; a full checkpoint will not fit).
        precision: "fp32", "bf16" or "fp16", the autocast of the forward (see seg_suite.features.precision);
            refused in one line where ``device`` lacks it, and for the handcrafted stand-in (float32 only).
    """
    dev = resolve_device(device)
    check_precision_name(precision)
    if name == HANDCRAFTED:
        if precision != "fp32":
            raise UserError(f"the '{HANDCRAFTED}' stand-in computes in fp32 only (it has no network to run at "
                            f"{precision}); use --precision fp32")
        return HandcraftedExtractor().to(dev).eval()
    if name not in BACKBONES:
        raise UserError(f"unknown backbone '{name}'; choose from {', '.join(BACKBONE_NAMES)}")
    if random_init and weights is not None:
        raise UserError("give either weights or random_init, not both")
    check_precision(precision, dev)
    if not random_init and weights is None:
        weights = resolve_weights(BACKBONES[name])  # fails fast, before building anything
    # Built on the meta device: torch's default init of ~100M parameters would be wasted work,
    # since every tensor is then either loaded or set by init_random.
    with torch.device("meta"):
        model = VisionTransformer(BACKBONES[name], attention=attention, depth=depth)
    model = model.to_empty(device="cpu")
    if random_init:
        model.init_random(seed)
    else:
        load_weights(model, weights)
    model.precision = precision
    return model.to(dev).eval()


def backbone_patch_size(name: str) -> int:
    """Patch size in pixels of the extractor :func:`build_extractor` gives for ``name``, without building it."""
    if name == HANDCRAFTED:
        return HandcraftedExtractor().patch_size
    if name not in BACKBONES:
        raise UserError(f"unknown backbone '{name}'; choose from {', '.join(sorted(BACKBONES))}, {HANDCRAFTED}")
    return BACKBONES[name].patch_size
