"""The front page of a recipe run folder: its results table, the evaluation it was scored with, and
a link per stage to the report of that stage's folder (each stage's outputs found by
:func:`seg_suite.report.detect.detect`; a stage with nothing to show is listed with the reason).

Layout read: ``DIR/results.json`` ({"recipe", "preset", "evaluation": {"dataset", "protocol", "fit"},
"metrics": {name: value}, "stages": {name: {"kind", "key", "seconds"}}}), ``DIR/<stage>/stage.json``
and that stage's outputs in ``DIR/<stage>/``.
"""

from __future__ import annotations

from pathlib import Path

from seg_suite.errors import UserError
from seg_suite.io.files import load_json
from seg_suite.io.paths import PathEscapeError, resolve_under
from seg_suite.report.detect import detect
from seg_suite.report.page import Page, Section, Table, cell, write_page



def _stage_input(folder: Path) -> tuple[Path, str, object] | None:
    """The first thing in a stage folder that a report can show: the folder, then its JSON files, then
    each sub-folder and its JSON files (sorted)."""
    def level(where: Path) -> list[Path]:
        return [where] + sorted(p for p in where.glob("*.json")
                                if p.name != "stage.json" and not p.name.endswith(".features.json"))

    candidates = level(folder)
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        candidates += level(sub)
    for path in candidates:
        try:
            kind, content = detect(path)
        except UserError:
            continue
        return path, kind, content
    return None


def recipe_page(run: Path, folder: Path, options: dict) -> Page:
    from seg_suite.report.build import page_for

    run = Path(run)
    results = load_json(run / "results.json", "recipe results file")
    if not isinstance(results, dict):
        raise UserError(f"{run / 'results.json'} is not a recipe results file (expected an object)")
    page = Page(f"Recipe run: {results.get('recipe', run.name)}")
    page.intro = [f"{run}" + (f", preset {results['preset']}" if results.get("preset") else "")]
    ev = results.get("evaluation") if isinstance(results.get("evaluation"), dict) else {}
    res = page.add(Section("results", "Results"))
    res.notes = [f"dataset: {ev.get('dataset')}; protocol: {ev.get('protocol')}; mapping fitted on: {ev.get('fit')}"]
    metrics = results.get("metrics") if isinstance(results.get("metrics"), dict) else {}
    res.table = Table(["metric", "value"], [[cell(k), cell(v)] for k, v in metrics.items()])
    stages = results.get("stages") if isinstance(results.get("stages"), dict) else {}
    rows, skipped = [], []
    for name, info in stages.items():
        info = info if isinstance(info, dict) else {}
        try:
            stage_dir = resolve_under(run, name, "stage name")
        except PathEscapeError as err:
            skipped.append(f"{name}: {err}")
            continue
        found = _stage_input(stage_dir) if stage_dir.is_dir() else None
        link = cell("–")
        if found is None:
            skipped.append(f"{name}: {'no folder' if not stage_dir.is_dir() else 'nothing in it a report can show'}")
        else:
            path, kind, content = found
            out = folder / "stages" / name
            out.mkdir(parents=True, exist_ok=True)
            sub = page_for(kind, content, path, out, options, parent="../../index.html")
            write_page(sub, out / "index.html")
            link = cell(f"{kind} report", href=f"stages/{name}/index.html")
        rows.append([cell(name), cell(info.get("kind")), cell(info.get("key")), cell(info.get("seconds"), 1), link])
    sec = page.add(Section("stages", f"Stages ({len(stages)})"))
    sec.table = Table(["stage", "kind", "key", "seconds", "report"], rows)
    if skipped:
        sec.notes = ["not shown: " + "; ".join(skipped)]
    return page
