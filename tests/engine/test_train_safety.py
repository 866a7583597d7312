"""The training side against hostile or broken input, and under a batch scheduler.

- config files are data: a YAML Python tag never runs (directly, through ``_BASE_``, through
  train_net, ``seg-suite self-train`` and ``seg-suite pipeline``); bad YAML, unknown keys, values
  that cannot train and unwritable output folders are one ``error:`` line with exit code 2;
- devices: an explicit ``MODEL.DEVICE cuda`` is refused without CUDA and with ``--num-gpus 0``;
- every file detectron2 writes is replaced atomically: a failure or a kill in the middle of a save
  leaves the previous file intact;
- ``--resume`` starts after the newest checkpoint that loads, skipping damaged ones;
- ``--eval-only`` without weights is refused unless ``--allow-untrained``;
- SIGTERM / SIGINT stop training with 143 / 130 and no DataLoader worker left; SIGKILL leaves none;
- ``DATASETS.PSEUDO_COCO`` label files and panoptic JSON names are checked before anything decodes them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from seg_suite.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs/synthetic/maskformer2_R50_tiny_cpu.yaml")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
ENV = dict(os.environ, OMP_NUM_THREADS="1")
# A few iterations of the tiny config on 2 images per step; checkpoints at iterations 1 and 3.
SHORT = ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "2",
         "DATASETS.TEST", "()"]


def data_opts(synthetic_dataset: Path) -> list[str]:
    """Train on the conftest synthetic set through DATASETS.PSEUDO_COCO (no global name is re-registered)."""
    ann, img = synthetic_dataset / "annotations", synthetic_dataset / "images"
    sets = [["safety_train", str(ann / "instances_train.json"), str(img / "train")],
            ["safety_val", str(ann / "instances_val.json"), str(img / "val")]]
    return ["DATASETS.PSEUDO_COCO", repr(sets), "DATASETS.TRAIN", "('safety_train',)"]


def train_net(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "tools/train_net.py", *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def run_in_process(*args: str) -> int:
    from seg_suite.cli._train_net import run

    return run(["--config-file", CONFIG, "--num-gpus", "0", *args])


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    assert "Traceback" not in stderr, stderr[-3000:]
    [line] = error_lines(stderr)
    for fragment in fragments:
        assert fragment in line, line


# ------------------------------------------------------------------ configs are data
def write_evil_configs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(marker, evil.yaml with a Python tag, child.yaml whose _BASE_ is evil.yaml)."""
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"_BASE_: {CONFIG}\nSEED: !!python/object/apply:os.system [\"touch {marker}\"]\n")
    child = tmp_path / "child.yaml"
    child.write_text("_BASE_: evil.yaml\nSOLVER:\n  MAX_ITER: 2\n")
    return marker, evil, child


def test_python_tag_never_runs_through_train_net(tmp_path):
    marker, evil, _ = write_evil_configs(tmp_path)
    out = tmp_path / "out"
    res = train_net("--config-file", str(evil), "--num-gpus", "0", "OUTPUT_DIR", str(out))
    assert res.returncode == 2
    assert_one_line_error(res.stderr, f"{evil}, line 2", "refused the YAML tag !!python/object/apply:os.system")
    assert not marker.exists()
    assert not out.exists()  # refused before detectron2 wrote anything


def test_python_tag_in_a_base_file_never_runs(tmp_path, capsys):
    marker, evil, child = write_evil_configs(tmp_path)
    from seg_suite.engine.launch import build_config

    with pytest.raises(UserError, match=r"evil\.yaml, line 2: refused the YAML tag"):
        build_config(str(child), [], 0)
    out = tmp_path / "out"
    from seg_suite.cli._train_net import run

    assert run(["--config-file", str(child), "--num-gpus", "0", "OUTPUT_DIR", str(out)]) == 2
    assert_one_line_error(capsys.readouterr().err, f"{evil}, line 2")
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize("through_base", [False, True])
def test_python_tag_never_runs_through_self_train_and_pipeline(tmp_path, capsys, through_base):
    from seg_suite.cli import main as seg_suite

    marker, evil, child = write_evil_configs(tmp_path)
    config = child if through_base else evil
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"images": [], "annotations": []}))
    (tmp_path / "images").mkdir()
    out = tmp_path / "st"
    assert seg_suite(["self-train", "--config-file", str(config), "--input", str(labels), "--images",
                      str(tmp_path / "images"), "--output", str(out), "--num-gpus", "0"]) == 2
    assert_one_line_error(capsys.readouterr().err, f"{evil}, line 2", "refused the YAML tag")
    assert not out.exists()
    pipe = tmp_path / "pipe"
    assert seg_suite(["pipeline", "--output", str(pipe), "--config-file", str(config), "--no-progress"]) == 2
    assert_one_line_error(capsys.readouterr().err, f"{evil}, line 2", "refused the YAML tag")
    assert not pipe.exists()  # refused before the first stage
    assert not marker.exists()


