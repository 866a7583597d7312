"""The generation commands under hostile input and batch schedulers.

Exit codes a script can trust (3 when no item succeeded or more than --max-failed failed), unwritable
outputs as one line before any work, malformed checkpoints in the motion commands as one line that
runs no code, SIGTERM/SIGINT/SIGKILL with DataLoader workers, merge verifying each shard's content,
and file modes that follow the umask.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from conftest import bright_rectangles
from PIL import Image
from runner_jobs import BrightObjectsJob

from seg_suite.cli import main as cli_main
from seg_suite.errors import EXIT_ITEMS_FAILED, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, EXIT_USER_ERROR, Terminated, UserError
from seg_suite.pseudo.inputs import discover_inputs
from seg_suite.pseudo.runner import ShardSpec, merge_outputs, run_job, shard_output_path, sidecar_path
from seg_suite.pseudo.shards import shard_content_digest


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def broken_images(root: Path) -> Path:
    """Three files that are not images (every maskcut item fails in prepare, no model call)."""
    root.mkdir(parents=True)
    (root / "a.png").write_bytes(b"")
    (root / "b.png").write_text("not an image\n")
    (root / "sub").mkdir()
    (root / "sub" / "c.jpg").write_bytes(b"\xff\xd8 truncated")
    return root


def good_images(root: Path, n: int, height: int = 48, width: int = 64) -> Path:
    for i in range(n):
        write_png(root / f"{i:02d}.png", bright_rectangles(i, height, width)[0])
    return root


def maskcut(*argv) -> int:
    return cli_main(["maskcut", "--backbone", "handcrafted", "--fixed-size", "64", "--no-crf", "--workers", "0",
                     "--no-progress", *map(str, argv)])


def assert_one_error_line(err: str, *fragments: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def failure_keys(out: Path) -> list[str]:
    return [json.loads(line)["key"] for line in sidecar_path(out, "failures").read_text().splitlines()]


# ------------------------------------------------------------------------ exit codes
@pytest.mark.parametrize("num_items,num_failed,max_failed,code", [
    (10, 0, None, EXIT_OK), (10, 9, None, EXIT_OK), (10, 10, None, EXIT_ITEMS_FAILED), (0, 0, None, EXIT_OK),
    (10, 2, 0.2, EXIT_OK), (10, 3, 0.2, EXIT_ITEMS_FAILED), (10, 0, 0.0, EXIT_OK), (10, 1, 0.0, EXIT_ITEMS_FAILED),
    (10, 10, 1.0, EXIT_ITEMS_FAILED),
])
def test_items_exit_code(num_items, num_failed, max_failed, code):
    from seg_suite.cli._common import items_exit_code

    assert items_exit_code(num_items, num_failed, max_failed) == code


def test_a_run_where_every_item_failed_exits_3(tmp_path, capsys):
    images = broken_images(tmp_path / "images")
    out = tmp_path / "out.json"
    assert maskcut("--input", images, "--output", out) == EXIT_ITEMS_FAILED
    err = capsys.readouterr().err
    assert "0 of 3 items done, 3 failed" in err and "Traceback" not in err
    assert f"error: no item succeeded (all 3 failed); the reasons are in {sidecar_path(out, 'failures')}" in err
    # The output and the failure list are written all the same.
    assert json.loads(out.read_text())["images"] == [] and failure_keys(out) == ["a.png", "b.png", "sub/c.jpg"]
    # A scheduler that reruns the finished command with --resume gets the same verdict.
    assert maskcut("--input", images, "--output", out, "--resume") == EXIT_ITEMS_FAILED
    assert "no item succeeded" in capsys.readouterr().err


def test_few_failures_exit_0_and_max_failed_makes_too_many_exit_3(tmp_path, capsys):
    images = good_images(tmp_path / "images", 3)
    (images / "zz.png").write_bytes(b"")  # 1 of 4 items fails: 25%
    out = tmp_path / "out.json"
    args = ("--input", images, "--output", out)
    assert maskcut(*args, "--max-failed", "0.2") == EXIT_ITEMS_FAILED
    err = capsys.readouterr().err
    assert "3 of 4 items done, 1 failed" in err
    assert "error: 1 of 4 items failed, more than --max-failed 0.2 allows" in err
    coco = json.loads(out.read_text())
    assert [im["file_name"] for im in coco["images"]] == ["00.png", "01.png", "02.png"] and failure_keys(out) == ["zz.png"]
    assert maskcut(*args, "--resume", "--max-failed", "0.25") == EXIT_OK  # 25% is not more than 25%
    assert maskcut(*args, "--resume") == EXIT_OK  # by default a few failed items are normal
    capsys.readouterr()
    for bad in ("1.5", "-0.1"):
        assert maskcut(*args, "--resume", "--max-failed", bad) == EXIT_USER_ERROR
        assert_one_error_line(capsys.readouterr().err, "--max-failed is a fraction of the items, from 0 to 1")


def test_merge_of_a_run_where_every_item_failed_exits_3(tmp_path, capsys):
    images = broken_images(tmp_path / "images")
    out = tmp_path / "out.json"
    for sid in range(2):
        assert maskcut("--input", images, "--output", out, "--num-shards", "2", "--shard-id", sid) == EXIT_ITEMS_FAILED
    capsys.readouterr()
    assert cli_main(["merge", "--output", str(out), "--max-failed", "2"]) == EXIT_USER_ERROR
    assert_one_error_line(capsys.readouterr().err, "--max-failed")
    assert not out.exists()
    assert cli_main(["merge", "--output", str(out)]) == EXIT_ITEMS_FAILED
    err = capsys.readouterr().err
    assert "merged 2 shards" in err and "error: no item succeeded (all 3 failed)" in err
    assert json.loads(out.read_text())["images"] == [] and failure_keys(out) == ["a.png", "b.png", "sub/c.jpg"]


# ----------------------------------------------------------------- unwritable outputs
UNWRITABLE = {
    "under_a_regular_file": lambda tmp: tmp / "plain_file" / "out.json",
    "under_proc": lambda tmp: Path("/proc/self/seg_suite_test/out.json"),
    "under_sys": lambda tmp: Path("/sys/seg_suite_test/out.json"),
}


@pytest.fixture
def frames(tmp_path) -> Path:
    """A folder of 3 frames of a bright square moving right (a valid motion-masks input)."""
    root = tmp_path / "frames" / "seq"
    for t in range(3):
        image = np.full((64, 64, 3), 30, np.uint8)
        image[20:40, 10 + 4 * t : 30 + 4 * t] = 200
        write_png(root / f"{t:05d}.png", image)
    return root


@pytest.mark.parametrize("where", sorted(UNWRITABLE))
def test_unwritable_outputs_are_one_line_before_any_work(where, tmp_path, frames, capsys):
    (tmp_path / "plain_file").write_text("keep me\n")
    out = UNWRITABLE[where](tmp_path)
    images = good_images(tmp_path / "images", 2)
    commands = {
        "maskcut": ["maskcut", "--backbone", "handcrafted", "--input", str(images), "--output", str(out)],
        "motion-masks": ["motion-masks", "--input", str(frames), "--output", str(out)],
        "merge": ["merge", "--output", str(out), "--input", str(tmp_path / "any.shard-00000-of-00002.json")],
        "make-synthetic": ["make-synthetic", "--output", str(out.parent / "dataset"), "--num-train", "1"],
        "train-motion": ["train-motion", "--input", str(frames.parent), "--output", str(out.with_suffix(".pth"))],
    }
    for name, argv in commands.items():
        assert cli_main(argv) == EXIT_USER_ERROR, name
        err = capsys.readouterr().err
        assert_one_error_line(err, "cannot write to the", "choose a location you can write to")
        assert str(out.parent) in err, (name, err)
    assert (tmp_path / "plain_file").read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "images", "plain_file"]


class _CountingJob(BrightObjectsJob):
    def process(self, batch):
        raise AssertionError("no item may be processed when the output cannot be written")


def test_run_job_checks_the_output_folder_before_the_first_item(bright_images, tmp_path):
    root, _ = bright_images
    (tmp_path / "plain_file").write_text("keep me\n")
    with pytest.raises(UserError, match="cannot write to the output folder .*plain_file"):
        run_job(_CountingJob(), discover_inputs(root), tmp_path / "plain_file" / "out.json", progress=False)
    with pytest.raises(UserError, match="cannot write to the output folder .*plain_file"):
        merge_outputs([tmp_path / "any.json"], tmp_path / "plain_file" / "out.json")
    assert (tmp_path / "plain_file").read_text() == "keep me\n"


def test_motion_masks_folder_is_checked_before_the_first_video(frames, tmp_path, capsys):
    (tmp_path / "plain_file").write_text("keep me\n")
    out = tmp_path / "out.json"
    code = cli_main(["motion-masks", "--input", str(frames), "--output", str(out), "--workers", "0", "--no-progress",
                     "--masks-dir", str(tmp_path / "plain_file" / "masks")])
    assert code == EXIT_USER_ERROR
    assert_one_error_line(capsys.readouterr().err, "cannot write to the motion_masks output folder", "plain_file")
    assert not out.exists() and not sidecar_path(out, "journal").exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full to fill a 'disk'")
def test_a_full_disk_while_writing_a_sidecar_is_one_line(tmp_path, bright_images, capsys):
    root, _ = bright_images
    reference = tmp_path / "ref.json"
    run_job(BrightObjectsJob(), discover_inputs(root), reference, progress=False)
    out = tmp_path / "out.json"
    log = sidecar_path(out, "log")
    log.symlink_to("/dev/full")  # every write to it fails with ENOSPC, as on a full disk
    with pytest.raises(UserError, match=r"cannot write .*out\.log\.jsonl: No space left on device; .* free some space"):
        run_job(BrightObjectsJob(), discover_inputs(root), out, progress=False)
    assert sidecar_path(out, "journal").exists()  # the finished items are kept
    log.unlink()
    summary = run_job(BrightObjectsJob(), discover_inputs(root), out, resume=True, progress=False)
    assert summary.num_processed == 0 and out.read_bytes() == reference.read_bytes()
    # The command line says it in one line.
    images = broken_images(tmp_path / "broken")
    out = tmp_path / "cli.json"
    sidecar_path(out, "log").symlink_to("/dev/full")
    assert maskcut("--input", images, "--output", out) == EXIT_USER_ERROR
    assert_one_error_line(capsys.readouterr().err, "cli.log.jsonl: No space left on device")


# ------------------------------------------------------------------ malformed checkpoints
class _Payload:
    """Unpickling this runs ``open(marker, "w")``: a checkpoint that executes code when loaded."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _bad_checkpoints(folder: Path, marker: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, expected message fragment); none of them may run code or load."""
    folder.mkdir()
    good = folder / "good.pth"
    torch.save({"weight": torch.arange(10000.0)}, good)
    data = good.read_bytes()
    (folder / "truncated.pth").write_bytes(data[: len(data) // 2])
    (folder / "random.pth").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    torch.save({"model": _Payload(marker), "config": {}, "object_channel": 0}, folder / "payload.pth")
    import pickle

    (folder / "payload.pkl").write_bytes(pickle.dumps({"model": _Payload(marker)}))
    return {
        "truncated": (folder / "truncated.pth", "corrupt or not a torch checkpoint"),
        "random": (folder / "random.pth", "cannot load"),
        "payload": (folder / "payload.pth", "never unpickled"),
        "payload_pkl": (folder / "payload.pkl", "refused global"),
    }


def _wrong_rcf_checkpoints(folder: Path) -> dict[str, tuple[Path, str]]:
    from seg_suite.pseudo.motion.rcf_model import RCFNet
    from seg_suite.pseudo.motion.rcf_train import RCFConfig

    cfg = RCFConfig(num_masks=3, head_channels=8)
    net = RCFNet(cfg.backbone, cfg.num_masks, cfg.head_channels)
    state = {k: v for k, v in net.state_dict().items()}
    cases = {
        "wrong_keys": ({"model": {"x": torch.zeros(2)}, "config": cfg.to_dict(), "object_channel": 0},
                       "missing keys"),
        # the weights of a 3-mask net under a config that says 4 masks
        "shape": ({"model": state, "config": {**cfg.to_dict(), "num_masks": 4}, "object_channel": 0},
                  "shape mismatch, mask_head.7.weight (3, 8, 1, 1) in the file, (4, 8, 1, 1) in the model"),
        "not_rcf": ({"weight": torch.zeros(3)}, "expected model, config and object_channel"),
        "huge_config": ({"model": state, "config": {**cfg.to_dict(), "head_channels": 10**9}, "object_channel": 0},
                        "out-of-range sizes"),
        "bad_channel": ({"model": state, "config": cfg.to_dict(), "object_channel": 7}, "object_channel 7"),
    }
    out = {}
    for name, (obj, fragment) in cases.items():
        torch.save(obj, folder / f"{name}.pth")
        out[name] = (folder / f"{name}.pth", fragment)
    return out


def test_motion_masks_checkpoint_errors_are_one_line_and_run_no_code(frames, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    cases = {**_bad_checkpoints(tmp_path / "ckpt", marker), **_wrong_rcf_checkpoints(tmp_path / "ckpt")}
    out = tmp_path / "out.json"
    for name, (path, fragment) in cases.items():
        code = cli_main(["motion-masks", "--method", "rcf", "--checkpoint", str(path), "--input", str(frames),
                         "--output", str(out), "--workers", "0", "--no-progress"])
        assert code == EXIT_USER_ERROR, name
        assert_one_error_line(capsys.readouterr().err, path.name, fragment)
        assert not marker.exists(), name
        assert not out.exists() and not sidecar_path(out, "journal").exists()


def test_flow_and_backbone_weights_errors_are_one_line_and_run_no_code(frames, tmp_path, capsys):
    import torchvision

    marker = tmp_path / "MARKER"
    cases = _bad_checkpoints(tmp_path / "ckpt", marker)
    torch.save({"not_raft.weight": torch.zeros(2)}, tmp_path / "wrong_keys.pth")
    cases["wrong_keys"] = (tmp_path / "wrong_keys.pth", "missing keys")
    resnet = torchvision.models.resnet18(weights=None).state_dict()
    torch.save({**resnet, "conv1.weight": torch.zeros(64, 1, 7, 7)}, tmp_path / "misshapen.pth")
    out = tmp_path / "out.json"
    for name, (path, fragment) in cases.items():
        code = cli_main(["motion-masks", "--flow", "raft_small", "--flow-weights", str(path), "--input", str(frames),
                         "--output", str(out), "--workers", "0", "--no-progress"])
        assert code == EXIT_USER_ERROR, name
        assert_one_error_line(capsys.readouterr().err, path.name,
                              "is not a torchvision raft_small state dict" if name == "wrong_keys" else fragment)
        assert not marker.exists() and not out.exists()
    cases["misshapen"] = (tmp_path / "misshapen.pth", "shape mismatch, conv1.weight (64, 1, 7, 7) in the file")
    ckpt = tmp_path / "rcf.pth"
    for name, (path, fragment) in cases.items():
        code = cli_main(["train-motion", "--weights", str(path), "--input", str(frames.parent), "--output", str(ckpt),
                         "--steps", "1"])
        assert code == EXIT_USER_ERROR, name
        assert_one_error_line(capsys.readouterr().err, path.name,
                              "is not a matching torchvision ResNet state dict" if name == "wrong_keys" else fragment)
        assert not marker.exists() and not ckpt.exists()


def test_well_formed_weights_still_load(tmp_path):
    import torchvision

    from seg_suite.pseudo.motion.flow import RAFTFlow
    from seg_suite.pseudo.motion.rcf_model import load_backbone_weights
    from seg_suite.pseudo.motion.rcf_train import RCFConfig, load_checkpoint, save_checkpoint

    source = torchvision.models.resnet18(weights=None)
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "r18.pth")
    target = torchvision.models.resnet18(weights=None)
    load_backbone_weights(target, tmp_path / "r18.pth")
    assert torch.equal(target.conv1.weight, source.conv1.weight)
    raft = torchvision.models.optical_flow.raft_small(weights=None)
    torch.save(raft.state_dict(), tmp_path / "raft.pth")
    loaded = RAFTFlow("raft_small", weights=tmp_path / "raft.pth")
    assert all(torch.equal(a, b) for a, b in zip(loaded.model.state_dict().values(), raft.state_dict().values()))
    from seg_suite.pseudo.motion.rcf_model import RCFNet

    cfg = RCFConfig(num_masks=3, head_channels=8)
    net = RCFNet(cfg.backbone, cfg.num_masks, cfg.head_channels)
    save_checkpoint(tmp_path / "rcf.pth", net, cfg, {"object_channel": 2})
    model, cfg2, channel = load_checkpoint(tmp_path / "rcf.pth")
    assert cfg2 == cfg and channel == 2
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), net.state_dict().values()))


