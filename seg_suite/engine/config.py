"""Config keys of the data and training side, and how a config file becomes a checked CfgNode.

Keys added on top of :func:`seg_suite.config.add_seg_suite_config`:

- ``INPUT.COPY_PASTE.ENABLED`` / ``PROB``: Simple Copy-Paste in the instance mapper (Ghiasi et al.
  2021). Off by default, as in the official Mask2Former configs; when on, ``PROB`` is the chance
  that an image receives objects from another one (1.0: every image, the paper's setting).
- ``DATASETS.PSEUDO_COCO``: ``[[name, json_file, image_root], ...]`` COCO (pseudo-)label files
  registered before training (:func:`seg_suite.data.datasets.register_from_cfg`).
- ``DATASETS.PSEUDO_PANOPTIC``: ``[[name, root, split], ...]`` panoptic pseudo-label roots
  (``seg-suite panoptic --output ROOT --split SPLIT``) registered with the categories of
  ``ROOT/annotations/panoptic_SPLIT.json`` (:func:`seg_suite.data.datasets.register_pseudo_panoptic`,
  applied by the same call as ``PSEUDO_COCO``); set ``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` to K + S.
- ``DATASETS.SYNTHETIC_ROOT``: folder of a synthetic set (``seg-suite make-synthetic``) to register
  as ``synthetic_*``; "" keeps ``$DETECTRON2_DATASETS/synthetic``.

Loading. A config file is data: :func:`merge_config_file` reads it and its ``_BASE_`` chain with
:func:`seg_suite.io.safe_yaml.load_config_chain` (a YAML Python tag is refused, never run) and
merges the mapping through ``CfgNode.merge_from_other_cfg``, which keeps yacs' checks: unknown
keys and values of the wrong type are refused. :func:`merge_overrides` does the same for
``KEY VALUE`` pairs of a command line. Every failure is one :class:`~seg_suite.errors.UserError`
line naming the file or the override.

Checking. :data:`VALUE_RULES` lists, key by key, the values that cannot train anything
(``SOLVER.MAX_ITER -5``, ``SOLVER.IMS_PER_BATCH 0``, ...); :func:`check_config` applies them to
the merged config.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

from detectron2.config import CfgNode as CN

from seg_suite.errors import UserError
from seg_suite.io.safe_yaml import load_config_chain


def add_training_config(cfg: CN) -> None:
    """Add (in place) the keys listed in the module docstring."""
    cfg.INPUT.COPY_PASTE = CN()
    cfg.INPUT.COPY_PASTE.ENABLED = False
    cfg.INPUT.COPY_PASTE.PROB = 1.0
    cfg.DATASETS.PSEUDO_COCO = []
    cfg.DATASETS.PSEUDO_PANOPTIC = []
    cfg.DATASETS.SYNTHETIC_ROOT = ""


# ------------------------------------------------------------------ merging
def _short(value: Any, limit: int = 60) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(value: Any) -> str:
    if isinstance(value, CN):
        return "mapping of keys"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            tuple: "list", type(None): "null"}.get(type(value), type(value).__name__)


def _lookup(node: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _check_key_names(mapping: dict, source: str, prefix: str = "") -> None:
    """yacs joins key names with '.' and would fail on a non-string key with a TypeError."""
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise UserError(f"{source}: config key {prefix}{key!r} is not a name; keys are words such as SOLVER")
        if isinstance(value, dict):
            _check_key_names(value, source, f"{prefix}{key}.")


def _merge_error(err: Exception, cfg: CN, source: str, new_value: Callable[[str], Any]) -> UserError:
    """One line for what yacs raised while merging ``source`` into ``cfg``."""
    text = str(err.args[0]) if err.args else type(err).__name__
    unknown = re.match(r"Non-existent (?:config )?key: (\S+)", text)
    if unknown:
        return UserError(f"{source}: unknown config key {unknown.group(1)}; check its spelling (every key and its "
                         f"default: seg_suite/config.py, seg_suite/engine/config.py and detectron2's defaults)")
    mismatch = re.search(r"for config key: (\S+)$", text)
    if text.startswith("Type mismatch") and mismatch:
        key = mismatch.group(1)
        default, value = _lookup(cfg, key), new_value(key)
        if isinstance(default, CN):
            return UserError(f"{source}: {key} is a group of keys (KEY: value lines indented under it), "
                             f"got the {_type_name(value)} {_short(value)}")
        hint = f" (write {float(value)!r})" if isinstance(default, float) and isinstance(value, int) else ""
        return UserError(f"{source}: {key} must be a {_type_name(default)} like its default {_short(default)}, "
                         f"got the {_type_name(value)} {_short(value)}{hint}")
    first = " ".join(text.split())
    return UserError(f"{source}: {first[:300]}")


def merge_config_file(cfg: CN, path: str) -> dict:
    """Merge the config file ``path`` (and its ``_BASE_`` chain) into ``cfg``, never running code from it;
    returns the mapping the files hold (to tell keys they set from defaults).

    ``VERSION``: absent or equal to ``cfg.VERSION`` (detectron2's current config layout) is
    accepted; any other value is refused, since no conversion of older layouts is done here.
    """
    mapping = load_config_chain(path)
    version = mapping.pop("VERSION", None)
    if version is not None and version != cfg.VERSION:
        raise UserError(f"bad config file {path}: VERSION {_short(version)} is not the config layout this "
                        f"detectron2 reads (VERSION {cfg.VERSION}); update the file to the current keys and set VERSION: "
                        f"{cfg.VERSION}, or remove the line")
    _check_key_names(mapping, str(path))
    try:
        loaded = CN(mapping)
    except AssertionError as err:  # a value of a type a config cannot hold (e.g. a YAML date)
        kind = re.search(r"Key (\S+) with value <class '([\w.]+)'>", str(err))
        what = f"{kind.group(1)} holds a {kind.group(2)}" if kind else " ".join(str(err).split())[:200]
        raise UserError(f"bad config file {path}: {what}; config values are numbers, strings, booleans, "
                        f"lists or null") from None
    try:
        cfg.merge_from_other_cfg(loaded)
    except (KeyError, ValueError, AssertionError, TypeError) as err:
        raise _merge_error(err, cfg, f"bad config file {path}", lambda key: _lookup(mapping, key)) from None
    return mapping


def merge_overrides(cfg: CN, opts: list) -> None:
    """Merge command-line ``KEY VALUE`` pairs into ``cfg`` (values are Python literals or plain words)."""
    opts = [str(x) for x in opts]
    flags = [x for x in (opts[0::2] + opts[-1:]) if x.startswith("--")]
    if flags:
        raise UserError(f"{flags[0]} stands among the KEY VALUE config overrides; put flags before them")
    if len(opts) % 2:
        raise UserError(f"config overrides come in KEY VALUE pairs; {opts[-1]!r} has no value")
    values = dict(zip(opts[0::2], opts[1::2]))
    for key in values:
        if cfg.key_is_deprecated(key) or cfg.key_is_renamed(key):
            continue  # yacs skips or explains these
        node, parts = cfg, key.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, CN):
                raise UserError(f"bad config override: {'.'.join(parts[:depth])} is a value, not a group of keys, "
                                f"so {key} does not exist")
            if part not in node:
                raise _merge_error(KeyError(f"Non-existent config key: {key}"), cfg, "bad config override",
                                   lambda _: None)
            node = node[part]
    try:
        cfg.merge_from_list(opts)
    except (KeyError, ValueError, AssertionError, TypeError) as err:
        raise _merge_error(err, cfg, "bad config override",
                           lambda key: cfg._decode_cfg_value(values.get(key))) from None


# ------------------------------------------------------------------ checking
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
        value = _lookup(cfg, key)
        if value is None:
            continue  # a key this config does not have (e.g. a foreign layout): nothing to check
        if not test(value):
            raise UserError(f"config value {key} {_short(value)} is invalid: it must be {requirement}")
    if cfg.INPUT.MIN_SCALE > cfg.INPUT.MAX_SCALE:
        raise UserError(f"config values INPUT.MIN_SCALE {cfg.INPUT.MIN_SCALE} and INPUT.MAX_SCALE "
                        f"{cfg.INPUT.MAX_SCALE} are invalid: the minimum is above the maximum")
    batch = cfg.SOLVER.IMS_PER_BATCH
    if num_processes > 1 and batch % num_processes:
        raise UserError(f"config value SOLVER.IMS_PER_BATCH {batch} does not split over {num_processes} "
                        f"processes (--num-gpus x --num-machines); use a multiple of {num_processes}")