def test_official_configs_still_load_safely():
    """The shipped configs (with their _BASE_ chains) load through the safe path with their values."""
    from seg_suite.engine.launch import build_config

    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        if "recipes" in path.parts or "rcf" in path.parts:
            continue  # not detectron2 training configs
        cfg = build_config(str(path), [], 0)
        assert cfg.MODEL.DEVICE == "cpu", path


# ------------------------------------------------------------------ config validation
@pytest.mark.parametrize("text, fragment", [
    ("SOLVER:\n  MAX_ITER: [1\n", "line 3: not valid YAML"),
    ("- SOLVER\n- MODEL\n", "holds a YAML list, not a mapping of config keys"),
    ("SOLVER:\n  MAX_ITR: 5\n", "unknown config key SOLVER.MAX_ITR"),
    ("SOLVER:\n  BASE_LR: 1\n",
     "SOLVER.BASE_LR must be a number like its default 0.0001, got the integer 1 (write 1.0)"),
    ("MODEL: 5\n", "MODEL is a group of keys"),
    ("SEED: 2024-01-01\n", "SEED holds a datetime.date"),
    ("VERSION: 1\n", "VERSION 1 is not the config layout"),
    ("1: 2\n", "config key 1 is not a name"),
    ("_BASE_: self.yaml\n", "chain loops back"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, text, fragment):
    from seg_suite.engine.launch import build_config

    path = tmp_path / "self.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        build_config(str(path), [], 0)
    assert fragment in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("opts, fragment", [
    (["SOLVER.MAX_ITER", "-5"], "config value SOLVER.MAX_ITER -5 is invalid: it must be at least 1"),
    (["SOLVER.IMS_PER_BATCH", "0"], "config value SOLVER.IMS_PER_BATCH 0 is invalid: it must be at least 1"),
    (["SOLVER.BASE_LR", "0.0"], "config value SOLVER.BASE_LR 0.0 is invalid: it must be a positive learning rate"),
    (["SOLVER.BASE_LR", "-0.1"], "SOLVER.BASE_LR -0.1 is invalid"),
    (["SOLVER.CHECKPOINT_PERIOD", "0"], "SOLVER.CHECKPOINT_PERIOD 0 is invalid: it must be at least 1"),
    (["DATALOADER.NUM_WORKERS", "-1"], "DATALOADER.NUM_WORKERS -1 is invalid: it must be 0 or more"),
    (["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "0"], "MODEL.SEM_SEG_HEAD.NUM_CLASSES 0 is invalid: it must be at least 1"),
    (["SOLVER.STEPS", "(10, -1)"], "SOLVER.STEPS (10, -1) is invalid"),
    (["INPUT.MIN_SCALE", "2.0", "INPUT.MAX_SCALE", "1.0"], "the minimum is above the maximum"),
    (["SOLVER.BASE_LR", "fast"], "SOLVER.BASE_LR must be a number like its default 0.0003, got the string 'fast'"),
    (["NO_SUCH.KEY", "1"], "unknown config key NO_SUCH.KEY"),
    (["SOLVER.MAX_ITER.X", "1"], "SOLVER.MAX_ITER is a value, not a group of keys"),
    (["SOLVER.MAX_ITER"], "config overrides come in KEY VALUE pairs"),
    (["SOLVER.MAX_ITER", "4", "--resume"], "--resume stands among the KEY VALUE config overrides"),
    (["MODEL.DEVICE", "tpu"], "MODEL.DEVICE 'tpu' is not a device"),
])
def test_bad_values_are_one_line_errors(opts, fragment):
    from seg_suite.engine.launch import build_config

    with pytest.raises(UserError) as err:
        build_config(CONFIG, opts, 0)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_batch_must_split_over_processes():
    from seg_suite.engine.launch import build_config

    with pytest.raises(UserError, match="SOLVER.IMS_PER_BATCH 3 does not split over 2 processes"):
        build_config(CONFIG, ["SOLVER.IMS_PER_BATCH", "3"], num_gpus=2)
    assert build_config(CONFIG, ["SOLVER.IMS_PER_BATCH", "4"], num_gpus=2).SOLVER.IMS_PER_BATCH == 4


def test_train_net_refuses_a_bad_value_before_writing(tmp_path):
    out = tmp_path / "out"
    res = train_net("--config-file", CONFIG, "--num-gpus", "0", "OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", "-5")
    assert res.returncode == 2
    assert_one_line_error(res.stderr, "SOLVER.MAX_ITER -5 is invalid")
    assert not out.exists()


def _setup_args(out, *extra):
    import argparse

    return argparse.Namespace(config_file=CONFIG, opts=["OUTPUT_DIR", str(out), *extra], num_gpus=0, num_machines=1,
                              eval_only=False, resume=False)


@pytest.mark.parametrize("where", ["under_a_file", "proc", "sys"])
def test_unwritable_output_dir_is_refused_at_setup(tmp_path, where):
    from seg_suite.engine.launch import setup

    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    out = {"under_a_file": blocker / "out", "proc": Path("/proc/seg_suite_no_such/out"),
           "sys": Path("/sys/seg_suite_no_such_dir")}[where]
    with pytest.raises(UserError, match=r"cannot write to the output folder \(OUTPUT_DIR\) " + str(out)):
        setup(_setup_args(out))
    assert blocker.read_text() == "keep me"
    assert not out.exists()


@pytest.mark.skipif(IS_ROOT, reason="root writes into a read-only folder; /sys covers the refusal for root")
def test_read_only_output_dir_is_refused_at_setup(tmp_path):
    from seg_suite.engine.launch import setup

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(UserError, match="cannot write to the output folder"):
            setup(_setup_args(ro))
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_train_net_unwritable_output_dir_exit_code(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    res = train_net("--config-file", CONFIG, "--num-gpus", "0", "OUTPUT_DIR", str(blocker / "out"))
    assert res.returncode == 2
    assert_one_line_error(res.stderr, "cannot write to the output folder (OUTPUT_DIR)", str(blocker / "out"))
    assert blocker.read_text() == "keep me"


# ------------------------------------------------------------------ devices
@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_explicit_cuda_without_cuda_is_refused(tmp_path, no_cuda):
    from seg_suite.engine.launch import build_config

    with pytest.raises(UserError, match="MODEL.DEVICE 'cuda' requested but CUDA is not available here; use "
                                        "MODEL.DEVICE cpu"):
        build_config(CONFIG, ["MODEL.DEVICE", "cuda"], num_gpus=1)
    in_file = tmp_path / "gpu.yaml"
    in_file.write_text(f"_BASE_: {CONFIG}\nMODEL:\n  DEVICE: cuda:0\n")
    with pytest.raises(UserError, match="MODEL.DEVICE 'cuda:0' requested but CUDA is not available"):
        build_config(str(in_file), [], num_gpus=1)
    with pytest.raises(UserError, match="--num-gpus 0 means training on the CPU, but MODEL.DEVICE is 'cuda'"):
        build_config(CONFIG, ["MODEL.DEVICE", "cuda"], num_gpus=0)


def test_default_cuda_follows_the_machine(no_cuda):
    """detectron2's default MODEL.DEVICE (cuda, set by nobody) runs on the CPU as before."""
    from seg_suite.engine.launch import build_config

    official = str(ROOT / "configs/coco/instance-segmentation/maskformer2_R50_bs16_50ep.yaml")
    assert build_config(official, [], num_gpus=0).MODEL.DEVICE == "cpu"
    assert build_config(official, [], num_gpus=1).MODEL.DEVICE == "cpu"  # no CUDA here


def test_cuda_device_index_and_gpu_count_are_checked(monkeypatch):
    from seg_suite.engine.launch import build_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert build_config(CONFIG, ["MODEL.DEVICE", "cuda"], num_gpus=1).MODEL.DEVICE == "cuda"
    with pytest.raises(UserError, match=r"MODEL.DEVICE 'cuda:3' requested but this machine has 1 CUDA device\(s\)"):
        build_config(CONFIG, ["MODEL.DEVICE", "cuda:3"], num_gpus=1)
    with pytest.raises(UserError, match=r"--num-gpus 2 requested but this machine has 1 CUDA device\(s\)"):
        build_config(CONFIG, ["MODEL.DEVICE", "cuda"], num_gpus=2)


def test_train_net_refuses_cuda_with_zero_gpus(tmp_path):
    res = train_net("--config-file", CONFIG, "--num-gpus", "0", "MODEL.DEVICE", "cuda", "OUTPUT_DIR",
                    str(tmp_path / "out"))
    assert res.returncode == 2
    assert_one_line_error(res.stderr, "--num-gpus 0 means training on the CPU")


# ------------------------------------------------------------------ atomic writes
@pytest.fixture
def checkpointer(tmp_path):
    from seg_suite.engine import file_io
    from seg_suite.modeling import MaskFormerCheckpointer

    file_io.install()
    torch.manual_seed(0)
    return MaskFormerCheckpointer(torch.nn.Linear(4, 3), save_dir=str(tmp_path / "ckpt"))


def test_failed_save_leaves_the_previous_checkpoint_intact(checkpointer, monkeypatch):
    folder = Path(checkpointer.save_dir)
    checkpointer.save("model_final", iteration=7)
    before = (folder / "model_final.pth").read_bytes()
    tag = (folder / "last_checkpoint").read_text()

    def save_half_then_fail(obj, f, *args, **kwargs):
        f.write(b"\x50\x4b half a zip archive")
        raise RuntimeError("killed in the middle of the save")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with torch.no_grad():
        checkpointer.model.weight.add_(1.0)
    with pytest.raises(RuntimeError, match="killed in the middle"):
        checkpointer.save("model_final", iteration=8)
    with pytest.raises(RuntimeError, match="killed in the middle"):
        checkpointer.save("model_0000008", iteration=8)
    assert (folder / "model_final.pth").read_bytes() == before  # intact
    assert not (folder / "model_0000008.pth").exists()  # absent, not truncated
    assert (folder / "last_checkpoint").read_text() == tag
    assert sorted(p.name for p in folder.iterdir()) == ["last_checkpoint", "model_final.pth"]  # no temp file left
    monkeypatch.undo()
    from seg_suite.io.checkpoints import load_checkpoint

    assert load_checkpoint(folder / "model_final.pth")["iteration"] == 7


def test_full_disk_during_save_is_one_line_and_keeps_the_file(checkpointer, monkeypatch):
    import errno

    folder = Path(checkpointer.save_dir)
    checkpointer.save("model_final")
    before = (folder / "model_final.pth").read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(UserError, match="cannot write .*model_final.pth: No space left on device; .*free some space"):
        checkpointer.save("model_final")
    assert (folder / "model_final.pth").read_bytes() == before


def test_sigkill_in_the_middle_of_a_write_keeps_the_destination(tmp_path):
    dest = tmp_path / "model_final.pth"
    dest.write_bytes(b"the previous, complete checkpoint")
    script = textwrap.dedent(f"""
        import os, signal
        from detectron2.utils.file_io import PathManager
        from seg_suite.engine import file_io
        file_io.install()
        f = PathManager.open({str(dest)!r}, "wb")
        f.write(b"x" * 1_000_000)
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=ENV, capture_output=True, timeout=120)
    assert res.returncode == -signal.SIGKILL
    assert dest.read_bytes() == b"the previous, complete checkpoint"
    leftovers = [p for p in tmp_path.iterdir() if p != dest]
    assert [p.stat().st_size for p in leftovers] == [1_000_000]  # the write went to a temporary name
    assert leftovers[0].name.startswith(".model_final.pth.")


def test_atomic_writes_honour_the_umask_and_appends_stay_appends(tmp_path):
    from detectron2.utils.file_io import PathManager

    from seg_suite.engine import file_io

    file_io.install()
    old = os.umask(0o027)
    try:
        with PathManager.open(str(tmp_path / "config.yaml"), "w") as f:
            f.write("SEED: 1\n")
    finally:
        os.umask(old)
    assert (tmp_path / "config.yaml").stat().st_mode & 0o777 == 0o640
    for line in ("a\n", "b\n"):
        with PathManager.open(str(tmp_path / "log.txt"), "a") as f:
            f.write(line)
    assert (tmp_path / "log.txt").read_text() == "a\nb\n"


# ------------------------------------------------------------------ resume past damaged checkpoints
@pytest.fixture(scope="module")
def trained(synthetic_dataset, tmp_path_factory):
    """A run of 4 iterations: model_0000001.pth, model_0000003.pth, model_final.pth (iteration 3)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_in_process(*data_opts(synthetic_dataset), *SHORT, "SOLVER.MAX_ITER", "4", "OUTPUT_DIR",
                              str(out)) == 0
    finally:
        torch.set_num_threads(before)
    assert sorted(p.name for p in out.glob("*.pth")) == ["model_0000001.pth", "model_0000003.pth", "model_final.pth"]
    return out


def iteration_of(path: Path) -> int:
    from seg_suite.io.checkpoints import load_checkpoint

    return load_checkpoint(path)["iteration"]


def resume(run: Path, synthetic_dataset: Path, max_iter: int) -> int:
    return run_in_process("--resume", *data_opts(synthetic_dataset), *SHORT, "SOLVER.MAX_ITER", str(max_iter),
                          "OUTPUT_DIR", str(run))


def log_since(run: Path, size: int) -> str:
    return (run / "log.txt").read_bytes()[size:].decode()


def test_resume_skips_a_truncated_final_checkpoint(trained, synthetic_dataset, tmp_path, one_thread):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    final = run / "model_final.pth"
    final.write_bytes(final.read_bytes()[:4096])
    size = (run / "log.txt").stat().st_size
    assert resume(run, synthetic_dataset, max_iter=6) == 0
    log = log_since(run, size)
    [warning] = [line for line in log.splitlines() if "skipped a damaged checkpoint" in line]
    assert str(final) in warning
    assert "Starting training from iteration 4" in log
    assert iteration_of(final) == 5 and iteration_of(run / "model_0000005.pth") == 5


def test_resume_rewrites_a_zeroed_final_checkpoint_with_nothing_left_to_train(trained, synthetic_dataset, tmp_path,
                                                                              one_thread):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    final = run / "model_final.pth"
    final.write_bytes(bytes(final.stat().st_size))
    assert resume(run, synthetic_dataset, max_iter=4) == 0
    assert iteration_of(final) == 3  # the state of model_0000003.pth, the newest that loads
    assert (run / "last_checkpoint").read_text() == "model_final.pth"


def test_resume_skips_the_newest_truncated_periodic_checkpoint(trained, synthetic_dataset, tmp_path, one_thread):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    # Killed while writing model_0000003.pth (by a writer without atomic saves): no final yet.
    (run / "model_final.pth").unlink()
    (run / "last_checkpoint").write_text("model_0000003.pth")
    newest = run / "model_0000003.pth"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    size = (run / "log.txt").stat().st_size
    assert resume(run, synthetic_dataset, max_iter=4) == 0
    log = log_since(run, size)
    assert "skipped a damaged checkpoint: cannot load " + str(newest) in log
    assert "Starting training from iteration 2" in log
    assert iteration_of(newest) == 3 and iteration_of(run / "model_final.pth") == 3  # both rewritten whole


def test_resume_with_every_checkpoint_damaged_is_one_line(trained, synthetic_dataset, tmp_path, capsys, one_thread):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    for path in run.glob("*.pth"):
        path.write_bytes(b"")
    assert resume(run, synthetic_dataset, max_iter=4) == 2
    assert_one_line_error(capsys.readouterr().err, f"none of the checkpoints in {run} loads", "model_final.pth")


# ------------------------------------------------------------------ --eval-only needs weights
def test_eval_only_without_weights_is_refused(tmp_path, capsys):
    out = tmp_path / "eval"
    assert run_in_process("--eval-only", "OUTPUT_DIR", str(out)) == 2
    assert_one_line_error(capsys.readouterr().err, "--eval-only needs trained weights: set MODEL.WEIGHTS",
                          "--allow-untrained")
    assert not out.exists()


def test_eval_only_with_allow_untrained_or_resume_runs(trained, synthetic_dataset, tmp_path, one_thread):
    opts = [*data_opts(synthetic_dataset), "DATASETS.TEST", "('safety_val',)"]
    out = tmp_path / "untrained"
    assert run_in_process("--eval-only", "--allow-untrained", *opts, "OUTPUT_DIR", str(out)) == 0
    assert (out / "inference" / "safety_val" / "coco_instances_results.json").is_file()
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    assert run_in_process("--eval-only", "--resume", *opts, "OUTPUT_DIR", str(run)) == 0
    assert "Loading from " + str(run / "model_final.pth") in (run / "log.txt").read_text()


# ------------------------------------------------------------------ signals
def start_training(out: Path, synthetic_dataset: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "tools/train_net.py", "--config-file", CONFIG, "--num-gpus", "0",
         *data_opts(synthetic_dataset), "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "100000",
         "SOLVER.CHECKPOINT_PERIOD", "100000", "DATASETS.TEST", "()", "DATALOADER.NUM_WORKERS", "2",
         "OUTPUT_DIR", str(out)],
        cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_first_metrics(proc: subprocess.Popen, out: Path) -> list:
    """Block until metrics.json holds a training record; the DataLoader workers of the process."""
    import psutil

    metrics = out / "metrics.json"
    deadline = time.monotonic() + 240
    while not (metrics.is_file() and "total_loss" in metrics.read_text()):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "no training iteration was recorded"
        time.sleep(0.2)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 2  # the two DataLoader workers
    return children


def wait_until_gone(processes: list, seconds: float = 10.0) -> list:
    import psutil

    deadline = time.monotonic() + seconds
    while True:
        alive = [p.pid for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, word, group", [
    (signal.SIGTERM, 143, "SIGTERM", False), (signal.SIGINT, 130, "interrupted", False),
    # SLURM and a terminal signal the whole process group: the workers get it too and must leave
    # stopping to the trainer, not die and turn a clean stop into "DataLoader worker killed"
    (signal.SIGTERM, 143, "SIGTERM", True)])
def test_signal_stops_training_cleanly(synthetic_dataset, tmp_path, signum, code, word, group):
    out = tmp_path / "run"
    proc = start_training(out, synthetic_dataset)
    try:
        children = wait_for_first_metrics(proc, out)
        if group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read()
    assert proc.returncode == code, stderr[-3000:]
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"stopped ({word})") and "--resume" in last
    assert wait_until_gone(children) == []


@pytest.mark.slow
def test_sigkill_leaves_no_dataloader_worker(synthetic_dataset, tmp_path):
    out = tmp_path / "run"
    proc = start_training(out, synthetic_dataset)
    try:
        children = wait_for_first_metrics(proc, out)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert wait_until_gone(children, seconds=5.0) == []


# ------------------------------------------------------------------ pseudo-label files
def _image(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    from PIL import Image

    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(images / "a.png")
    return images


def _coco(**changes) -> dict:
    from seg_suite.io.masks import mask_to_rle

    mask = np.zeros((20, 30), bool)
    mask[2:4, 3:5] = True
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 20, "width": 30}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [3, 2, 2, 2], "area": 4,
                         "segmentation": mask_to_rle(mask)}],
        "categories": [{"id": 1, "name": "fg"}],
    }
    data.update(changes)
    return data


BAD_LABELS = {
    "huge_rle": (json.dumps(_coco(annotations=[{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                                                "segmentation": {"size": [60000, 60000], "counts": "0:0"}}])),
                 "annotation 1 of image 1"),
    "huge_image": (json.dumps(_coco(images=[{"id": 1, "file_name": "a.png", "height": 60000, "width": 60000}],
                                    annotations=[])), "claims 60000x60000 pixels"),
    "corrupt_counts": (json.dumps(_coco(annotations=[{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                                                      "segmentation": {"size": [20, 30], "counts": "\x7f!!"}}])),
                       "annotation 1 of image 1"),
    "json_list": ("[]", "is not a COCO label file of dataset"),
    "truncated": (json.dumps(_coco())[:50], "cannot read label file of dataset"),
    "duplicate_image_ids": (json.dumps(_coco(images=[{"id": 1, "file_name": "a.png", "height": 20, "width": 30}] * 2)),
                            "image id 1 appears more than once"),
    "dangling_annotation": (json.dumps(_coco(annotations=[{"id": 1, "image_id": 9, "category_id": 1}])),
                            "points to image id 9, which is not in 'images'"),
    "dotdot_file_name": (json.dumps(_coco(images=[{"id": 1, "file_name": "../../etc/passwd", "height": 20,
                                                   "width": 30}], annotations=[])), "climbs out of its root"),
    "absolute_file_name": (json.dumps(_coco(images=[{"id": 1, "file_name": "/etc/passwd", "height": 20,
                                                     "width": 30}], annotations=[])), "is absolute"),
}


@pytest.mark.parametrize("case", sorted(BAD_LABELS))
def test_bad_pseudo_coco_file_is_one_line_before_loading(tmp_path, case):
    from detectron2.data import DatasetCatalog

    from seg_suite.data.datasets import register_pseudo_coco

    text, fragment = BAD_LABELS[case]
    path = tmp_path / "labels.json"
    path.write_text(text)
    assert path.stat().st_size < 1024
    name = f"safety_bad_{case}"
    with pytest.raises(UserError) as err:
        register_pseudo_coco(name, path, _image(tmp_path))
        DatasetCatalog.get(name)
    assert fragment in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_train_net_refuses_a_huge_rle_without_allocating_it(tmp_path):
    """Exit code 2 and one line, and the process never holds anything near the 3.6 GB the mask would take."""
    path = tmp_path / "labels.json"
    path.write_text(BAD_LABELS["huge_rle"][0])
    images = _image(tmp_path)
    script = textwrap.dedent(f"""
        import json, resource, sys
        from seg_suite.cli._train_net import run
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        code = run({["--config-file", CONFIG, "--num-gpus", "0", "DATASETS.PSEUDO_COCO",
                     repr([["safety_huge", str(path), str(images)]]), "DATASETS.TRAIN", "('safety_huge',)",
                     "DATASETS.TEST", "()", "OUTPUT_DIR", str(tmp_path / "out")]!r})
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"code": code, "grew_kb": after - before}}))
    """)
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=ENV, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["code"] == 2
    assert_one_line_error(res.stderr, str(path), "annotation 1 of image 1")
    # Model and loader set-up take a few hundred MB; the mask alone would be 3.6 GB.
    assert result["grew_kb"] < 1_500_000


def _panoptic_root(tmp_path: Path, file_name: str, image_name: str = "a.png") -> Path:
    root = tmp_path / "pan"
    for sub in ("images/train", "panoptic/train", "semantic/train", "annotations"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "panoptic_train.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": image_name, "height": 20, "width": 30}],
        "annotations": [{"image_id": 1, "file_name": file_name, "segments_info": [{"id": 1, "category_id": 1}]}],
        "categories": [{"id": 1, "name": "a", "isthing": 1}, {"id": 2, "name": "b", "isthing": 0}],
    }))
    return root


@pytest.mark.parametrize("file_name, image_name, fragment", [
    ("../../../etc/passwd", "a.png", "panoptic PNG name '../../../etc/passwd' climbs out of its root"),
    ("/etc/passwd", "a.png", "panoptic PNG name '/etc/passwd' is absolute"),
    ("a.png", "../secret.png", "image file_name '../secret.png' climbs out of its root"),
])
def test_panoptic_names_stay_under_their_folders(tmp_path, file_name, image_name, fragment):
    from detectron2.data import DatasetCatalog

    from seg_suite.data.datasets import register_pseudo_panoptic

    root = _panoptic_root(tmp_path, file_name, image_name)
    register_pseudo_panoptic("safety_pan", root, "train")
    with pytest.raises(UserError) as err:
        DatasetCatalog.get("safety_pan")
    assert fragment in str(err.value) and "panoptic_train.json" in str(err.value)


def test_panoptic_file_of_the_wrong_shape_is_one_line(tmp_path):
    from detectron2.data import DatasetCatalog

    from seg_suite.data.datasets import register_pseudo_panoptic

    root = _panoptic_root(tmp_path, "a.png")
    pan = root / "annotations" / "panoptic_train.json"
    data = json.loads(pan.read_text())
    data["annotations"][0]["segments_info"][0]["category_id"] = 77
    pan.write_text(json.dumps(data))
    register_pseudo_panoptic("safety_pan_cat", root, "train")
    with pytest.raises(UserError, match="has category_id 77, which is not among the dataset's categories"):
        DatasetCatalog.get("safety_pan_cat")
    pan.write_text("[1, 2]")
    with pytest.raises(UserError, match="lists no categories"):
        register_pseudo_panoptic("safety_pan_list", root, "train")
