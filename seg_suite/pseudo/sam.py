"""Segment Anything (SAM): building and loading the model, and automatic mask generation.

The model is segment-anything's own (``segment_anything.modeling``: ImageEncoderViT,
PromptEncoder, MaskDecoder, TwoWayTransformer); this module only parametrises its builder
so that tests can make a tiny one, and loads checkpoints safely::

    model = load_sam("vit_b", "sam_vit_b_01ec64.pth", device="cuda")   # Sam, eval mode
    masks = generate_masks(model, image, SamGeneratorParams())          # list[SamMask]

Checkpoints are read with ``torch.load(weights_only=True)`` (segment-anything's own builder
calls plain ``torch.load``, which can run code from the file); the model is built with no
checkpoint and the state dict loaded strictly. Refinement of coarse masks is in
:mod:`seg_suite.pseudo.sam_refine`, the dataset jobs in :mod:`seg_suite.pseudo.sam_jobs`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from seg_suite.errors import MissingWeightsError, UserError
from seg_suite.features.precision import DEFAULT_PRECISION, AutocastForward, check_precision
from seg_suite.params import Params, at_least, between, param

SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
SAM_PAGE = "https://github.com/facebookresearch/segment-anything#model-checkpoints"


@dataclass(frozen=True)
class SamArch(Params):
    """The sizes of one SAM model. Defaults are segment-anything's ``build_sam.py`` ``_build_sam``
    (1024-pixel input, 16-pixel patches, 14-pixel windows, 256-d prompts, 2-layer two-way decoder).
    """

    name: str
    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    checkpoint_file: str | None = None  # official file name (None: no official checkpoint)
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256


# segment_anything/build_sam.py: build_sam_vit_b / _l / _h, and the README's checkpoint list.
SAM_ARCHS: dict[str, SamArch] = {
    "vit_b": SamArch("vit_b", 768, 12, 12, (2, 5, 8, 11), "sam_vit_b_01ec64.pth"),
    "vit_l": SamArch("vit_l", 1024, 24, 16, (5, 11, 17, 23), "sam_vit_l_0b3195.pth"),
    "vit_h": SamArch("vit_h", 1280, 32, 16, (7, 15, 23, 31), "sam_vit_h_4b8939.pth"),
}
SAM_TYPES = tuple(SAM_ARCHS)
DEFAULT_SAM_TYPE = "vit_b"  # the smallest official model; segment-anything's own default is vit_h


def get_arch(sam_type: str | SamArch) -> SamArch:
    if isinstance(sam_type, SamArch):
        return sam_type
    if sam_type not in SAM_ARCHS:
        raise UserError(f"unknown SAM type '{sam_type}'; choose from {', '.join(SAM_TYPES)}")
    return SAM_ARCHS[sam_type]


def build_sam(arch: str | SamArch):
    """An untrained ``segment_anything.modeling.Sam`` of the given sizes, in eval mode.

    For the official types this is exactly ``sam_model_registry[type](checkpoint=None)``
    (the tests compare every parameter name and shape).
    """
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    a = get_arch(arch)
    grid = a.image_size // a.patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=a.encoder_depth, embed_dim=a.encoder_embed_dim, img_size=a.image_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=a.encoder_num_heads,
            patch_size=a.patch_size, qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=a.encoder_global_attn_indexes, window_size=a.window_size,
            out_chans=a.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=a.prompt_embed_dim, image_embedding_size=(grid, grid),
            input_image_size=(a.image_size, a.image_size), mask_in_chans=a.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=a.decoder_depth, embedding_dim=a.prompt_embed_dim,
                                          mlp_dim=a.decoder_mlp_dim, num_heads=a.decoder_num_heads),
            transformer_dim=a.prompt_embed_dim, iou_head_depth=a.iou_head_depth,
            iou_head_hidden_dim=a.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


# ------------------------------------------------------------------ checkpoints
def weight_dirs() -> list[Path]:
    """Folders searched for an official checkpoint when no path is given, in order."""
    import torch

    dirs = []
    if os.environ.get("SEG_SUITE_WEIGHTS"):
        dirs.append(Path(os.environ["SEG_SUITE_WEIGHTS"]).expanduser())
    dirs.append(Path.home() / ".cache" / "seg_suite" / "weights")
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    return dirs


def _where_to_get(arch: SamArch) -> str:
    if arch.checkpoint_file is None:
        return f"SAM type {arch.name} has no official checkpoint"
    return (f"the official {arch.name} checkpoint is '{arch.checkpoint_file}', from {SAM_URL}{arch.checkpoint_file} "
            f"(listed at {SAM_PAGE}); put it in {weight_dirs()[-2]}/ (or $SEG_SUITE_WEIGHTS) "
            f"or pass --sam-checkpoint PATH")


def resolve_sam_checkpoint(sam_type: str | SamArch, checkpoint: str | os.PathLike | None = None) -> Path:
    """The local checkpoint file to load; MissingWeightsError naming the official file if absent.

    Nothing is downloaded: an explicit ``checkpoint`` must exist; otherwise the official file
    name is looked for in :func:`weight_dirs`.
    """
    arch = get_arch(sam_type)
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.exists():
            raise MissingWeightsError(f"SAM checkpoint not found: {path}; {_where_to_get(arch)}")
        if not path.is_file():
            raise UserError(f"SAM checkpoint path is not a file: {path}")
        return path
    if arch.checkpoint_file is not None:
        for folder in weight_dirs():
            if (folder / arch.checkpoint_file).is_file():
                return folder / arch.checkpoint_file
    raise MissingWeightsError(
        f"SAM {arch.name} needs a checkpoint and none was given or found "
        f"(looked in {', '.join(map(str, weight_dirs()))}); {_where_to_get(arch)}"
    )


def _mismatch_message(path: Path, arch: SamArch, missing: list[str], unexpected: list[str], shapes: list[str]) -> str:
    parts = [f"{len(missing)} missing", f"{len(unexpected)} unexpected", f"{len(shapes)} of another shape"]
    example = (shapes or missing or unexpected)[0]
    guess = ""
    if "image_encoder.patch_embed.proj.weight" in example:
        guess = " (the image encoder width differs: is --sam-type right?)"
    return (f"checkpoint {path} does not fit SAM {arch.name}: {', '.join(parts)} weights, e.g. {example}{guess}; "
            f"pass the --sam-type the file was trained as")


def load_sam_state_dict(model, path: str | os.PathLike, arch: SamArch) -> None:
    """Load ``path`` into ``model`` strictly (weights_only); a one-line UserError if it does not fit."""
    from seg_suite.io.checkpoints import load_state_dict, strip_prefixes

    path = Path(path)
    state = strip_prefixes(load_state_dict(path), ("module.",))
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k}: {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model"
                    for k in set(own) & set(state) if state[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        raise UserError(_mismatch_message(path, arch, missing, unexpected, shapes))
    model.load_state_dict(state, strict=True)


def load_sam(sam_type: str | SamArch = DEFAULT_SAM_TYPE, checkpoint: str | os.PathLike | None = None,
             device: str | torch.device = "cpu", random_init: bool = False, seed: int = 0,
             precision: str = DEFAULT_PRECISION):
    """A SAM model on ``device`` in eval mode.

    ``random_init`` skips the checkpoint and initialises the weights from ``seed`` (timing and
    tests only: the masks are meaningless), reproducibly across processes. ``precision`` (fp32,
    bf16, fp16; :mod:`seg_suite.features.precision`) is the autocast of the image encoder, refused
    in one line where ``device`` lacks it; its embedding, and all that follows, stay float32.
    """
    import torch

    arch = get_arch(sam_type)
    check_precision(precision, torch.device(device))
    if random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_sam(arch)
    else:
        path = resolve_sam_checkpoint(arch, checkpoint)
        model = build_sam(arch)
        load_sam_state_dict(model, path, arch)
    try:
        model = model.to(device).eval()
    except (RuntimeError, AssertionError) as err:
        raise UserError(f"cannot use device '{device}': {' '.join(str(err).split())[:200]}") from None
    AutocastForward.apply(model.image_encoder, precision)
    return model


def embed_image(predictor, image: np.ndarray) -> None:
    """Compute ``image``'s embedding once (HxWx3 uint8 RGB); every later prompt reuses it."""
    predictor.set_image(image, image_format="RGB")


