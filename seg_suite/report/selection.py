"""Which images a report shows when there are more than ``--max-images``: a deterministic choice
that always holds the worst and the best by the shown metric, and spreads the rest evenly over the
sorted list, so the gallery shows the whole range rather than the first files."""

from __future__ import annotations

import math

import numpy as np

DEFAULT_MAX_IMAGES = 200  # seg_suite's choice: enough to judge by eye, small enough to open at once


def choose(metric: dict[str, float], max_images: int, first: list[str] = ()) -> list[str]:
    """Keys to show, worst first (NaN metrics last); ``first`` (e.g. images without masks) always lead.

    ``metric`` maps every key to its value; ties break by key, so the choice never depends on order.
    """
    ranked = sorted(metric, key=lambda k: (math.isnan(metric[k]), metric[k] if not math.isnan(metric[k]) else 0, k))
    lead = [k for k in first if k in metric][:max(0, max_images - 2)]
    rest = [k for k in ranked if k not in set(lead)]
    budget = max_images - len(lead)
    if budget >= len(rest):
        return lead + rest
    finite = [k for k in rest if not math.isnan(metric[k])] or rest
    must = [finite[0], finite[-1]][:budget]  # the worst and the best
    spread = [rest[int(i)] for i in np.linspace(0, len(rest) - 1, num=max(budget, 1)).round()]
    picked = set(must)
    for k in spread:
        if len(picked) >= budget:
            break
        picked.add(k)
    for k in rest:  # rounding can repeat an index: top up in rank order
        if len(picked) >= budget:
            break
        picked.add(k)
    return lead + [k for k in rest if k in picked]
