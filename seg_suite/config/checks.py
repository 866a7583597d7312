"""Values that cannot train anything, refused key by key before a run starts.

:data:`VALUE_RULES` lists them (``SOLVER.MAX_ITER -5``, ``SOLVER.IMS_PER_BATCH 0``, ...);
:func:`check_config` applies them to a merged config.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from detectron2.config import CfgNode as CN

from seg_suite.config.loading import lookup, shorten
from seg_suite.errors import UserError


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# key, test, what the value must be. Applied to the merged config; a value failing its test is a
# one-line error naming the key, the value and this requirement.
VALUE_RULES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("SOLVER.MAX_ITER", lambda v: _number(v) and v >= 1, "at least 1 (the number of training iterations)"),
    ("SOLVER.IMS_PER_BATCH", lambda v: _number(v) and v >= 1, "at least 1 (images per step, over all processes)"),
    ("SOLVER.BASE_LR", lambda v: _number(v) and v > 0, "a positive learning rate"),
    ("SOLVER.CHECKPOINT_PERIOD", lambda v: _number(v) and v >= 1, "at least 1 (iterations between checkpoints)"),
    ("SOLVER.WARMUP_ITERS", lambda v: _number(v) and v >= 0, "0 or more"),
    ("SOLVER.WARMUP_FACTOR", lambda v: _number(v) and 0 <= v <= 1, "between 0 and 1"),
    ("SOLVER.GAMMA", lambda v: _number(v) and v > 0, "positive (the learning-rate decay factor)"),
    ("SOLVER.MOMENTUM", lambda v: _number(v) and v >= 0, "0 or more"),
    ("SOLVER.WEIGHT_DECAY", lambda v: _number(v) and v >= 0, "0 or more"),
    ("SOLVER.BACKBONE_MULTIPLIER", lambda v: _number(v) and v >= 0, "0 or more"),
    ("SOLVER.STEPS", lambda v: all(_number(s) and s >= 0 for s in v), "a list of iterations, each 0 or more"),
    ("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", lambda v: _number(v) and v > 0, "positive"),
    ("DATALOADER.NUM_WORKERS", lambda v: _number(v) and v >= 0, "0 or more (0 loads data in the main process)"),
    ("MODEL.SEM_SEG_HEAD.NUM_CLASSES", lambda v: _number(v) and v >= 1, "at least 1"),
    ("MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", lambda v: _number(v) and v >= 1, "at least 1"),
    ("MODEL.MASK_FORMER.DEC_LAYERS", lambda v: _number(v) and v >= 1, "at least 1"),
    ("MODEL.MASK_FORMER.TRAIN_NUM_POINTS", lambda v: _number(v) and v >= 1, "at least 1"),
    ("MODEL.MASK_FORMER.HIDDEN_DIM", lambda v: _number(v) and v >= 1, "at least 1"),
    ("INPUT.IMAGE_SIZE", lambda v: _number(v) and v >= 1, "at least 1 (pixels)"),
    ("INPUT.MIN_SCALE", lambda v: _number(v) and v > 0, "positive"),
    ("INPUT.MAX_SCALE", lambda v: _number(v) and v > 0, "positive"),
    ("INPUT.COPY_PASTE.PROB", lambda v: _number(v) and 0 <= v <= 1, "between 0 and 1"),
    ("TEST.EVAL_PERIOD", lambda v: _number(v) and v >= 0, "0 or more (0: evaluate once, after training)"),
    ("TEST.DETECTIONS_PER_IMAGE", lambda v: _number(v) and v >= 1, "at least 1"),
)


def check_config(cfg: CN, num_processes: int = 1) -> None:
    """Refuse (one line) values of :data:`VALUE_RULES` that cannot work, and a batch that does not
    split evenly over ``num_processes`` training processes."""
    for key, test, requirement in VALUE_RULES:
        value = lookup(cfg, key)
        if value is None:
            continue  # a key this config does not have (e.g. a foreign layout): nothing to check
        if not test(value):
            raise UserError(f"config value {key} {shorten(value)} is invalid: it must be {requirement}")
    if cfg.INPUT.MIN_SCALE > cfg.INPUT.MAX_SCALE:
        raise UserError(f"config values INPUT.MIN_SCALE {cfg.INPUT.MIN_SCALE} and INPUT.MAX_SCALE "
                        f"{cfg.INPUT.MAX_SCALE} are invalid: the minimum is above the maximum")
    batch = cfg.SOLVER.IMS_PER_BATCH
    if num_processes > 1 and batch % num_processes:
        raise UserError(f"config value SOLVER.IMS_PER_BATCH {batch} does not split over {num_processes} "
                        f"processes (--num-gpus x --num-machines); use a multiple of {num_processes}")
