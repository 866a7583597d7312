"""How a config file becomes a CfgNode: read as data, merged with yacs' checks.

:func:`merge_config_file` reads a file and its ``_BASE_`` chain with
:func:`seg_suite.io.safe_yaml.load_config_chain` (a YAML Python tag is refused, never run) and
merges the mapping through ``CfgNode.merge_from_other_cfg``, which keeps yacs' checks: unknown
keys and values of the wrong type are refused. :func:`merge_overrides` does the same for
``KEY VALUE`` pairs of a command line. Every failure is one :class:`~seg_suite.errors.UserError`
line naming the file or the override.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from detectron2.config import CfgNode as CN

from seg_suite.errors import UserError
from seg_suite.io.safe_yaml import load_config_chain


def shorten(value: Any, limit: int = 60) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(value: Any) -> str:
    if isinstance(value, CN):
        return "mapping of keys"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            tuple: "list", type(None): "null"}.get(type(value), type(value).__name__)


def lookup(node: Any, key: str) -> Any:
    """The value at the dotted ``key`` of a nested mapping, or None where it has none."""
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
                         f"default: seg_suite/config/ and detectron2's defaults)")
    mismatch = re.search(r"for config key: (\S+)$", text)
    if text.startswith("Type mismatch") and mismatch:
        key = mismatch.group(1)
        default, value = lookup(cfg, key), new_value(key)
        if isinstance(default, CN):
            return UserError(f"{source}: {key} is a group of keys (KEY: value lines indented under it), "
                             f"got the {_type_name(value)} {shorten(value)}")
        hint = f" (write {float(value)!r})" if isinstance(default, float) and isinstance(value, int) else ""
        return UserError(f"{source}: {key} must be a {_type_name(default)} like its default {shorten(default)}, "
                         f"got the {_type_name(value)} {shorten(value)}{hint}")
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
        raise UserError(f"bad config file {path}: VERSION {shorten(version)} is not the config layout this "
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
        raise _merge_error(err, cfg, f"bad config file {path}", lambda key: lookup(mapping, key)) from None
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


