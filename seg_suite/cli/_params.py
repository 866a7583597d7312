"""Command-line flags derived from the parameter dataclasses of :mod:`seg_suite.params`.

    add_params(group, MaskCutParams, "tau", "num_masks")      --tau --num-masks, help from the fields
    params = params_from_args(args, MaskCutParams)            the dataclass checks the values

Each flag's help is the field's, followed by ``(default: VALUE, SOURCE)``; choices, booleans
(``--x/--no-x``) and text forms (``128x160``) come from the field's rule and text form. A value
the dataclass refuses becomes one ``error:`` line naming the flag (exit code 2).
"""

from __future__ import annotations

import argparse
import dataclasses

from seg_suite.errors import UserError
from seg_suite.params import ParamError


def flag_of(name: str, flags: dict[str, str] | None = None) -> str:
    """The flag of field ``name``: ``flags[name]`` where given, else ``--name-with-dashes``."""
    return (flags or {}).get(name) or "--" + name.replace("_", "-")


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _shown(value, text) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if text is not None:
        return text.format(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_params(parser, cls, *names: str, flags: dict[str, str] | None = None,
               defaults: dict[str, tuple] | None = None) -> None:
    """Add a flag for each field ``names`` of the dataclass ``cls`` to ``parser`` (or an argument group).

    ``flags`` renames fields' flags ({"n_clusters": "--k"}); ``defaults`` replaces a field's default
    and its source for this command ({"n_clusters": (27, "COCO-Stuff-27")}).
    """
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    for name in names:
        meta = by_name[name].metadata
        default, source = (defaults or {}).get(name, (by_name[name].default, meta["source"]))
        text, rule = meta["text"], meta["check"]
        note = f"default: {_shown(default, text)}" + (f", {source}" if source else "")
        kwargs = {"default": default, "help": f"{meta['help']} ({note})".replace("%", "%%")}
        if isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif text is None:  # a text form is parsed by params_from_args, so that a bad one is one error line
            kwargs["type"] = type(default)
        if rule is not None and rule.choices is not None:
            kwargs["choices"] = rule.choices
        if meta["metavar"]:
            kwargs["metavar"] = meta["metavar"]
        flag = flag_of(name, flags)
        parser.add_argument(flag, dest=_dest(flag), **kwargs)


def params_from_args(args, cls, flags: dict[str, str] | None = None, **given):
    """``cls`` built from every field whose flag is in ``args`` (the rest keep their defaults; ``given``
    sets fields directly); a refused value is a :class:`UserError` naming its flag."""
    values = dict(given)
    for f in dataclasses.fields(cls):
        flag = flag_of(f.name, flags)
        if f.name in values or not hasattr(args, _dest(flag)):
            continue
        value, text = getattr(args, _dest(flag)), f.metadata.get("text")
        if text is not None and isinstance(value, str):
            try:
                value = text.parse(value)
            except ValueError:
                raise UserError(f"{flag} must be {text.describe}, got {value!r}") from None
        values[f.name] = value
    try:
        return cls(**values)
    except ParamError as err:
        text = next(f.metadata.get("text") for f in dataclasses.fields(cls) if f.name == err.name)
        raise UserError(f"{flag_of(err.name, flags)} must be {err.rule}, got {_shown(err.value, text)}") from None
