"""Recipe files: a published method's datasets, evaluation set, weights, stages and executor, as data.

A recipe is a YAML file (the shipped ones: ``configs/recipes/{cutler,u2seg,rcf}.yaml``) read with the
safe loader, with these sections (their schema: :mod:`seg_suite.workflows.recipe_schema`):
``datasets`` (name -> ``kind`` and its fields), ``evaluation`` (the scored dataset, an optional
``fit_dataset`` for the cluster -> class mapping, ``extra`` datasets scored when given), ``weights``
(stage -> one of ``backbone``, ``sam``, ``raft``, ``file`` (+ ``url``) or ``path``; none set means
random initialisation), ``stages`` (name -> ``kind`` and parameters, run in file order: each depends
on the ones before it), ``executor`` (local or SLURM, with sbatch parameters) and ``presets``
(name -> ``{dotted key: value}``).

Paths are resolved where they are written: a path in the file (or in one of its presets) is relative
to the recipe file's folder, like a ``_BASE_``; a path given with ``--set`` is relative to the current
folder, like every path on a command line. ``--set KEY=VALUE`` takes a dotted key that exists in the
recipe (``stages.maskcut.tau=0.2``; keys holding dots, such as a training override
``stages.train.opts.SOLVER.MAX_ITER``, are matched longest first) and a value parsed as YAML data. A key
that is not in the recipe is refused; to add a training override, set the whole mapping
(``stages.train.opts={SOLVER.MAX_ITER: 10}``).

Weights files are looked for where the backbone and SAM resolvers look ($SEG_SUITE_WEIGHTS,
``~/.cache/seg_suite/weights``, torch.hub's checkpoints); nothing is downloaded here.

A stage's key hashes its resolved configuration (its parameters, the datasets and weights it reads,
the evaluation section for evaluation stages) together with the key of the stage before it, so a
changed parameter changes the key of that stage and of every later one. The executor section is not
part of any key: where a stage runs does not change what it computes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from seg_suite.errors import UserError
from seg_suite.io.files import atomic_write, file_sha256
from seg_suite.io.paths import output_path_under
from seg_suite.io.safe_yaml import load_yaml
from seg_suite.workflows.recipe_schema import DATASET_KINDS, PATH_KEYS, REQUIRED, check, fill_dataset_defaults, validate

RECIPES_DIR = Path(__file__).resolve().parents[2] / "configs" / "recipes"
LOCK_FILE = "recipe.lock.yaml"
SBATCH_FLAGS = (("partition", "partition"), ("account", "account"), ("gpus", "gpus"), ("cpus-per-task", "cpus"),
                ("mem", "mem"), ("time", "time"))
SHARDED_KINDS = frozenset({"maskcut", "cluster", "stuff", "panoptic", "motion_masks"})


# ------------------------------------------------------------------ dotted keys
def _leaves(tree: Any, prefix: str = "") -> list[str]:
    if not isinstance(tree, dict) or not tree:
        return [prefix] if prefix else []
    return [leaf for k, v in tree.items() for leaf in _leaves(v, f"{prefix}.{k}" if prefix else str(k))]


def _split_key(tree: dict, key: str, where: str) -> list[str]:
    """``key``'s path in ``tree``, each part the longest run of dotted words naming an existing key."""
    parts, path, node = key.split("."), [], tree
    while parts:
        for n in range(len(parts), 0, -1):
            if isinstance(node, dict) and ".".join(parts[:n]) in node:
                path.append(".".join(parts[:n]))
                node, parts = node[path[-1]], parts[n:]
                break
        else:
            known = _leaves(node, ".".join(path))
            raise UserError(f"{where}: unknown key {key!r}; valid keys{' under ' + '.'.join(path) if path else ''}: "
                            f"{', '.join(known)}")
    return path


def _assign(tree: dict, key: str, value: Any, where: str, base: Path) -> None:
    path = _split_key(tree, key, where)
    parent = tree
    for part in path[:-1]:
        parent = parent[part]
    old = parent[path[-1]]
    if old is not None and value is not None and (isinstance(old, bool) != isinstance(value, bool) or not (
            isinstance(value, type(old)) or isinstance(old, float) and isinstance(value, int))):
        raise UserError(f"{where}: {key} takes a {type(old).__name__} (the recipe has {old!r}), got {value!r}")
    parent[path[-1]] = value
    # A path is relative to where it is written: the recipe file's folder, or the CWD for --set.
    if path[0] in ("datasets", "weights", "stages"):
        if len(path) == 2:
            _resolve_paths({path[1]: value}, base)
        elif len(path) == 3 and path[2] in PATH_KEYS and isinstance(value, str):
            parent[path[-1]] = _resolve(value, base)


def _resolve(value: str, base: Path) -> str:
    return os.path.normpath(base / os.path.expanduser(value))


def _resolve_paths(section: Any, base: Path) -> None:
    """Make the path fields of a section's entries absolute, relative to ``base`` (in place)."""
    for entry in (section.values() if isinstance(section, dict) else ()):
        if isinstance(entry, dict):
            for k in PATH_KEYS & entry.keys():
                if isinstance(entry[k], str):
                    entry[k] = _resolve(entry[k], base)


# ------------------------------------------------------------------ weights
def locate_weights(entry: dict) -> tuple[str, Path | None, str | None, Path] | None:
    """(file name, the local file if found, download URL, where to put it) of a weights entry, or None."""
    from seg_suite.features.weights import default_cache_dir
    from seg_suite.pseudo.sam import SAM_URL, get_arch, weight_dirs

    file, url, dirs = entry.get("file"), entry.get("url"), weight_dirs()
    if entry.get("path"):
        path = Path(entry["path"])
        return path.name, path if path.is_file() else None, url, path
    if entry.get("backbone") not in (None, "handcrafted"):
        from seg_suite.features.backbones import BACKBONES, BACKBONE_NAMES

        if entry["backbone"] not in BACKBONES:
            raise UserError(f"unknown backbone {entry['backbone']!r}; choose one of {', '.join(BACKBONE_NAMES)}")
        file, url = BACKBONES[entry["backbone"]].checkpoint_file, BACKBONES[entry["backbone"]].url
    elif entry.get("sam"):
        file = get_arch(entry["sam"]).checkpoint_file
        url = SAM_URL + file
    elif entry.get("raft"):
        from torchvision.models import optical_flow

        variants = {"raft_small": optical_flow.Raft_Small_Weights, "raft_large": optical_flow.Raft_Large_Weights}
        if entry["raft"] not in variants:
            raise UserError(f"unknown RAFT variant {entry['raft']!r}; choose raft_small or raft_large")
        url = variants[entry["raft"]].DEFAULT.url
        file = url.rsplit("/", 1)[-1]
    if not file:
        return None
    found = next((d / file for d in dirs if (d / file).is_file()), None)
    return file, found, url, default_cache_dir() / file


# ------------------------------------------------------------------ the recipe
@dataclasses.dataclass(frozen=True)
class Recipe:
    """A validated recipe: ``data`` holds every section resolved (absolute paths, defaults filled)."""

    name: str
    source: Path
    preset: str | None
    sets: tuple[str, ...]
    data: dict

    def _uses(self, name: str) -> list[str]:
        """The datasets stage ``name`` reads; an evaluation stage reads the evaluation section's."""
        stage, ev = self.data["stages"][name], self.data["evaluation"]
        names = [stage.get("dataset")]
        if stage["kind"].startswith("evaluate"):
            names += [ev.get("dataset"), ev.get("fit_dataset"), *(ev.get("extra") or ())]
        return [n for n in names if n is not None]

    def _stage_config(self, name: str) -> dict:
        stage, d = self.data["stages"][name], self.data
        return {"name": name, "stage": stage, "weights": d["weights"].get(name, {}),
                "evaluation": d["evaluation"] if stage["kind"].startswith("evaluate") else None,
                "datasets": {n: d["datasets"][n] for n in self._uses(name)}}

    def stage_keys(self) -> dict[str, str]:
        """Stage name -> hash of its resolved configuration and the previous stage's key, in run order."""
        keys, previous = {}, ""
        for name in self.data["stages"]:
            text = json.dumps({"config": self._stage_config(name), "after": previous}, sort_keys=True, default=str)
            keys[name] = previous = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        return keys

    def stage_dir(self, output: str | os.PathLike, stage: str) -> Path:
        """Where ``stage`` writes: a folder named after it, inside ``output``."""
        return output_path_under(output, stage, "stage folder")

    def lock(self, output: str | os.PathLike) -> Path:
        """Write ``output/recipe.lock.yaml`` atomically: the resolved recipe, versions, keys, weights' sha256."""
        from seg_suite.pseudo.runner import library_versions

        versions = library_versions()
        try:
            versions["detectron2"] = metadata.version("detectron2")
        except metadata.PackageNotFoundError:
            versions["detectron2"] = None
        weights = {}
        for stage, entry in self.data["weights"].items():
            located = locate_weights(entry)
            if located is not None:
                file, found, url, _ = located
                weights[stage] = {"file": file, "path": str(found) if found else None, "url": url,
                                  "sha256": file_sha256(found) if found else None}
        doc = {"recipe": self.name, "source": str(self.source), "preset": self.preset, "sets": list(self.sets),
               "versions": versions, "stage_keys": self.stage_keys(), "weights": weights, "resolved": self.data}
        path = output_path_under(output, LOCK_FILE, "lock file")
        with atomic_write(path) as fh:
            yaml.safe_dump(doc, fh, sort_keys=False, default_flow_style=False)
        return path

    def preflight(self) -> list[str]:
        """One line per missing weights file or dataset: what is missing, where to get it, where to put it."""
        problems = []
        for stage, entry in self.data["weights"].items():
            located = locate_weights(entry)
            if located is not None and located[1] is None:
                file, _, url, put_at = located
                problems.append(f"stage {stage}: weights file {file} not found; download it from "
                                f"{url or '(no public URL known)'} and put it at {put_at}")
        extra = set(self.data["evaluation"].get("extra") or ())
        for name in dict.fromkeys(n for stage in self.data["stages"] for n in self._uses(stage)):
            ds = self.data["datasets"][name]
            fields = [k for k in DATASET_KINDS[ds["kind"]] if k in PATH_KEYS]
            if name in extra and all(ds[k] is None for k in fields):
                continue  # an extra evaluation set is scored only when it is given
            for field in fields:
                if ds[field] is None and DATASET_KINDS[ds["kind"]][field] is REQUIRED:
                    problems.append(f"dataset {name} ({ds['kind']}): no {field} given; set datasets.{name}.{field}")
                elif ds[field] is not None and not os.path.exists(ds[field]):
                    problems.append(f"dataset {name} ({ds['kind']}): {field} {ds[field]} not found; get it from "
                                    f"{ds.get('source') or 'its publisher'} and put it at {ds[field]} "
                                    f"(or --set datasets.{name}.{field}=PATH)")
        return problems

    def describe(self) -> str:
        """What ``--dry-run`` prints: the stages in order, their keys, and where each would run."""
        ex = self.data["executor"]
        sbatch = " ".join(f"--{flag}={ex[key]}" for flag, key in SBATCH_FLAGS if ex.get(key) is not None)
        lines = [f"recipe {self.name} ({self.source})" + (f", preset {self.preset}" if self.preset else "")
                 + "".join(f", --set {s}" for s in self.sets)]
        for i, (name, key) in enumerate(self.stage_keys().items(), 1):
            stage = self.data["stages"][name]
            tasks = ex.get("array_tasks") or 1
            if ex.get("kind") != "slurm":
                where = "local process"
            elif stage["kind"] in SHARDED_KINDS:
                where = f"SLURM array of {tasks} tasks (sbatch --array=0-{tasks - 1} {sbatch})".replace(" )", ")")
            elif stage["kind"].startswith("evaluate"):
                where = f"prediction as a SLURM array of {tasks} tasks, scoring in this process"
            else:
                where = "one SLURM job" + (f" (sbatch {sbatch})" if sbatch else "")
            data = f", dataset {stage['dataset']}" if stage.get("dataset") else ""
            lines.append(f"  {i}. {name} [{stage['kind']}{data}] key {key}: {where}")
        return "\n".join(lines)


def shipped_recipes() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))


def load_recipe(name_or_path: str | os.PathLike, sets: list[str] | tuple = (), preset: str | None = None) -> Recipe:
    """Read, override (``preset``, then each ``KEY=VALUE`` of ``sets``) and validate a recipe."""
    path = Path(name_or_path)
    if not path.exists() and str(name_or_path) in shipped_recipes():
        path = RECIPES_DIR / f"{name_or_path}.yaml"
    elif not path.exists():
        raise UserError(f"recipe {name_or_path} not found: give a recipe file or one of {', '.join(shipped_recipes())}")
    data = load_yaml(path, "recipe file")
    where, base = str(path), path.resolve().parent
    check(isinstance(data, dict), where, "a recipe is a mapping of sections")
    presets = data.pop("presets", None) or {}
    if preset is not None:
        check(preset in presets, where, f"no preset {preset!r}; this recipe has: {', '.join(presets) or 'none'}")
        check(isinstance(presets[preset], dict), where, f"presets.{preset} must map dotted keys to values")
    for section in ("datasets", "weights", "stages"):
        _resolve_paths(data.get(section), base)
    for key, value in (presets[preset] if preset else {}).items():
        _assign(data, str(key), value, f"{where}, presets.{preset}", base)
    fill_dataset_defaults(data)
    for item in sets:
        key, eq, text = item.partition("=")
        check(bool(eq and key), "--set", f"{item!r} is not KEY=VALUE")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise UserError(f"--set {key}: {text!r} is not a YAML value "
                            f"({str(err).splitlines()[0]}); values are data only") from None
        _assign(data, key.strip(), value, "--set", Path.cwd())
    validate(data, where)
    return Recipe(str(data.get("recipe") or path.stem), path.resolve(), preset, tuple(sets), data)
