"""What a recipe file may hold: its sections, the dataset and stage kinds with their fields, and the
check that turns a parsed recipe into a validated one (one-line UserErrors naming the file, the key
and what is allowed). The loader and its overrides are :mod:`seg_suite.workflows.recipe`.
"""

from __future__ import annotations

import dataclasses
import re

from seg_suite.errors import UserError
REQUIRED = object()  # a field a dataset entry must name
# A synthetic set's sizes: the generator's own defaults (24 train / 8 val) would leave too few val
# images for a stable PQ, so recipes make a slightly larger set.
DEFAULT_NUM_TRAIN = 32
DEFAULT_NUM_VAL = 16
SECTIONS = {"recipe": str, "description": str, "datasets": dict, "evaluation": dict, "weights": dict,
            "stages": dict, "executor": dict}
# Each dataset kind's fields and defaults; "source" says where to get the data.
DATASET_KINDS = {
    "image_folder": {"path": REQUIRED, "source": None},
    "coco": {"images": REQUIRED, "annotations": REQUIRED, "panoptic": None, "panoptic_dir": None,
             "semantic_dir": None, "source": None},
    "davis": {"root": REQUIRED, "resolution": "480p", "source": None},
    # Made by the run inside its output folder (seg_suite.data.synthetic).
    "synthetic": {"split": REQUIRED, "num_train": DEFAULT_NUM_TRAIN, "num_val": DEFAULT_NUM_VAL,
                  "num_videos": 4, "seed": 0},
}
PATH_KEYS = frozenset({"path", "images", "annotations", "panoptic", "panoptic_dir", "semantic_dir", "root", "config"})
SYNTHETIC_SPLITS = ("train", "val", "videos")
WEIGHT_FORMS = ("backbone", "sam", "raft", "file", "path")
EVALUATION_KEYS = ("dataset", "fit_dataset", "protocol", "metrics", "extra")
EXECUTOR_KEYS = {"kind": ("local", "slurm"), "array_tasks": int, "partition": str, "account": str, "gpus": int,
                 "cpus": int, "mem": str, "time": str, "nodes": int}
OPTIONAL_INTS = frozenset({"array_tasks"})  # null: one task per GPU of this machine (1 on CPU), or 1 on SLURM
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # a stage's name is also its output folder's name


def stage_kinds() -> dict[str, tuple[str, ...]]:
    """Stage kind -> its parameter names (besides ``kind`` and ``dataset``); the library's parameter
    dataclasses name them where they exist."""
    from seg_suite.pseudo.maskcut import MaskCutParams
    from seg_suite.pseudo.motion.pipeline import MotionMaskParams
    from seg_suite.pseudo.motion.rcf_segmenter import RCFConfig

    def fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    return {"maskcut": fields(MaskCutParams), "cluster": ("n_clusters", "mode", "input_size", "seed"),
            "stuff": ("num_stuff", "input_size", "samples_per_image", "seed"), "panoptic": ("max_overlap",),
            "train": ("config", "opts"), "self_train": ("rounds", "thresholds", "merge_iou", "opts"),
            "motion_masks": fields(MotionMaskParams), "train_rcf": fields(RCFConfig),
            "evaluate_class_agnostic": (), "evaluate_unsupervised": (), "evaluate_video": ()}


def fill_dataset_defaults(data: dict) -> None:
    """Give each dataset entry of a known kind its optional fields' defaults (in place), so that
    ``--set`` can address them."""
    for ds in (data.get("datasets") or {}).values():
        if isinstance(ds, dict) and ds.get("kind") in DATASET_KINDS:
            for key, default in DATASET_KINDS[ds["kind"]].items():
                if default is not REQUIRED:
                    ds.setdefault(key, default)


