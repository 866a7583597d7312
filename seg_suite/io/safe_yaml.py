"""YAML that is only ever data: config files and their ``_BASE_`` chains, read with a safe loader.

detectron2's ``CfgNode.merge_from_file`` (through fvcore) falls back to ``yaml.unsafe_load``, so
a config holding ``!!python/object/apply:os.system [...]`` runs a command. Every YAML file that
seg_suite reads goes through :func:`load_yaml` instead, and every config chain through
:func:`load_config_chain`. A Python tag is refused with one line naming the file and the line.

``_BASE_`` follows detectron2's rule: a relative path is relative to the file that names it, the
base is loaded first and the file's own keys are merged over it, key by key in nested mappings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from seg_suite.errors import UserError

BASE_KEY = "_BASE_"
MAX_BASE_DEPTH = 16  # deeper chains are a loop or a mistake
MAX_YAML_BYTES = 16 << 20  # a config is a few KB; refuse to parse anything huge
# Values a document may expand to, counting each use of an alias (&anchor / *alias) anew. A
# Mask2Former config has about a thousand; nested aliases can make a 1 KB file expand to
# billions ("billion laughs"), which every later copy of the config would materialise.
MAX_YAML_VALUES = 200_000


def _check_expanded_size(data: Any, path: Path) -> None:
    budget, stack = MAX_YAML_VALUES, [data]
    while stack:
        node = stack.pop()
        budget -= 1
        if budget < 0:
            raise UserError(f"{path}: expands to more than {MAX_YAML_VALUES} values (nested aliases?); "
                            f"that is not a config file")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def load_yaml(path: str | os.PathLike, what: str = "config file") -> Any:
    """Parse ``path`` with ``yaml.SafeLoader``; one-line :class:`UserError` for anything wrong."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise UserError(f"{what} {path} is over {MAX_YAML_BYTES >> 20} MB; that is not a config file")
        with open(path, encoding="utf-8") as fh:
            data = yaml.load(fh, Loader=yaml.SafeLoader)  # noqa: S506 - SafeLoader: data only
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a folder, not a YAML file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {what} {path}: {getattr(err, 'strerror', None) or err}") from None
    except yaml.constructor.ConstructorError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}, line {mark.line + 1}" if mark else str(path)
        tag = (err.problem or "").replace("could not determine a constructor for the tag", "").strip()
        tag = tag.strip("'").replace("tag:yaml.org,2002:", "!!")
        raise UserError(f"{where}: refused the YAML tag {tag or '(unknown)'}: config files are data and "
                        f"cannot run code; write the value out literally (e.g. the list of sizes "
                        f"[256, 288, 320] instead of a !!python/object/apply:eval expression)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UserError(f"{where}: not valid YAML ({problem}); fix the syntax") from None
    _check_expanded_size(data, path)
    return data


def _merge(over: dict, base: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(value, out[key])
        else:
            out[key] = value
    return out


def load_config_chain(path: str | os.PathLike, what: str = "config file", _seen: tuple = ()) -> dict:
    """A config file as one mapping, its ``_BASE_`` chain resolved (see the module docstring)."""
    path = Path(os.path.expanduser(os.fspath(path)))
    real = os.path.realpath(path)
    if real in _seen:
        raise UserError(f"{path}: the {BASE_KEY} chain loops back to this file")
    if len(_seen) >= MAX_BASE_DEPTH:
        raise UserError(f"{path}: {BASE_KEY} chain deeper than {MAX_BASE_DEPTH} files")
    data = load_yaml(path, what)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path} holds a YAML {type(data).__name__}, not a mapping of config keys "
                        f"(KEY: value lines at the top level)")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise UserError(f"{path}: {BASE_KEY} must be the path of another YAML file, got {base!r}")
    if "://" in base:
        raise UserError(f"{path}: {BASE_KEY} {base} is remote; nothing is downloaded, use a local file")
    base_path = Path(os.path.expanduser(base))
    if not base_path.is_absolute():
        base_path = path.parent / base_path
    return _merge(data, load_config_chain(base_path, f"{BASE_KEY} file of {path}", _seen + (real,)))