def test_train_motion_output_must_be_a_checkpoint_name(frames, tmp_path, capsys):
    code = cli_main(["train-motion", "--input", str(frames.parent), "--output", str(tmp_path / "rcf.json")])
    assert code == EXIT_USER_ERROR
    assert_one_error_line(capsys.readouterr().err, "--output must end in .pth")


# ---------------------------------------------------------------------------- signals
def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """The processes still alive after up to ``timeout`` seconds."""
    deadline = time.time() + timeout
    while any(_alive(p) for p in procs) and time.time() < deadline:
        time.sleep(0.05)
    return [p for p in procs if _alive(p)]


class _InterruptedJob(BrightObjectsJob):
    """Stops (as Ctrl-C or SIGTERM would) while the 4th image is processed, recording the live workers."""

    def __init__(self, error: type[KeyboardInterrupt]):
        super().__init__()
        self.error, self.workers = error, []
        # Children alive before the run are not its workers: earlier tests in this process may have
        # left process-wide helpers (multiprocessing's resource tracker of a spawn start).
        self.before = {p.pid for p in psutil.Process().children()}

    def process(self, batch):
        if batch[0][0] == "06.png":
            self.workers = [p for p in psutil.Process().children() if p.pid not in self.before]
            raise self.error()
        return super().process(batch)


