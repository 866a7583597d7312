"""Which images fit the cluster -> class mapping, as three small immutable types.

- :class:`HeldOut`: a disjoint random fraction of the scored images fits the mapping and is not scored
  (the default: no image both fits and is scored);
- :class:`ScoredSplit`: the scored images themselves (optimistic: fitted on the test data);
- :class:`SeparateSplit`: another split, whose data the caller gives the evaluation function.

Each says how it splits the sorted names of the scored split into (fit, scored) and describes itself
for the results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from seg_suite.errors import UserError


def split_fit_score(names: list[str], fraction: float = 0.5, seed: int = 0) -> tuple[list[str], list[str]]:
    """A seeded split of ``names`` into disjoint (fit, scored) parts, both non-empty."""
    names = sorted(names)
    if len(names) < 2:
        raise UserError("a held-out fit split needs at least 2 images; give a separate fit split or "
                        "fit on the scored split explicitly")
    if not 0 < fraction < 1:
        raise UserError(f"the fit fraction must be in (0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(len(names))
    n_fit = min(max(1, int(round(fraction * len(names)))), len(names) - 1)
    fit = sorted(names[i] for i in order[:n_fit])
    return fit, sorted(names[i] for i in order[n_fit:])


def _described(what: str, n_fit: int, n_scored: int) -> str:
    return f"{what}; {n_fit} images fit the mapping, {n_scored} are scored"


@dataclass(frozen=True)
class HeldOut:
    fraction: float = 0.5
    seed: int = 0

    def split(self, names: list[str]) -> tuple[list[str], list[str]]:
        return split_fit_score(names, self.fraction, self.seed)

    def describe(self, n_fit: int, n_scored: int) -> str:
        return _described(f"a disjoint random {self.fraction:g} of the images (seed {self.seed}), not scored",
                          n_fit, n_scored)


@dataclass(frozen=True)
class ScoredSplit:
    def split(self, names: list[str]) -> tuple[list[str], list[str]]:
        names = sorted(names)
        return names, names

    def describe(self, n_fit: int, n_scored: int) -> str:
        return _described("the scored images themselves (optimistic: fitted on the test data)", n_fit, n_scored)


@dataclass(frozen=True)
class SeparateSplit:
    description: str = "a separate split"

    def split(self, names: list[str]) -> tuple[list[str], list[str]]:
        return [], sorted(names)

    def describe(self, n_fit: int, n_scored: int) -> str:
        return _described(self.description or "a separate split", n_fit, n_scored)


FitSplit = Union[HeldOut, ScoredSplit, SeparateSplit]
