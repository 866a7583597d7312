"""The one loop of the unsupervised protocol: split, fit the cluster -> class mapping, score.

Every task (semantic maps, instance files, panoptic files) is an adapter with four methods, and
:func:`fit_and_score` runs the same steps for all of them:

1. ``items()``: the scored split's items by image name; the fit split chooses among these names;
2. ``separate_items()``: the items of a separate fit split (only asked for with
   :class:`~seg_suite.evaluation.fit_split.SeparateSplit`);
3. ``fit(items, protocol, extra, separate)``: the fitted mapping(s) from the fit items' confusion;
4. ``score(mapping, names)``: the metrics of the scored names under that mapping, and the mapping
   as recorded in the results, as ``(metrics, mapping_record, n_scored)``.

The results are the task's metrics followed by ``protocol``, ``fit`` (the split, named with its
image counts) and ``mapping``, plus ``confusion`` (the counts the mapping was fitted on, clusters by
classes) for a task that sets a ``confusion`` attribute in ``fit``.
"""

from __future__ import annotations

from typing import Any, Protocol

from seg_suite.evaluation.fit_split import FitSplit, SeparateSplit


class Task(Protocol):
    def items(self) -> dict[str, Any]: ...

    def separate_items(self) -> list: ...

    def fit(self, items: list, protocol: str, extra: str, separate: bool) -> Any: ...

    def score(self, mapping: Any, names: list[str]) -> tuple[dict, Any, int]: ...


def fit_and_score(task: Task, fit: FitSplit, protocol: str, extra: str) -> dict:
    """Split ``task``'s scored items with ``fit``, fit the mapping on the fit items, score the rest."""
    scored = task.items()
    fit_names, score_names = fit.split(list(scored))
    separate = isinstance(fit, SeparateSplit)
    fit_items = task.separate_items() if separate else [scored[n] for n in fit_names]
    mapping = task.fit(fit_items, protocol, extra, separate)
    metrics, record, n_scored = task.score(mapping, score_names)
    metrics.update(protocol=protocol, fit=fit.describe(len(fit_items), n_scored), mapping=record)
    if getattr(task, "confusion", None) is not None:
        metrics["confusion"] = task.confusion
    return metrics