@pytest.mark.parametrize("error", [KeyboardInterrupt, Terminated])
def test_interrupt_shuts_dataloader_workers_down_explicitly(bright_images, error):
    root, _ = bright_images
    out = root.parent / "out.json"
    job = _InterruptedJob(error)
    # pytest keeps the traceback (and so the DataLoader iterator) alive: only an explicit shutdown
    # stops the workers before the exception is handled.
    with pytest.raises(error) as caught:
        run_job(job, discover_inputs(root), out, workers=2, progress=False)
    assert len(job.workers) == 2
    try:
        assert _wait_gone(job.workers, 0) == [], "workers outlived the interrupted run"
    finally:  # workers ignore SIGTERM: without this, a failure here would hang the interpreter's exit
        for worker in job.workers:
            if _alive(worker):
                worker.kill()
    assert caught.value is not None
    journal = sidecar_path(out, "journal").read_text().splitlines()
    assert [json.loads(line)["key"] for line in journal[1:]] == ["00.png", "02.png", "04.png"]
    assert not out.exists()


MASKCUT = ["maskcut", "--backbone", "handcrafted", "--fixed-size", "192", "--no-crf", "--workers", "2", "--no-progress"]


@pytest.fixture(scope="module")
def maskcut_reference(tmp_path_factory) -> tuple[Path, bytes]:
    """10 images that take ~0.3 s each (handcrafted, 192 px), and the uninterrupted output."""
    root = tmp_path_factory.mktemp("signals")
    images = good_images(root / "images", 10)
    assert cli_main([*MASKCUT, "--input", str(images), "--output", str(root / "ref.json")]) == EXIT_OK
    return images, (root / "ref.json").read_bytes()


