"""Matplotlib (Agg, no display) figures of the report: histograms, bars, heat maps, curves."""

from __future__ import annotations

import math

import numpy as np


def _figure(width: float = 6.4, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    return fig, ax


def histogram(values, title: str, xlabel: str, bins: int | str = "auto", integer: bool = False):
    fig, ax = _figure()
    values = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if values.size == 0:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
    elif integer:
        top = int(values.max())
        ax.hist(values, bins=np.arange(-0.5, top + 1.5, 1), color="#4c78a8", edgecolor="white")
        ax.set_xticks(range(0, top + 1, max(1, (top + 1) // 15)))
    else:
        ax.hist(values, bins=bins, color="#4c78a8", edgecolor="white")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.yaxis.get_major_locator().set_params(integer=True)
    return fig


def bars(names: list[str], values: list[float], title: str, ylabel: str, horizontal: bool | None = None):
    """Bar chart; horizontal (names on the y axis) when there are many or long names."""
    if horizontal is None:
        horizontal = len(names) > 12 or max((len(n) for n in names), default=0) > 8
    height = max(3.0, 0.22 * len(names) + 1.0) if horizontal else 3.6
    fig, ax = _figure(6.4, min(height, 40.0))
    vals = [v if v is not None and math.isfinite(v) else 0.0 for v in values]
    pos = np.arange(len(names))
    if horizontal:
        ax.barh(pos, vals, color="#4c78a8")
        ax.set_yticks(pos, names, fontsize=7 if len(names) > 30 else 9)
        ax.invert_yaxis()
        ax.set_xlabel(ylabel)
    else:
        ax.bar(pos, vals, color="#4c78a8")
        ax.set_xticks(pos, names, rotation=45 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    return fig


def grouped_bars(names: list[str], series: dict[str, list[float]], title: str, ylabel: str):
    fig, ax = _figure(max(6.4, 0.35 * len(names) * max(1, len(series))), 3.8)
    width = 0.8 / max(1, len(series))
    pos = np.arange(len(names))
    for i, (label, values) in enumerate(series.items()):
        vals = [v if v is not None and math.isfinite(v) else 0.0 for v in values]
        ax.bar(pos + (i - (len(series) - 1) / 2) * width, vals, width, label=label)
    ax.set_xticks(pos, names, rotation=45 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def heatmap(matrix: np.ndarray, rows: list[str], cols: list[str], title: str, xlabel: str, ylabel: str):
    """Rows normalised to 1 (each row's share), counts in the cells when the matrix is small."""
    m = np.asarray(matrix, dtype=np.float64)
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, ax = _figure(min(3 + 0.3 * len(cols), 18), min(2.5 + 0.25 * len(rows), 30))
    im = ax.imshow(share, cmap="viridis", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    small = len(rows) <= 40 and len(cols) <= 40
    ax.set_xticks(range(len(cols)), cols if small else [""] * len(cols), rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), rows if small else [""] * len(rows), fontsize=7)
    if len(rows) * len(cols) <= 225:
        for (i, j), v in np.ndenumerate(m):
            if v:
                ax.text(j, i, f"{int(v)}", ha="center", va="center", fontsize=6,
                        color="black" if share[i, j] > 0.5 else "white")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="share of the row")
    return fig


def curves(series: dict[str, tuple[list[float], list[float]]], title: str, xlabel: str, log: bool = False):
    fig, ax = _figure()
    for label, (x, y) in series.items():
        ax.plot(x, y, label=label, linewidth=1.2, marker="o" if len(x) < 20 else None, markersize=3)
    if log and all(v > 0 for _, ys in series.values() for v in ys):
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    if len(series) > 1:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig
