"""Recipe files (seg_suite.workflows.recipe): loading, overrides, stage keys, lock file, preflight."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest
import yaml

from seg_suite.errors import UserError
from seg_suite.workflows.recipe import LOCK_FILE, RECIPES_DIR, load_recipe, shipped_recipes

SHIPPED = ("cutler", "rcf", "u2seg")

SMALL = """\
recipe: small
datasets:
  train: {kind: image_folder, path: imgs}
  eval: {kind: coco, images: val, annotations: val.json}
evaluation: {dataset: eval}
weights:
  train: {path: w.pkl}
stages:
  maskcut: {kind: maskcut, dataset: train, tau: 0.15}
  train: {kind: train, dataset: train, config: train.yaml, opts: {SOLVER.MAX_ITER: 10}}
  evaluate: {kind: evaluate_class_agnostic}
executor: {kind: local, array_tasks: 1}
presets:
  tiny: {datasets.train.path: tiny_imgs, stages.train.opts: {SOLVER.MAX_ITER: 2}}
"""


@pytest.fixture
def no_weights(tmp_path, monkeypatch) -> Path:
    """Empty weights folders; returns the default cache folder (where preflight says to put files)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("SEG_SUITE_WEIGHTS", str(tmp_path / "weights"))
    return tmp_path / "home" / ".cache" / "seg_suite" / "weights"


def _small(folder: Path, text: str = SMALL) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "r.yaml").write_text(text)
    return folder / "r.yaml"


def test_the_shipped_recipes_are_the_three_methods():
    assert shipped_recipes() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("preset", [None, "smoke"])
def test_each_shipped_recipe_loads_and_validates(name, preset):
    recipe = load_recipe(name, [], preset)
    assert recipe.name == name and recipe.source == RECIPES_DIR / f"{name}.yaml"
    first = {"cutler": "maskcut", "u2seg": "maskcut", "rcf": "motion_masks"}[name]
    assert next(iter(recipe.data["stages"])) == first
    assert list(recipe.stage_keys()) == list(recipe.data["stages"])
    assert len(set(recipe.stage_keys().values())) == len(recipe.data["stages"])
    for stage in recipe.data["stages"].values():
        config = stage.get("config")
        assert config is None or Path(config).is_file(), config


def test_the_recipes_defaults_are_the_librarys_published_ones():
    from seg_suite.workflows.self_training import DEFAULT_MERGE_IOU, DEFAULT_THRESHOLDS
    from seg_suite.pseudo.maskcut import MaskCutParams
    from seg_suite.pseudo.motion.pipeline import MotionMaskParams

    maskcut = MaskCutParams().to_dict()
    for name in ("cutler", "u2seg"):
        stage = load_recipe(name).data["stages"]["maskcut"]
        assert {k: stage[k] for k in maskcut} == maskcut
    cutler = load_recipe("cutler").data["stages"]["self_train"]
    assert tuple(cutler["thresholds"]) == DEFAULT_THRESHOLDS and cutler["merge_iou"] == DEFAULT_MERGE_IOU
    motion = load_recipe("rcf").data["stages"]["motion_masks"]
    assert {k: motion[k] for k in MotionMaskParams().to_dict()} == MotionMaskParams().to_dict()


def test_set_changes_the_value_and_the_keys_of_that_stage_and_later_ones():
    base = load_recipe("cutler").stage_keys()
    recipe = load_recipe("cutler", ["stages.train.opts.SOLVER.MAX_ITER=1000"])
    assert recipe.data["stages"]["train"]["opts"]["SOLVER.MAX_ITER"] == 1000
    keys = recipe.stage_keys()
    assert keys["maskcut"] == base["maskcut"]
    assert all(keys[s] != base[s] for s in ("train", "self_train", "evaluate"))
    keys = load_recipe("cutler", ["stages.self_train.rounds=3"]).stage_keys()
    assert [keys[s] == base[s] for s in base] == [True, True, False, False]
    assert load_recipe("cutler", ["stages.maskcut.tau=0.2"]).data["stages"]["maskcut"]["tau"] == 0.2


def test_the_executor_is_not_part_of_any_stage_key():
    base = load_recipe("cutler").stage_keys()
    assert load_recipe("cutler", ["executor.kind=slurm", "executor.array_tasks=4"]).stage_keys() == base


def test_an_unknown_key_is_refused_with_the_valid_keys():
    with pytest.raises(UserError) as err:
        load_recipe("cutler", ["stages.maskcut.tua=0.2"])
    message = str(err.value)
    assert "unknown key 'stages.maskcut.tua'" in message and "\n" not in message
    assert "stages.maskcut.tau" in message and "stages.maskcut.fixed_size" in message
    with pytest.raises(UserError, match=r"valid keys: recipe, description, datasets\.train\.kind"):
        load_recipe("cutler", ["nosuch=1"])


@pytest.mark.parametrize("item, match", [("stages.maskcut.tau=abc", "takes a float"),
                                         ("stages.maskcut.crf=1", "takes a bool"),
                                         ("stages.maskcut.tau", "not KEY=VALUE"),
                                         ("executor.kind=cloud", "executor.kind is 'cloud'; allowed: local, slurm"),
                                         ("executor.array_tasks=0", "executor.array_tasks is 0; allowed: an integer >= 1")])
def test_bad_values_are_refused_in_one_line(item, match):
    with pytest.raises(UserError, match=match) as err:
        load_recipe("cutler", [item])
    assert "\n" not in str(err.value)


def test_a_yaml_python_tag_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    path = _small(tmp_path / "r", SMALL.replace("tau: 0.15", f"tau: !!python/object/apply:os.system ['touch {marker}']"))
    with pytest.raises(UserError, match="refused the YAML tag"):
        load_recipe(path)
    with pytest.raises(UserError, match="values are data only"):
        load_recipe("cutler", [f"stages.maskcut.tau=!!python/object/apply:os.system ['touch {marker}']"])
    assert not marker.exists()


@pytest.mark.parametrize("old, new, match", [
    ("kind: maskcut,", "kind: magic,", r"r\.yaml: stages\.maskcut\.kind must be one of maskcut, cluster"),
    ("kind: image_folder", "kind: tarball", r"datasets\.train\.kind must be one of image_folder, coco, davis"),
    ("  maskcut: {", "  ../up: {", "stage name '../up'"),
    ("tau: 0.15", "tau: 0.15, sigma: 2", r"stages\.maskcut \(maskcut\) has unknown parameter\(s\) \['sigma'\]"),
    ("train: {path: w.pkl}", "train: {path: w.pkl, sam: vit_b}", "sets more than one of"),
    ("evaluation: {dataset: eval}", "evaluation: {dataset: test}", "evaluation names dataset 'test'"),
])
def test_validation_names_the_file_the_key_and_what_is_allowed(tmp_path, old, new, match):
    assert old in SMALL
    with pytest.raises(UserError, match=match):
        load_recipe(_small(tmp_path, SMALL.replace(old, new)))


def test_unknown_recipe_and_preset_list_what_exists(tmp_path):
    with pytest.raises(UserError, match="one of cutler, rcf, u2seg"):
        load_recipe("nosuch")
    with pytest.raises(UserError, match="no preset 'huge'; this recipe has: tiny"):
        load_recipe(_small(tmp_path), preset="huge")


def test_preflight_names_a_missing_weights_file_its_url_and_where_to_put_it(no_weights, tmp_path):
    from seg_suite.features.backbones import BACKBONES

    sets = [f"datasets.train.path={tmp_path}", f"datasets.eval.images={tmp_path}",
            f"datasets.eval.annotations={tmp_path}"]
    problems = load_recipe("cutler", sets + ["weights.train={}"]).preflight()
    dino = BACKBONES["dino_vitb8"]
    assert problems == [f"stage maskcut: weights file {dino.checkpoint_file} not found; download it from "
                        f"{dino.url} and put it at {no_weights / dino.checkpoint_file}"]
    no_weights.mkdir(parents=True)
    (no_weights / dino.checkpoint_file).write_bytes(b"w")
    assert load_recipe("cutler", sets + ["weights.train={}"]).preflight() == []


def test_preflight_names_a_missing_dataset_where_to_get_it_and_where_to_put_it(no_weights, tmp_path):
    problems = load_recipe("rcf", ["weights.train_rcf={}", f"datasets.davis.root={tmp_path}",
                                   "datasets.train.root=nowhere"]).preflight()
    where = os.path.join(os.getcwd(), "nowhere")
    assert problems == [f"dataset train (davis): root {where} not found; get it from "
                        f"https://graphics.ethz.ch/Downloads/Data/Davis/DAVIS-data.zip and put it at {where} "
                        f"(or --set datasets.train.root=PATH)"]
    # An extra evaluation set with no root is not given, not missing.
    assert load_recipe("rcf").data["datasets"]["segtrackv2"]["root"] is None