def _start_until_journaled(argv: list[str], journal: Path, entries: int) -> subprocess.Popen:
    """Start ``seg-suite argv`` in its own session and wait until ``entries`` items are journaled."""
    proc = subprocess.Popen([sys.executable, "-m", "seg_suite.cli", *argv], stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 180
    while not (journal.exists() and journal.read_bytes().count(b"\n") >= 1 + entries):
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before the signal: {proc.stderr.read()[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("the run did not journal its items in time")
        time.sleep(0.01)
    return proc


def _journaled_keys(journal: Path) -> list[str]:
    lines = journal.read_text().splitlines()
    assert json.loads(lines[0])["seg_suite_journal"] == 1
    return [json.loads(line)["key"] for line in lines[1:]]


@pytest.mark.slow
@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, EXIT_SIGTERM), (signal.SIGINT, EXIT_SIGINT)])
def test_signal_stops_maskcut_cleanly_and_resume_is_identical(maskcut_reference, tmp_path, signum, code):
    images, reference = maskcut_reference
    out = tmp_path / "out.json"
    journal = sidecar_path(out, "journal")
    argv = [*MASKCUT, "--input", str(images), "--output", str(out)]
    proc = _start_until_journaled(argv, journal, 2)
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert len(workers) >= 2
    os.killpg(proc.pid, signum)  # as a scheduler or a terminal does: the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "rerun the same command with --resume" in err
    assert _wait_gone(workers, 0) == [], "DataLoader workers outlived the command"
    kept = _journaled_keys(journal)
    assert len(kept) >= 2 and len(set(kept)) == len(kept) and kept == sorted(kept)
    assert not out.exists()
    assert cli_main([*argv, "--resume"]) == EXIT_OK
    log = json.loads(sidecar_path(out, "log").read_text().splitlines()[-1])
    assert log["resumed"] and log["processed_this_session"] == 10 - len(kept)
    assert out.read_bytes() == reference


