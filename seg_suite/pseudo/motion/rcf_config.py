"""The RCF segmenter's settings (:class:`RCFConfig`), apart from the network so that they can be read
(by the command line's flags, for one) without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from seg_suite.params import INT_SET, POSITIVE, IntTuple, Params, Rule, at_least, one_of, param
from seg_suite.pseudo.motion.flow import DIS_PRESETS

BACKBONES = ("resnet18", "resnet50")
RCF = "RCF"  # github.com/TonyLianLong/RCF-UnsupVideoSeg, configs/rcf/rcf_stage1.yaml and rcf_stage2.1.yaml
SIZE = IntTuple("x", "HxW", length=2)


@dataclass(frozen=True)
class RCFConfig(Params):
    """The segmenter and its training. Defaults are RCF's configs except the sizes and step counts,
    which are small so that CPU training takes minutes."""

    backbone: str = param("resnet18", "ResNet", "for CPU; RCF uses resnet50 from DenseCL weights",
                          one_of(*BACKBONES))
    num_masks: int = param(4, "K masks", f"{RCF} mask_layer", at_least(2))
    head_channels: int = param(128, "channels of the mask head", check=at_least(1))
    size: tuple[int, int] = param((128, 160), "frames are resized to this for training and inference", None,
                                  Rule("two sides, multiples of 4 and at least 32",
                                       lambda s: len(s) == 2 and all(v >= 32 and v % 4 == 0 for v in s)),
                                  SIZE, "HxW")
    gaps: tuple[int, ...] = param((1,), "frame gaps of the training pairs", None,
                                  Rule("positive integers", lambda g: min(g) >= 1), INT_SET, "1[,2]")
    batch_size: int = param(8, "frame pairs per step", RCF, at_least(1))
    steps: int = param(300, "motion-stage steps", f"small for CPU; {RCF}: 200 epochs of DAVIS on a GPU", at_least(1))
    lr: float = param(1e-4, "motion-stage Adam learning rate", RCF, POSITIVE)
    weight_decay: float = 1e-4
    min_lr: float = 1e-6
    w_entropy: float = 0.05
    residual_scale: float = 10.0
    residual_div: float = 10.0
    clamp_flow: float = 20.0
    segment_model: str = "affine"
    stage2_steps: int = param(0, "appearance-stage steps with dense-CRF targets (~0.05 s per image per step on "
                                 "CPU)", f"0 = skip; {RCF}: 20 epochs", at_least(0))
    stage2_lr: float = 1e-5
    w_crf: float = 10.0
    crf_pos_weight: float = 2.0
    crf_neg_weight: float = 1.0
    ema: float = 0.999
    eval_threshold: float = 0.35  # RCF eval_pos_th
    flow_backend: str = "dis"
    flow_preset: str = param("fast", "DIS preset of the training flows", check=one_of(*DIS_PRESETS))
    seed: int = param(0, "seed")
