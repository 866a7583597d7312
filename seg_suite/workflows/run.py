"""Run a recipe (:mod:`seg_suite.workflows.recipe`) into one output folder, stage by stage.

    from seg_suite.workflows.recipe import load_recipe
    from seg_suite.workflows.run import run_recipe

    results = run_recipe(load_recipe("u2seg", preset="smoke"), "out/u2seg_smoke")

What a run writes into ``OUTPUT``:

``recipe.lock.yaml``   everything resolved: the recipe, library versions, each weights file's sha256
                       and each stage's key (written before any stage runs);
``<stage>/``           one folder per stage, with the stage's own files and, once it has finished,
                       ``stage.json`` (its record: what it wrote, its numbers, its key and seconds);
``data/``              the synthetic sets a recipe names (``kind: synthetic``), made here;
``results.json``       the final metrics, the evaluation protocol and the split the mapping was fitted on;
``results.md``         the same as a table.

A stage's key hashes its resolved configuration and the key of the stage before it
(:meth:`~seg_suite.workflows.recipe.Recipe.stage_keys`). A rerun skips every stage whose marker holds
its current key; a stage whose key changed (a changed parameter, dataset or weights file, or a change
before it) has its folder cleared and runs again, and so does every stage after it. An interrupted
stage continues where it stopped: generation stages through the runner's journals, training through
detectron2's last checkpoint.

Generation stages (``maskcut``, ``cluster``, ``stuff``, ``panoptic``, ``motion_masks``) run as the
executor's shard tasks followed by the merge; training and evaluation run as one job
(:mod:`seg_suite.workflows.executor`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

from seg_suite.errors import UserError
from seg_suite.io.files import atomic_write, atomic_write_json
from seg_suite.io.paths import output_path_under
from seg_suite.workflows.recipe import Recipe
from seg_suite.workflows.stages import Stage

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
KEY_FILE = "stage.key"  # written when a stage starts: which configuration its folder's files belong to


# ------------------------------------------------------------------ datasets
@dataclasses.dataclass(frozen=True)
class DatasetView:
    """A recipe dataset as files: ``images`` (a folder of images) and, for labelled sets, the COCO
    instance and panoptic files and the semantic maps; ``videos`` for a video root (DAVIS layout or
    the synthetic one)."""

    name: str
    kind: str
    images: Path | None = None
    annotations: Path | None = None
    panoptic: Path | None = None
    panoptic_dir: Path | None = None
    semantic_dir: Path | None = None
    videos: Path | None = None
    annotations_dir: Path | None = None  # per-sequence PNG masks (video ground truth)

    def need(self, field: str, what: str) -> Path:
        value = getattr(self, field)
        if value is None:
            raise UserError(f"dataset {self.name} ({self.kind}) has no {field}, which {what} needs; "
                            f"set datasets.{self.name}.{field}")
        return value


def _synthetic_root(out: Path, ds: dict) -> tuple[Path, dict]:
    """Where a synthetic set is made (shared by every dataset entry with the same generation
    arguments) and those arguments: image splits without videos, or videos without images."""
    videos = ds["split"] == "videos"
    args = {"num_train": 0 if videos else ds["num_train"], "num_val": 0 if videos else ds["num_val"],
            "num_videos": ds["num_videos"] if videos else 0, "seed": ds["seed"]}
    tag = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:8]
    return out / "data" / f"synthetic-{'videos' if videos else 'images'}-{tag}", args


def _make_synthetic(root: Path, args: dict, progress: bool) -> None:
    from seg_suite.data.synthetic import make_synthetic_dataset

    stage = Stage(root, "data", config=args)
    if stage.done() is None:
        stage.start()
        make_synthetic_dataset(root, progress=progress, **args)
        stage.finish({"root": str(root)})


def dataset_view(name: str, ds: dict, out: Path, *, make: bool = True, progress: bool = True) -> DatasetView:
    """The files of recipe dataset ``name``; a synthetic one is made inside ``out`` first (``make``)."""
    def path(key):
        return None if ds.get(key) is None else Path(ds[key])

    if ds["kind"] == "image_folder":
        return DatasetView(name, "image_folder", images=path("path"))
    if ds["kind"] == "coco":
        return DatasetView(name, "coco", images=path("images"), annotations=path("annotations"),
                           panoptic=path("panoptic"), panoptic_dir=path("panoptic_dir"),
                           semantic_dir=path("semantic_dir"))
    if ds["kind"] == "davis":
        root = path("root")
        res = ds.get("resolution")
        gt = None if root is None else next(
            (root / sub for sub in ([f"Annotations/{res}"] if res else []) + ["Annotations"] if (root / sub).is_dir()),
            None)
        return DatasetView(name, "davis", videos=root, annotations_dir=gt)
    root, args = _synthetic_root(out, ds)
    if make:
        _make_synthetic(root, args, progress)
    split = ds["split"]
    if split == "videos":
        return DatasetView(name, "synthetic", videos=root, annotations_dir=root / "videos" / "Annotations")
    return DatasetView(name, "synthetic", images=root / "images" / split,
                       annotations=root / "annotations" / f"instances_{split}.json",
                       panoptic=root / "annotations" / f"panoptic_{split}.json", panoptic_dir=root / "panoptic" / split,
                       semantic_dir=root / "semantic" / split)


# ------------------------------------------------------------------ a stage's view of the run
@dataclasses.dataclass
class StageContext:
    """What a stage function gets: its parameters, folder, datasets, weights, the records of the
    stages before it, and how to run shard tasks."""

    recipe: Recipe
    name: str
    key: str
    folder: Path
    output: Path
    records: dict[str, dict]
    device: str
    progress: bool
    executor: Any  # seg_suite.workflows.executor.ExecutorSpec

    @property
    def params(self) -> dict:
        return {k: v for k, v in self.recipe.data["stages"][self.name].items() if k not in ("kind", "dataset")}

    @property
    def evaluation(self) -> dict:
        return self.recipe.data["evaluation"]

    def dataset(self, name: str | None = None) -> DatasetView:
        """Dataset ``name`` (default: the stage's own ``dataset``, else the first earlier stage's)."""
        if name is None:
            name = self.recipe.data["stages"][self.name].get("dataset") or next(
                (s["dataset"] for n, s in self.recipe.data["stages"].items() if s.get("dataset")
                 and n in self.records), None)
        if name is None:
            raise UserError(f"stage {self.name} names no dataset; set stages.{self.name}.dataset")
        return dataset_view(name, self.recipe.data["datasets"][name], self.output, progress=self.progress)

    def weights(self) -> dict:
        return self.recipe.data["weights"].get(self.name) or {}

    def weights_file(self) -> str | None:
        """The local weights file of this stage (None: random initialisation, or a named backbone the
        feature code resolves itself)."""
        from seg_suite.workflows.recipe import locate_weights

        located = locate_weights(self.weights())
        if located is None:
            return None
        if located[1] is None:
            raise UserError(f"stage {self.name}: weights file {located[0]} not found; download it from "
                            f"{located[2] or '(no public URL known)'} and put it at {located[3]}")
        return str(located[1])

    def earlier(self, kind: str) -> tuple[str, dict]:
        """The last finished stage of ``kind`` before this one: (its name, its record)."""
        stages = self.recipe.data["stages"]
        found = [(n, r) for n, r in self.records.items() if stages[n]["kind"] == kind]
        if not found:
            raise UserError(f"stage {self.name} needs an earlier {kind} stage in the recipe")
        return found[-1]

    def run_kwargs(self) -> dict:
        # resume=True: an interrupted stage continues from its runner journal; a finished output is kept.
        return {"resume": True, "batch_size": 1, "workers": 0, "progress": self.progress}

    def generate(self, task: Callable, output: Path) -> dict:
        """Run a generation step as the executor's shard tasks, then merge: ``task(shard=..., **run
        options)`` runs one shard of it (a picklable callable, e.g. a ``functools.partial`` of a
        module-level function) and writes ``output`` (or its shard file). Returns the run's counts."""
        from seg_suite.workflows.sharding import run_sharded

        return run_sharded(task, Path(output), self.executor, self.folder / "executor", name=self.name,
                           run_kwargs=self.run_kwargs())


    def run_single(self, job: Callable, *, distributed: bool = False):
        """Run ``job()`` (training) as one job: here with the local executor, else one SLURM job
        (``distributed``: over ``executor.nodes`` machines). Returns its result."""
        from seg_suite.workflows.executor import run_single_job

        return run_single_job(job, self.executor, self.folder / "executor", name=self.name, distributed=distributed)