# ------------------------------------------------------------------ generation
SAM_SOURCE = "segment-anything's"  # automatic_mask_generator.py, SamAutomaticMaskGenerator.__init__
FRACTION = between(0, 1)


@dataclass(frozen=True)
class SamGeneratorParams(Params):
    """``SamAutomaticMaskGenerator`` settings that change the result.

    Defaults are segment-anything's (``automatic_mask_generator.py``, ``__init__``); they were
    chosen by its authors for ViT-H. ``points_per_batch`` only trades memory for speed and is
    passed separately.
    """

    points_per_side: int = param(32, "an N x N grid of point prompts per image (crop layer 0)", SAM_SOURCE,
                                 at_least(1), metavar="N")
    pred_iou_thresh: float = param(0.88, "drop masks whose predicted IoU is below T", SAM_SOURCE, FRACTION,
                                   metavar="T")
    stability_score_thresh: float = param(
        0.95, "drop masks whose stability score (IoU of the mask thresholded at +-offset) is below T", SAM_SOURCE,
        FRACTION, metavar="T")
    stability_score_offset: float = param(1.0, "logit offset used by the stability score", SAM_SOURCE, metavar="O")
    box_nms_thresh: float = param(0.7, "box IoU above which duplicate masks within one crop are suppressed",
                                  SAM_SOURCE, FRACTION, metavar="T")
    crop_n_layers: int = param(0, "also run on crops: layer i splits the image into 2^i x 2^i overlapping crops",
                               f"{SAM_SOURCE}, whole image only", at_least(0), metavar="L")
    crop_nms_thresh: float = param(
        0.7, "cross-crop NMS: with --crop-n-layers > 0, box IoU above which a mask duplicated by another crop is "
             "suppressed (the smaller crop's mask wins); 1.0 keeps every crop's masks", SAM_SOURCE, FRACTION,
        metavar="T")
    crop_overlap_ratio: float = param(512 / 1500, "overlap of neighbouring crops in layer 1, as a fraction of the "
                                                  "image side", f"{SAM_SOURCE} 512/1500",
                                      between(0, 1, open_high=True), metavar="R")
    crop_n_points_downscale_factor: int = param(1, "points per side in crop layer i are divided by F^i", SAM_SOURCE,
                                                at_least(1), metavar="F")
    min_mask_region_area: int = param(0, "remove holes and islands smaller than A pixels from each mask, then "
                                         "re-run NMS", f"{SAM_SOURCE}, off", at_least(0), metavar="A")


