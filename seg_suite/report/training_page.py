"""The report of a detectron2 training folder: loss and metric curves from ``metrics.json`` (one
JSON object per line, written by detectron2's JSONWriter) and the last evaluation."""

from __future__ import annotations

import json
import math
from pathlib import Path

from seg_suite.errors import UserError
from seg_suite.report import plots
from seg_suite.report.assets import Assets
from seg_suite.report.page import Page, Section, Table, cell

TIMING_KEYS = ("time", "data_time", "eta_seconds", "iteration", "rank_data_time")


def read_metrics(path: Path) -> list[dict]:
    """The lines of ``metrics.json`` that are JSON objects with an integer ``iteration`` (a torn last line
    of a running job is skipped)."""
    rows = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as err:
        raise UserError(f"cannot read {path}: {err}") from None
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("iteration"), int):
            rows.append(row)
    if not rows:
        raise UserError(f"{path} holds no metrics lines (JSON objects with an 'iteration'); is it detectron2's "
                        f"metrics.json?")
    return rows


def _series(rows: list[dict], keys: list[str]) -> dict[str, tuple[list[float], list[float]]]:
    out = {}
    for k in keys:
        pts = [(r["iteration"], float(r[k])) for r in rows
               if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool) and math.isfinite(r[k])]
        if pts:
            out[k] = ([p[0] for p in pts], [p[1] for p in pts])
    return out


def training_page(metrics_path: Path, assets: Assets) -> Page:
    rows = read_metrics(Path(metrics_path))
    keys = sorted({k for r in rows for k in r})
    eval_keys = [k for k in keys if "/" in k]  # detectron2 names evaluation results task/metric (segm/AP)
    loss_keys = [k for k in keys if "loss" in k and k not in eval_keys]
    page = Page(f"Training: {Path(metrics_path).parent.name}")
    page.intro = [f"{metrics_path}: {len(rows)} lines, iterations {rows[0]['iteration']} to {rows[-1]['iteration']}"]
    curves = page.add(Section("curves", "Loss and learning rate"))
    main = [k for k in loss_keys if k == "total_loss"] or loss_keys[:1]
    if loss_keys:
        curves.plots.append(assets.figure(plots.curves(_series(rows, main), "total loss", "iteration", log=True),
                                          "loss_total", "total loss curve"))
        parts = [k for k in loss_keys if k not in main]
        if parts:
            curves.plots.append(assets.figure(plots.curves(_series(rows, parts[:20]), "loss terms", "iteration",
                                                           log=True), "loss_terms", "loss terms curves"))
    else:
        curves.notes = ["no loss values in this file"]
    if "lr" in keys:
        curves.plots.append(assets.figure(plots.curves(_series(rows, ["lr"]), "learning rate", "iteration"), "lr",
                                          "learning rate curve"))
    metrics = page.add(Section("eval-curves", "Evaluation metrics"))
    evals = [r for r in rows if any(k in r for k in eval_keys)]
    if evals:
        groups = sorted({k.split("/")[0] for k in eval_keys})
        for i, group in enumerate(groups):
            ks = [k for k in eval_keys if k.startswith(group + "/")][:12]
            metrics.plots.append(assets.figure(plots.curves(_series(rows, ks), f"{group}", "iteration"),
                                               f"eval_{i:02d}", f"{group} metrics curves"))
        last = evals[-1]
        last_sec = page.add(Section("last-eval", f"Last evaluation (iteration {last['iteration']})"))
        last_sec.table = Table(["metric", "value"], [[cell(k), cell(last[k])] for k in eval_keys if k in last])
    else:
        metrics.notes = ["no evaluation was recorded in this run (no task/metric keys such as segm/AP)"]
        page.add(Section("last-eval", "Last evaluation", notes=["none recorded"]))
    return page