def check(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise UserError(f"{where}: {message}")


def validate(data: dict, where: str) -> None:
    """Check ``data`` (a parsed recipe, ``where`` its file) and fill each dataset's defaults, in place."""
    check(isinstance(data, dict), where, "a recipe is a mapping of sections")
    for key, kind in SECTIONS.items():
        check(key not in data or isinstance(data[key], kind), where, f"{key} must be a {kind.__name__}")
    unknown = sorted(set(data) - set(SECTIONS))
    check(not unknown, where, f"unknown section(s) {unknown}; allowed: {', '.join(SECTIONS)}, presets")
    check(bool(data.get("datasets")) and bool(data.get("stages")), where, "needs datasets and stages sections")
    for name, ds in data["datasets"].items():
        at = f"datasets.{name}"
        check(isinstance(ds, dict) and ds.get("kind") in DATASET_KINDS, where,
               f"{at}.kind must be one of {', '.join(DATASET_KINDS)}")
        fields = DATASET_KINDS[ds["kind"]]
        extra = sorted(set(ds) - set(fields) - {"kind"})
        check(not extra, where, f"{at} ({ds['kind']}) has unknown field(s) {extra}; allowed: {', '.join(fields)}")
        missing = [k for k, v in fields.items() if v is REQUIRED and k not in ds]
        check(not missing, where, f"{at} ({ds['kind']}) needs {', '.join(missing)}")
        data["datasets"][name] = {"kind": ds["kind"], **{k: ds.get(k, v) for k, v in fields.items()}}
        check(ds["kind"] != "synthetic" or ds["split"] in SYNTHETIC_SPLITS, where,
               f"{at}.split must be one of {', '.join(SYNTHETIC_SPLITS)}")
    kinds = stage_kinds()
    for name, stage in data["stages"].items():
        at = f"stages.{name}"
        check(bool(_NAME.match(str(name))), where, f"stage name {name!r}: lower-case letters, digits and _")
        check(isinstance(stage, dict) and stage.get("kind") in kinds, where,
               f"{at}.kind must be one of {', '.join(kinds)}")
        extra = sorted(set(stage) - set(kinds[stage["kind"]]) - {"kind", "dataset"})
        check(not extra, where, f"{at} ({stage['kind']}) has unknown parameter(s) {extra}; "
                                 f"allowed: dataset, {', '.join(kinds[stage['kind']])}")
        check(stage.get("dataset") in (None, *data["datasets"]), where, f"{at}.dataset names no dataset")
    evaluation = data.setdefault("evaluation", {})
    check(not set(evaluation) - set(EVALUATION_KEYS), where, f"evaluation takes {', '.join(EVALUATION_KEYS)}")
    for ref in (evaluation.get("dataset"), evaluation.get("fit_dataset"), *(evaluation.get("extra") or ())):
        check(ref is None or ref in data["datasets"], where, f"evaluation names dataset {ref!r}, not in datasets")
    for stage, entry in data.setdefault("weights", {}).items():
        check(stage in data["stages"], where, f"weights.{stage} names no stage")
        check(isinstance(entry, dict) and not set(entry) - {*WEIGHT_FORMS, "url"}, where,
               f"weights.{stage} takes one of {', '.join(WEIGHT_FORMS)} (and url)")
        check(sum(entry.get(k) is not None for k in WEIGHT_FORMS) <= 1, where,
               f"weights.{stage} sets more than one of {', '.join(WEIGHT_FORMS)}")
    executor = data.setdefault("executor", {"kind": "local"})
    for key, value in executor.items():
        rule, low = EXECUTOR_KEYS.get(key), 0 if key == "gpus" else 1
        check(rule is not None, where, f"executor.{key} is unknown; allowed: {', '.join(EXECUTOR_KEYS)}")
        check(value in rule if isinstance(rule, tuple) else (value is None and key in OPTIONAL_INTS)
              or type(value) is int and value >= low if rule is int
               else value is None or isinstance(value, str), where, f"executor.{key} is {value!r}; allowed: "
               + (", ".join(rule) if isinstance(rule, tuple) else f"an integer >= {low}" if rule is int else "text or null"))