@pytest.mark.parametrize("name", SHIPPED)
def test_the_smoke_preset_resolves_to_the_synthetic_set_and_needs_nothing(name, no_weights):
    recipe = load_recipe(name, [], "smoke")
    used = {s["dataset"] for s in recipe.data["stages"].values() if s.get("dataset")}
    used.add(recipe.data["evaluation"]["dataset"])
    for ds in used:
        assert recipe.data["datasets"][ds]["kind"] == "synthetic"
        assert recipe.data["datasets"][ds]["num_train"] == 32  # filled from seg_suite.workflows.pipeline's defaults
    assert recipe.data["executor"]["kind"] == "local"
    assert recipe.preflight() == []


def test_paths_are_relative_to_where_they_are_written(tmp_path, monkeypatch):
    path = _small(tmp_path / "recipes")
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(path, ["weights.train.path=cwd/w.pkl"], "tiny")
    assert recipe.data["datasets"]["train"]["path"] == str(tmp_path / "recipes" / "tiny_imgs")  # preset: the file
    assert recipe.data["datasets"]["eval"]["annotations"] == str(tmp_path / "recipes" / "val.json")
    assert recipe.data["stages"]["train"]["config"] == str(tmp_path / "recipes" / "train.yaml")
    assert recipe.data["weights"]["train"]["path"] == str(tmp_path / "cwd" / "w.pkl")  # --set: the CWD
    assert recipe.data["stages"]["train"]["opts"] == {"SOLVER.MAX_ITER": 2}
    replaced = load_recipe(path, ["datasets.train={kind: image_folder, path: mine}"])
    assert replaced.data["datasets"]["train"]["path"] == str(tmp_path / "mine")


def test_the_lock_file_has_versions_keys_and_the_sha256_of_each_weights_file(tmp_path):
    weights = tmp_path / "w.pkl"
    weights.write_bytes(b"not really weights")
    recipe = load_recipe(_small(tmp_path / "r"), [f"weights.train.path={weights}"])
    lock = yaml.safe_load(recipe.lock(tmp_path / "out").read_text())
    assert {"torch", "torchvision", "numpy", "seg_suite", "detectron2"} <= set(lock["versions"])
    assert lock["versions"]["seg_suite"] and lock["versions"]["torch"]
    assert lock["weights"]["train"] == {"file": "w.pkl", "path": str(weights), "url": None,
                                        "sha256": hashlib.sha256(b"not really weights").hexdigest()}
    assert lock["stage_keys"] == recipe.stage_keys()
    assert lock["resolved"] == recipe.data and lock["sets"] == [f"weights.train.path={weights}"]


def test_nothing_is_written_outside_the_output_folder(tmp_path):
    recipe = load_recipe(_small(tmp_path / "r"))
    outside = tmp_path / "outside.yaml"
    outside.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_FILE).symlink_to(outside)
    before = {p for p in tmp_path.rglob("*") if not p.is_relative_to(out)}
    recipe.lock(out)
    assert outside.read_text() == "keep" and not (out / LOCK_FILE).is_symlink()
    assert {p for p in tmp_path.rglob("*") if not p.is_relative_to(out)} == before
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
    assert recipe.stage_dir(out, "maskcut") == out / "maskcut"
    with pytest.raises(UserError):
        recipe.stage_dir(out, "../maskcut")


def test_describe_says_where_each_stage_runs():
    local = load_recipe("cutler").describe()
    assert "1. maskcut [maskcut, dataset train]" in local and local.count("local process") == 4
    text = load_recipe("cutler", ["executor.kind=slurm", "executor.array_tasks=8", "executor.partition=gpu",
                                  "executor.account=lab"]).describe()
    sbatch = "--partition=gpu --account=lab --gpus=1 --cpus-per-task=8 --mem=64G --time=20:00:00"
    assert f"SLURM array of 8 tasks (sbatch --array=0-7 {sbatch})" in text
    assert text.count(f"one SLURM job (sbatch {sbatch})") == 2  # train and self_train
    assert "evaluate [evaluate_class_agnostic] key" in text and "prediction as a SLURM array of 8 tasks" in text


def test_the_recipe_is_frozen():
    recipe = load_recipe("rcf")
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.preset = "smoke"