@pytest.mark.slow
def test_workers_die_with_a_sigkilled_main_process(maskcut_reference, tmp_path):
    images, _ = maskcut_reference
    out = tmp_path / "out.json"
    proc = _start_until_journaled([*MASKCUT, "--input", str(images), "--output", str(out)],
                                  sidecar_path(out, "journal"), 1)
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert len(workers) >= 2
    proc.kill()  # the main process only: nothing in it can clean up
    proc.wait()
    try:
        assert _wait_gone(workers, 5.0) == [], "orphaned DataLoader workers"
    finally:
        for w in workers:
            if _alive(w):
                w.kill()


@pytest.mark.slow
def test_sigterm_stops_motion_masks_cleanly_and_resume_is_identical(tmp_path):
    from seg_suite.data.synthetic import make_synthetic_dataset

    videos = tmp_path / "synthetic"
    make_synthetic_dataset(videos, num_train=0, num_val=0, num_videos=10, video_frames=8, height=128, width=160,
                           progress=False)
    base = ["motion-masks", "--input", str(videos), "--crf", "--workers", "2", "--no-progress"]
    assert cli_main([*base, "--output", str(tmp_path / "ref.json")]) == EXIT_OK
    out = tmp_path / "out.json"
    journal = sidecar_path(out, "journal")
    proc = _start_until_journaled([*base, "--output", str(out)], journal, 2)
    workers = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_SIGTERM, err
    assert _wait_gone(workers, 0) == []
    kept = _journaled_keys(journal)
    assert len(kept) >= 2 and not out.exists()
    assert cli_main([*base, "--output", str(out), "--resume"]) == EXIT_OK
    assert out.read_bytes() == (tmp_path / "ref.json").read_bytes()
    masks = sorted(p.relative_to(tmp_path / "out_masks") for p in (tmp_path / "out_masks").rglob("*.png"))
    assert len(masks) == 10 * 8
    assert all((tmp_path / "out_masks" / m).read_bytes() == (tmp_path / "ref_masks" / m).read_bytes() for m in masks)


