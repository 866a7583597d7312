"""The report of a ``seg-suite evaluate`` result: the protocol and fit split named, the metrics,
per-class bars, the cluster -> class mapping and the confusion between clusters and classes as a
heat map, its rows in the mapping's order (clusters grouped under the class they were mapped to)."""

from __future__ import annotations

import math

import numpy as np

from seg_suite.report import plots
from seg_suite.report.assets import Assets
from seg_suite.report.page import Page, Section, Table, cell

PER_CLASS_KEYS = ("IoU", "AP", "PQ", "per_class")  # result fields holding one value per class


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _flat_metrics(res: dict, prefix: str = "") -> list[tuple[str, float]]:
    """Scalar metrics, nested dicts spelled ``outer/inner`` (segm/AP, Things/pq...)."""
    out = []
    for k, v in res.items():
        if k in ("mapping", "confusion") or k in PER_CLASS_KEYS:
            continue
        if _is_number(v):
            out.append((prefix + k, float(v)))
        elif isinstance(v, dict):
            out += _flat_metrics(v, f"{prefix}{k}/")
    return out


def _per_class(res: dict) -> dict[str, dict[str, float | None]]:
    """{metric: {class: value}} for every per-class field of the result."""
    out = {}
    for key in PER_CLASS_KEYS:
        v = res.get(key)
        if isinstance(v, dict) and v and all(x is None or _is_number(x) for x in v.values()):
            out[key] = v
        elif key == "per_class" and isinstance(v, dict):
            for cls, metrics in v.items():
                for m, x in (metrics.items() if isinstance(metrics, dict) else ()):
                    if x is None or _is_number(x):
                        out.setdefault(m, {})[cls] = x
    return out


def mapping_order(clusters: list[str], classes: list[str], counts: np.ndarray, mapping: dict) -> list[int]:
    """Row order of the heat map: clusters by the column of the class they map to (unmapped last),
    then by their count in that class, largest first."""
    col = {c: i for i, c in enumerate(classes)}

    def key(i):
        target = mapping.get(clusters[i])
        j = col.get(str(target)) if target is not None else None
        return (j is None, j if j is not None else 0, -int(counts[i, j]) if j is not None else 0, i)

    return sorted(range(len(clusters)), key=key)


def _target(mapping: dict, cluster: str) -> str:
    target = mapping.get(cluster)
    return "unmapped" if target is None else str(target)


def evaluation_page(res: dict, source: str, assets: Assets) -> Page:
    task = res.get("task", "unknown task")
    page = Page(f"Evaluation ({task}): {source.rsplit('/', 1)[-1]}")
    proto = page.add(Section("protocol", "Protocol"))
    proto.notes = [f"cluster -> class mapping: {res.get('protocol')}", f"fitted on: {res.get('fit')}",
                   f"result file: {source}"]
    metrics = _flat_metrics(res)
    page.add(Section("metrics", "Metrics", table=Table(["metric", "value"], [[cell(k), cell(v)] for k, v in metrics])))

    per = page.add(Section("per-class", "Per class"))
    per_class = _per_class(res)
    for name, values in per_class.items():
        classes = list(values)
        per.plots.append(assets.figure(plots.bars(classes, [values[c] if values[c] is not None else math.nan
                                                            for c in classes], f"{name} per class", name),
                                       f"per_class_{len(per.plots)}", f"{name} per class"))
    if per_class:
        names = sorted({c for v in per_class.values() for c in v}, key=lambda c: (len(c), c))
        per.table = Table(["class", *per_class], [[cell(c), *[cell(per_class[m].get(c)) for m in per_class]]
                                                  for c in names])
        per.notes = ["a dash: the class does not occur in the scored images (or gets no mapped cluster)"]
    else:
        per.notes = [f"this {task} result holds no per-class values (only the summary metrics above)"]

    conf = res.get("confusion")
    mapping = res.get("mapping") or {}
    heat = page.add(Section("confusion", "Confusion: clusters x classes"))
    if isinstance(conf, dict) and conf.get("counts"):
        counts = np.asarray(conf["counts"], dtype=np.int64)
        clusters, classes = [str(c) for c in conf["clusters"]], [str(c) for c in conf["classes"]]
        order = mapping_order(clusters, classes, counts, mapping)
        labels = [f"{clusters[i]} -> {_target(mapping, clusters[i])}" for i in order]
        heat.plots = [assets.figure(plots.heatmap(counts[order], labels, classes, "confusion on the fit split",
                                                  "ground-truth class", "cluster -> mapped class"),
                                    "confusion", "confusion matrix heat map")]
        heat.notes = ["Counts of the split the mapping was fitted on (pixels for semantic maps and stuff, matched "
                      "masks or segments for instances and things); each row is coloured by its share, rows in the "
                      "mapping's order."]
    else:
        heat.notes = ["this result file holds no confusion matrix"]
    rows = [[cell(k), cell(_target(mapping, k))] for k in sorted(mapping, key=lambda k: (len(k), k))]
    page.add(Section("mapping", f"Mapping ({sum(v is not None for v in mapping.values())} of {len(mapping)} "
                                f"clusters mapped)", table=Table(["cluster", "class"], rows)))
    return page