def note_failures(summary, what: str) -> int:
    """Per-image failures are recorded by the runner and the run goes on; say so once."""
    failed = getattr(summary, "num_failed", 0) if not isinstance(summary, dict) else summary.get("num_failed", 0)
    if failed:
        where = getattr(summary, "failures", None) if not isinstance(summary, dict) else summary.get("failures")
        print(f"[run] {what}: {failed} item(s) failed, reasons in {where}", file=sys.stderr)
    return failed


# ------------------------------------------------------------------ the driver
def _prepare_folder(folder: Path, key: str) -> None:
    """Give the stage a folder whose files belong to ``key``: files of another configuration go."""
    key_file = folder / KEY_FILE
    if folder.exists():
        try:
            current = key_file.read_text().strip()
        except OSError:
            current = None
        if current != key:
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not key_file.is_file():
        with atomic_write(key_file, "w") as fh:
            fh.write(key + "\n")


def _executor(recipe: Recipe, kind: str | None):
    from seg_suite.workflows.executor import ExecutorSpec

    section = dict(recipe.data["executor"])
    if kind is not None:
        section["kind"] = kind
    return ExecutorSpec.from_recipe(section)


def check_before_run(recipe: Recipe) -> None:
    """Refuse to start when a weights file or dataset is missing: one line for each."""
    problems = recipe.preflight()
    if problems:
        raise UserError("missing inputs, nothing was run:\n  " + "\n  ".join(problems))