@dataclass
class SamMask:
    """One generated mask: ``mask`` bool HxW at the image's size, SAM's scores, its prompt point."""

    mask: np.ndarray
    predicted_iou: float
    stability_score: float
    point: list[float] = field(default_factory=list)  # (x, y) in image pixels

    @property
    def score(self) -> float:
        """The predicted IoU clipped to [0, 1] (SAM's IoU head is an unbounded regression)."""
        return float(min(1.0, max(0.0, self.predicted_iou)))


def make_generator(model, params: SamGeneratorParams, points_per_batch: int = 64):
    """A ``SamAutomaticMaskGenerator`` for ``model`` (64 points per batch: segment-anything's default)."""
    from segment_anything import SamAutomaticMaskGenerator

    return SamAutomaticMaskGenerator(model, points_per_batch=points_per_batch, output_mode="binary_mask",
                                     **params.to_dict())


def generate_masks(generator, image: np.ndarray) -> list[SamMask]:
    """Class-agnostic masks for one HxWx3 uint8 RGB image, best predicted IoU first.

    The order is fixed (predicted IoU, then stability, then the generator's order), so the
    output does not depend on batch composition.
    """
    records = generator.generate(image)
    masks = [SamMask(np.asarray(r["segmentation"], bool), float(r["predicted_iou"]), float(r["stability_score"]),
                     [float(v) for v in r["point_coords"][0]]) for r in records]
    order = sorted(range(len(masks)), key=lambda i: (-masks[i].predicted_iou, -masks[i].stability_score, i))
    return [masks[i] for i in order if masks[i].mask.any()]