# ------------------------------------------------------------------- merge verifies content
def _run_shards(root: Path, out: Path, num_shards: int) -> list[Path]:
    items = discover_inputs(root)
    for sid in range(num_shards):
        run_job(BrightObjectsJob(), items, out, shard=ShardSpec(num_shards, sid), progress=False)
    return [shard_output_path(out, ShardSpec(num_shards, sid)) for sid in range(num_shards)]


def _merge(shards, out):
    return merge_outputs(shards, out, resolver=lambda class_path: BrightObjectsJob)


def test_shard_files_carry_the_digest_of_their_content(bright_images, tmp_path):
    root, _ = bright_images
    reference = tmp_path / "ref.json"
    run_job(BrightObjectsJob(), discover_inputs(root), reference, progress=False)
    shards = _run_shards(root, tmp_path / "run" / "out.json", 2)
    for shard in shards:
        doc = json.loads(shard.read_text())
        body = {k: v for k, v in doc.items() if k != "content_sha256"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")
        assert doc["content_sha256"] == hashlib.sha256(canonical).hexdigest()
    # The digest lives in shard files only: unsharded and merged outputs are as before.
    assert b"content_sha256" not in reference.read_bytes()
    _merge(shards, tmp_path / "merged.json")
    assert (tmp_path / "merged.json").read_bytes() == reference.read_bytes()


def _refused(shards: list[Path], out: Path, match: str) -> None:
    with pytest.raises(UserError, match=match):
        _merge(shards, out)
    assert not out.exists() and not sidecar_path(out, "failures").exists()


def test_merge_refuses_a_shard_edited_after_it_was_written(bright_images, tmp_path):
    root, _ = bright_images
    (root / "broken.png").write_bytes(b"")
    shards = _run_shards(root, tmp_path / "run" / "out.json", 2)
    out = tmp_path / "merged" / "out.json"
    original = json.loads(shards[0].read_text())
    assert original["failures"] == [] and json.loads(shards[1].read_text())["failures"][0]["key"] == "broken.png"

    def edited(source: Path, name: str, change, reseal: bool = False) -> Path:
        doc = json.loads(source.read_text())
        change(doc)
        if reseal:
            doc["content_sha256"] = shard_content_digest(doc)
        path = tmp_path / name
        path.write_text(json.dumps(doc))
        return path

    def rescore(doc):
        doc["records"][0]["record"]["annotations"][0][0]["score"] = 0.99

    def reword(doc):
        doc["failures"][0]["reason"] = "fine, really"

    modified = f"was modified after it was written .*; rerun that shard"
    _refused([edited(shards[0], "score.json", rescore), shards[1]], out, f"shard .*score.json {modified}")
    _refused([shards[0], edited(shards[1], "reason.json", reword)], out, f"shard .*reason.json {modified}")
    unsealed = edited(shards[0], "unsealed.json", lambda doc: doc.pop("content_sha256"))
    _refused([unsealed, shards[1]], out, modified)
    # Params that differ between shards are refused even when the edited shard was resealed.
    other = edited(shards[0], "params.json", lambda doc: doc["params"].update(level=100), reseal=True)
    _refused([other, shards[1]], out, "differ in params")
    old = edited(shards[0], "old.json", lambda doc: doc.update(seg_suite_shard=1))
    _refused([old, shards[1]], out, "written by an older seg_suite")
    # Re-indenting changes no value: the canonical digest still matches.
    indented = tmp_path / "indented.json"
    indented.write_text(json.dumps(original, indent=2))
    assert _merge([indented, shards[1]], out).num_failed == 1


# ------------------------------------------------------------------------------ umask
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_get_the_mode_of_a_plain_open_under_the_umask(bright_images, tmp_path, umask, mode):
    root, _ = bright_images
    (root / "broken.png").write_bytes(b"")
    previous = os.umask(umask)
    try:
        out = tmp_path / "out.json"
        run_job(BrightObjectsJob(), discover_inputs(root), out, progress=False)
        shards = _run_shards(root, tmp_path / "sharded.json", 2)
        _merge(shards, tmp_path / "merged.json")
    finally:
        os.umask(previous)
    written = [out, *shards, tmp_path / "merged.json"]
    written += [sidecar_path(p, kind) for p in (out, *shards) for kind in ("failures", "log")]
    written.append(sidecar_path(tmp_path / "merged.json", "failures"))
    assert sidecar_path(out, "failures").read_text().count("\n") == 1
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {p.name: oct(mode) for p in written}
