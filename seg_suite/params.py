"""Parameters that check themselves: frozen dataclasses whose fields carry their help text, the
published source of their default and the rule their value must follow.

    @dataclass(frozen=True)
    class CutParams(Params):
        tau: float = param(0.15, "affinity threshold", source="CutLER's README", check=between(0, 1, open=True))

``CutParams(tau=2)`` raises :class:`ParamError` with the line
``CutParams.tau must be in (0, 1), got 2``, so a library caller is held to the same rules as
the command line, whose flags :mod:`seg_suite.cli._params` derives from these fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from seg_suite.errors import UserError


class ParamError(UserError, ValueError):
    """A parameter outside its allowed values; ``name``, ``value`` and ``rule`` say which and why."""

    def __init__(self, owner: str, name: str, value: Any, rule: str):
        self.owner, self.name, self.value, self.rule = owner, name, value, rule
        super().__init__(f"{owner}.{name} must be {rule}, got {value!r}")


@dataclass(frozen=True)
class Rule:
    """What a value must be: ``text`` completes "must be ...", ``test`` decides."""

    text: str
    test: Callable[[Any], bool]
    choices: tuple | None = None  # the allowed values, where they can be listed

    def holds(self, value) -> bool:
        try:
            return bool(self.test(value))
        except (TypeError, ValueError):  # a value of the wrong kind (text for a number) breaks the rule
            return False


def between(low: float, high: float, open: bool = False, open_high: bool | None = None) -> Rule:
    """low <= value <= high; ``open`` excludes both ends, ``open_high`` only the upper one."""
    open_low = open
    open_high = open if open_high is None else open_high
    text = f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    return Rule(text, lambda v: (low < v if open_low else low <= v) and (v < high if open_high else v <= high))


def at_least(low: float) -> Rule:
    return Rule(f"at least {low:g}", lambda v: v >= low)


POSITIVE = Rule("positive", lambda v: v > 0)


def one_of(*choices) -> Rule:
    return Rule(f"one of {', '.join(map(str, choices))}", lambda v: v in choices, tuple(choices))


@dataclass(frozen=True)
class IntTuple:
    """The text form of a tuple of integers, e.g. ``128x160`` or ``1,2`` (for command lines)."""

    sep: str
    describe: str  # what the text must look like, completing "must be ..."
    length: int | None = None
    sort_unique: bool = False  # a set of values, given in any order

    def parse(self, text: str) -> tuple[int, ...]:
        values = [int(v) for v in text.lower().split(self.sep) if v.strip()]
        if self.length is not None and len(values) != self.length:
            raise ValueError(f"expected {self.length} values")
        return tuple(sorted(set(values))) if self.sort_unique else tuple(values)

    def format(self, value) -> str:
        return self.sep.join(str(v) for v in value)


INT_SET = IntTuple(",", "comma-separated integers", sort_unique=True)  # e.g. frame gaps "1,2"


def param(default, help: str, source: str | None = None, check: Rule | None = None,
          text: IntTuple | None = None, metavar: str | None = None):
    """A dataclass field with its help, the source of its default and its rule."""
    meta = {"help": help, "source": source, "check": check, "text": text, "metavar": metavar}
    return dataclasses.field(default=default, metadata=meta)


class Params:
    """Base of the frozen parameter dataclasses: checked when built, recorded by :meth:`to_dict`."""

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ParamError` for the first field that breaks its rule (then :meth:`check`)."""
        for f in dataclasses.fields(self):
            rule = f.metadata.get("check")
            if rule is not None and not rule.holds(getattr(self, f.name)):
                self.refuse(f.name, rule.text)
        self.check()

    def check(self) -> None:
        """Rules that relate several fields; a subclass overrides it and calls :meth:`refuse`."""

    def refuse(self, name: str, rule: str):
        raise ParamError(type(self).__name__, name, getattr(self, name), rule)

    def to_dict(self) -> dict:
        """The fields as JSON holds them (tuples as lists), for the record in an output."""
        return _as_json(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict):
        """The parameters :meth:`to_dict` recorded."""
        values = dict(d)
        for f in dataclasses.fields(cls):
            value, factory = values.get(f.name), f.default_factory
            if isinstance(value, list):
                values[f.name] = tuple(value)
            elif isinstance(value, dict) and isinstance(factory, type) and issubclass(factory, Params):
                values[f.name] = factory.from_dict(value)
        return cls(**values)


def _as_json(value):
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_json(v) for v in value]
    return value