def run_recipe(recipe: Recipe, output, *, device: str = "cpu", progress: bool = True,
               executor: str | None = None) -> dict:
    """Run (or resume) every stage of ``recipe`` into ``output``; returns ``results.json``'s content.

    ``executor`` (``local`` or ``slurm``) overrides the recipe's ``executor.kind``.
    """
    from seg_suite.devices import resolve_device
    from seg_suite.workflows.recipe_stages import STAGE_FUNCTIONS, check_training_configs

    resolve_device(device)
    check_before_run(recipe)
    check_training_configs(recipe)
    spec = _executor(recipe, executor)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    recipe.lock(out)
    keys, records, timing = recipe.stage_keys(), {}, {}
    for name, key in keys.items():
        kind = recipe.data["stages"][name]["kind"]
        folder = recipe.stage_dir(out, name)
        stage = Stage(folder, name, config={"key": key})
        done = stage.done()
        if done is not None:
            print(f"[run] {name}: already finished ({done['seconds']} s), skipped", file=sys.stderr)
        else:
            print(f"[run] {name} ({kind}) ...", file=sys.stderr, flush=True)
            _prepare_folder(folder, key)
            stage.start()
            ctx = StageContext(recipe, name, key, folder, out, dict(records), device, progress, spec)
            done = stage.finish(STAGE_FUNCTIONS[kind](ctx))
            print(f"[run] {name}: done in {done['seconds']} s", file=sys.stderr, flush=True)
        records[name] = done
        timing[name] = {"kind": kind, "key": key, "seconds": done["seconds"]}
    return write_results(recipe, out, records, timing)


def write_results(recipe: Recipe, out: Path, records: dict, timing: dict) -> dict:
    """``results.json`` and ``results.md`` from the evaluation stages' records."""
    evaluated = [r for n, r in records.items() if recipe.data["stages"][n]["kind"].startswith("evaluate")]
    final = evaluated[-1] if evaluated else {}
    doc = {"recipe": recipe.name, "preset": recipe.preset, "sets": list(recipe.sets),
           "evaluation": {"dataset": recipe.data["evaluation"].get("dataset"),
                          "protocol": final.get("protocol", recipe.data["evaluation"].get("protocol")),
                          "fit": final.get("fit")},
           "metrics": final.get("metrics", {}), "extra": final.get("extra", {}), "stages": timing}
    atomic_write_json(output_path_under(out, RESULTS_JSON, "results file"), doc, indent=1)
    with atomic_write(output_path_under(out, RESULTS_MD, "results file"), "w") as fh:
        fh.write(format_results(doc) + "\n")
    return doc


def format_results(doc: dict) -> str:
    """The results as a Markdown table (also printed by ``seg-suite run``)."""
    ev = doc["evaluation"]
    lines = [f"# {doc['recipe']}" + (f" (preset {doc['preset']})" if doc["preset"] else ""), "",
             f"Scored on dataset `{ev['dataset']}`, protocol `{ev['protocol']}`"
             + (f", mapping fitted on {ev['fit']}" if ev.get("fit") else "") + ".", "",
             "| metric | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" if isinstance(v, (int, float)) else f"| {k} | {v} |"
              for k, v in doc["metrics"].items()]
    for name, metrics in (doc.get("extra") or {}).items():
        lines += ["", f"Extra set `{name}`:", "", "| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in metrics.items() if isinstance(v, (int, float))]
    lines += ["", "| stage | kind | key | seconds |", "|---|---|---|---:|"]
    lines += [f"| {n} | {s['kind']} | `{s['key']}` | {s['seconds']} |" for n, s in doc["stages"].items()]
    return "\n".join(lines)


def describe_run(recipe: Recipe, output, *, executor: str | None = None) -> str:
    """What ``--dry-run`` prints: the stages, their keys, where each would run (and whether a finished
    one in ``output`` would be skipped), the sbatch parameters on SLURM, and any missing input."""
    if executor is not None:
        recipe = dataclasses.replace(recipe, data={**recipe.data, "executor": {**recipe.data["executor"],
                                                                               "kind": executor}})
    lines = [recipe.describe()]
    out = Path(output)
    for name, key in recipe.stage_keys().items():
        if Stage(out / name, name, config={"key": key}).done() is not None:
            lines.append(f"  {name}: finished in {out} with this key, would be skipped")
    spec = _executor(recipe, None)
    if spec.kind == "slurm":
        from seg_suite.workflows.executor import sbatch_preview

        for label, tasks in (("generation stages (job array)", spec.array_tasks), ("training and evaluation", None)):
            lines += ["", f"sbatch script for {label}:",
                      sbatch_preview(spec, out / "executor", array_tasks=tasks, name=recipe.name)]
    problems = recipe.preflight()
    lines += ["", "missing inputs (the run would stop before its first stage):", *[f"  {p}" for p in problems]] \
        if problems else ["", "all weights files and datasets were found"]
    return "\n".join(lines)
