"""The dataset runner: outputs, failures, kill-and-resume, sharding and merge.

The job under test is tests/runner_jobs.py's BrightObjectsJob (connected bright regions), whose
masks on the fixture images are known exactly; it also runs as the child process we SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from runner_jobs import BrightObjectsJob

from seg_suite.errors import UserError
from seg_suite.io.masks import rle_to_mask
from seg_suite.pseudo.inputs import discover_inputs
from seg_suite.pseudo.runner import (
    ItemError,
    ShardSpec,
    default_job_resolver,
    merge_outputs,
    run_job,
    shard_output_path,
    sidecar_path,
)

CHILD = Path(__file__).resolve().parents[1] / "runner_jobs.py"


def resolver(class_path):
    assert class_path == "runner_jobs:BrightObjectsJob"
    return BrightObjectsJob


def add_bad_files(root: Path) -> None:
    (root / "empty.png").write_bytes(b"")
    (root / "sub" / "notes.png").write_text("not an image\n")


def run_reference(root: Path, out: Path, **kwargs) -> bytes:
    run_job(BrightObjectsJob(), discover_inputs(root), out, progress=False, **kwargs)
    return out.read_bytes()


# ------------------------------------------------------------------ outputs
def test_output_matches_known_masks(bright_images, capsys):
    root, expected = bright_images
    out = root.parent / "out.json"
    summary = run_job(BrightObjectsJob(), discover_inputs(root), out, progress=True)
    assert (summary.num_items, summary.num_failed, summary.num_processed) == (10, 0, 10)
    coco = json.loads(out.read_text())
    assert [im["file_name"] for im in coco["images"]] == sorted(expected)
    assert [im["id"] for im in coco["images"]] == list(range(1, 11))
    assert all((im["width"], im["height"]) == (30, 20) for im in coco["images"])
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))
    assert coco["categories"] == [{"id": 1, "name": "object"}]
    for im in coco["images"]:
        anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
        got = [rle_to_mask(a["segmentation"]) for a in anns]
        assert len(got) == len(expected[im["file_name"]])
        for mask, truth, ann in zip(got, expected[im["file_name"]], anns):
            np.testing.assert_array_equal(mask, truth)
            ys, xs = np.nonzero(truth)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert ann["area"] == truth.sum() and ann["iscrowd"] == 0 and ann["category_id"] == 1
    info = coco["info"]
    assert info["job"] == "bright-objects" and info["params"] == {"level": 128, "min_area": 4}
    assert info["versions"]["numpy"] == np.__version__
    assert info["inputs"]["num_items"] == 10 and info["inputs"]["num_failed"] == 0
    assert not any("time" in k or "date" in k for k in json.dumps(info).split('"'))  # no wall clock
    assert not sidecar_path(out, "journal").exists()
    assert sidecar_path(out, "failures").read_text() == ""
    assert json.loads(sidecar_path(out, "log").read_text())["processed_this_session"] == 10
    assert "img/s" in capsys.readouterr().err


def test_failures_recorded_while_run_continues(bright_images):
    root, expected = bright_images
    add_bad_files(root)
    out = root.parent / "out.json"
    summary = run_job(BrightObjectsJob(), discover_inputs(root), out, progress=False)
    assert (summary.num_items, summary.num_failed) == (12, 2)
    lines = sidecar_path(out, "failures").read_text().splitlines()
    failures = [json.loads(line) for line in lines]
    assert [f["key"] for f in failures] == ["empty.png", "sub/notes.png"]
    assert failures[0]["reason"].startswith("empty file (0 bytes)")
    assert failures[1]["reason"].startswith("not a readable image file")
    assert all(f["path"] == str(root / f["key"]) for f in failures)
    coco = json.loads(out.read_text())
    assert [im["file_name"] for im in coco["images"]] == sorted(expected)
    assert coco["info"]["inputs"]["num_failed"] == 2


class _FlakyJob(BrightObjectsJob):
    """Fails in ``process`` for chosen keys: ItemError for one, a plain bug for another."""

    def process(self, batch):
        for key, _ in batch:
            if key == "02.png":
                raise ItemError("cannot segment 02.png")
            if key == "sub/05.png":
                raise ValueError("boom")
        return super().process(batch)


def test_process_failure_fails_only_that_item(bright_images):
    root, _ = bright_images
    reference = json.loads(run_reference(root, root.parent / "ref.json"))
    out = root.parent / "out.json"
    summary = run_job(_FlakyJob(), discover_inputs(root), out, batch_size=4, progress=False)
    assert summary.num_failed == 2
    failures = [json.loads(x) for x in sidecar_path(out, "failures").read_text().splitlines()]
    assert [(f["key"], f["reason"]) for f in failures] == [
        ("02.png", "cannot segment 02.png"), ("sub/05.png", "unexpected error (ValueError: boom)")]
    got = json.loads(out.read_text())
    kept = [im["file_name"] for im in got["images"]]
    assert kept == [im["file_name"] for im in reference["images"] if im["file_name"] not in ("02.png", "sub/05.png")]
    segs = lambda coco: {im["file_name"]: [a["segmentation"] for a in coco["annotations"] if a["image_id"] == im["id"]]
                         for im in coco["images"]}
    assert all(segs(got)[k] == segs(reference)[k] for k in kept)


class _PidJob(BrightObjectsJob):
    def prepare(self, item):
        return super().prepare(item) + (os.getpid(),)

    def process(self, batch):
        self.pids = getattr(self, "pids", set()) | {pid for _, _, pid in batch}
        return super().process([(key, image) for key, image, _ in batch])


def test_workers_prepare_in_other_processes_same_output(bright_images):
    root, _ = bright_images
    reference = run_reference(root, root.parent / "ref.json")
    job = _PidJob()
    run_job(job, discover_inputs(root), root.parent / "out.json", workers=2, batch_size=3, progress=False)
    assert job.pids and os.getpid() not in job.pids
    got, want = json.loads((root.parent / "out.json").read_text()), json.loads(reference)
    assert got["info"].pop("job_class") == "test_runner:_PidJob"
    want["info"].pop("job_class")
    assert got == want


# ------------------------------------------------------------ kill and resume
def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _kill_when(args: list[str], ready, timeout: float = 120.0) -> None:
    proc = subprocess.Popen([sys.executable, str(CHILD), *args], stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                raise AssertionError(f"child ended before the kill point: {proc.stderr.read().decode()[-2000:]}")
            if time.time() > deadline:
                raise AssertionError("kill point not reached in time")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("done_before_kill,batch_size", [(0, 1), (4, 1), (9, 1), (4, 3)])
def test_kill_mid_journal_then_resume_is_identical(bright_images, done_before_kill, batch_size):
    root, _ = bright_images
    add_bad_files(root)
    reference = run_reference(root, root.parent / "ref.json")
    ref_failures = sidecar_path(root.parent / "ref.json", "failures").read_bytes()
    out = root.parent / "out.json"
    journal = sidecar_path(out, "journal")
    # header + done_before_kill item lines are on disk, fsynced, when we kill
    _kill_when(["--input", str(root), "--output", str(out), "--delay", "0.2", "--batch-size", str(batch_size)],
               lambda: _lines(journal) >= 1 + done_before_kill)
    assert not out.exists()
    with pytest.raises(UserError, match="--resume"):
        run_job(BrightObjectsJob(), discover_inputs(root), out, progress=False, batch_size=batch_size)
    summary = run_job(BrightObjectsJob(), discover_inputs(root), out, resume=True, progress=False,
                      batch_size=batch_size)
    assert summary.num_items == 12 and summary.num_items - summary.num_processed >= done_before_kill
    assert out.read_bytes() == reference
    assert sidecar_path(out, "failures").read_bytes() == ref_failures
    assert not journal.exists()


def test_kill_during_final_write_then_resume_is_identical(bright_images):
    root, _ = bright_images
    reference = run_reference(root, root.parent / "ref.json")
    out = root.parent / "out.json"
    temporaries = lambda: list(out.parent.glob(".out.json.*.tmp"))
    # the child writes half of the final JSON into its temporary file, then pauses
    _kill_when(["--input", str(root), "--output", str(out), "--write-delay", "60"],
               lambda: any(p.stat().st_size > 0 for p in temporaries()))
    assert not out.exists() and temporaries()
    assert _lines(sidecar_path(out, "journal")) == 11  # every item was journaled
    summary = run_job(BrightObjectsJob(), discover_inputs(root), out, resume=True, progress=False)
    assert summary.num_processed == 0
    assert out.read_bytes() == reference
    assert not temporaries()


def test_torn_last_journal_line_is_ignored(bright_images):
    root, _ = bright_images
    reference = run_reference(root, root.parent / "ref.json")
    out = root.parent / "out.json"
    journal = sidecar_path(out, "journal")
    _kill_when(["--input", str(root), "--output", str(out), "--delay", "0.2"], lambda: _lines(journal) >= 4)
    with open(journal, "ab") as fh:  # what a kill in the middle of a write() leaves
        fh.write(b'{"key": "sub/07.png", "record": {"images": [{"file_na')
    run_job(BrightObjectsJob(), discover_inputs(root), out, resume=True, progress=False)
    assert out.read_bytes() == reference


def test_kill_after_final_write_before_journal_removal(bright_images):
    root, _ = bright_images
    out = root.parent / "out.json"
    journal = sidecar_path(out, "journal")
    _kill_when(["--input", str(root), "--output", str(out), "--delay", "0.2"], lambda: _lines(journal) >= 3)
    saved = journal.read_bytes()
    reference = run_reference(root, out, resume=True)
    journal.write_bytes(saved)  # as if killed between the final rename and the journal's removal
    run_job(BrightObjectsJob(), discover_inputs(root), out, resume=True, progress=False)
    assert out.read_bytes() == reference and not journal.exists()


def test_resume_guards(bright_images, monkeypatch):
    root, _ = bright_images
    items = discover_inputs(root)
    out = root.parent / "out.json"
    process = BrightObjectsJob.process

    def interrupted(self, batch):  # Ctrl-C while the 4th image is processed
        if batch[0][0] == "06.png":
            raise KeyboardInterrupt
        return process(self, batch)

    with monkeypatch.context() as patch:
        patch.setattr(BrightObjectsJob, "process", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_job(BrightObjectsJob(), items, out, progress=False)
    assert not out.exists() and _lines(sidecar_path(out, "journal")) == 1 + 3  # 00, 02, 04 done
    with pytest.raises(UserError, match="pass --resume"):
        run_job(BrightObjectsJob(), items, out, progress=False)
    with pytest.raises(UserError, match="params differs"):
        run_job(BrightObjectsJob(level=100), items, out, resume=True, progress=False)
    with pytest.raises(UserError, match="batch_size differs"):
        run_job(BrightObjectsJob(), items, out, resume=True, batch_size=2, progress=False)
    with pytest.raises(UserError, match="keys_sha256 differs"):
        run_job(BrightObjectsJob(), items[:-1], out, resume=True, progress=False)
    summary = run_job(BrightObjectsJob(), items, out, resume=True, progress=False)
    assert summary.num_processed == 7
    # a finished output: --resume is a no-op, without it an error, --overwrite reruns
    before = (out.read_bytes(), out.stat().st_mtime_ns)
    assert run_job(BrightObjectsJob(), items, out, resume=True, progress=False).skipped
    assert (out.read_bytes(), out.stat().st_mtime_ns) == before
    with pytest.raises(UserError, match="already exists"):
        run_job(BrightObjectsJob(), items, out, progress=False)
    with pytest.raises(UserError, match="different params"):
        run_job(BrightObjectsJob(level=100), items, out, resume=True, progress=False)
    assert run_job(BrightObjectsJob(level=100), items, out, overwrite=True, progress=False).num_processed == 10
    assert json.loads(out.read_text())["info"]["params"]["level"] == 100


# ------------------------------------------------------------------ sharding
def test_shard_assignment_is_round_robin_over_sorted_keys():
    items = list(range(10))
    parts = [ShardSpec(3, i).select(items) for i in range(3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    # with batches, whole chunks of consecutive items are dealt out, so batches match an unsharded run
    assert [ShardSpec(2, i).select(items, batch_size=3) for i in range(2)] == [[0, 1, 2, 6, 7, 8], [3, 4, 5, 9]]
    assert ShardSpec(2, 1).chunks(10, 3) == [[3, 4, 5], [9]]
    assert shard_output_path("/x/out.json", ShardSpec(3, 1)) == Path("/x/out.shard-00001-of-00003.json")
    assert shard_output_path("/x/out.json", ShardSpec(1, 0)) == Path("/x/out.json")


@pytest.mark.parametrize("env,expected", [
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}, ShardSpec(4, 2)),
    ({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_MAX": "8"}, ShardSpec(4, 2)),
    ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "6",
      "SLURM_ARRAY_TASK_STEP": "2"}, ShardSpec(4, 2)),
    ({"RANK": "1", "WORLD_SIZE": "3"}, ShardSpec(3, 1)),
    ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2", "RANK": "1", "WORLD_SIZE": "3"}, ShardSpec(2, 0)),
    ({"RANK": "1"}, None),
    ({}, None),
])
def test_shard_spec_from_env(env, expected):
    assert ShardSpec.from_env(env) == expected


def test_shard_spec_resolve_and_validation():
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert ShardSpec.resolve(env=env) == ShardSpec(4, 1)
    assert ShardSpec.resolve(num_shards=8, shard_id=5, env=env) == ShardSpec(8, 5)  # flags win
    assert ShardSpec.resolve(num_shards=8, env=env) == ShardSpec(8, 1)
    assert ShardSpec.resolve(env={}) == ShardSpec(1, 0)
    with pytest.raises(UserError, match="needs --shard-id"):
        ShardSpec.resolve(num_shards=2, env={})
    with pytest.raises(UserError, match="shard id must be in 0..2"):
        ShardSpec(3, 3)
    with pytest.raises(UserError, match="at least 1"):
        ShardSpec(0, 0)
    with pytest.raises(UserError, match="not an integer"):
        ShardSpec.from_env({"RANK": "x", "WORLD_SIZE": "2"})


def _run_shards(root: Path, out: Path, num_shards: int, batch_size: int = 1, job=None) -> list[Path]:
    items = discover_inputs(root)
    for sid in range(num_shards):
        run_job(job or BrightObjectsJob(), items, out, shard=ShardSpec(num_shards, sid), batch_size=batch_size,
                progress=False)
    return [shard_output_path(out, ShardSpec(num_shards, sid)) for sid in range(num_shards)]


@pytest.mark.parametrize("num_shards,batch_size", [(2, 1), (3, 2), (12, 1)])
def test_merged_shards_equal_unsharded_run(bright_images, num_shards, batch_size):
    root, _ = bright_images
    add_bad_files(root)
    reference = run_reference(root, root.parent / "ref.json")
    out = root.parent / "out.json"
    shards = _run_shards(root, out, num_shards, batch_size)
    assert not out.exists() and all(p.exists() for p in shards)
    summary = merge_outputs(shards[::-1], out, resolver=resolver)
    assert summary.num_failed == 2
    assert out.read_bytes() == reference
    assert sidecar_path(out, "failures").read_bytes() == sidecar_path(root.parent / "ref.json", "failures").read_bytes()


def _refused(shards: list[Path], out: Path, match: str) -> None:
    with pytest.raises(UserError, match=match):
        merge_outputs(shards, out, resolver=resolver)
    assert not out.exists() and not list(out.parent.glob(".out.json.*"))


def test_merge_refuses_bad_shard_sets(bright_images, tmp_path):
    root, _ = bright_images
    out = tmp_path / "merged" / "out.json"
    shards = _run_shards(root, tmp_path / "run" / "out.json", 3)
    _refused(shards[:2], out, "missing shard")
    _refused(shards + [shards[0]], out, "given twice")
    torn = tmp_path / "torn.json"
    torn.write_bytes(shards[1].read_bytes()[:-40])  # a partial copy
    _refused([shards[0], torn, shards[2]], out, "not a complete shard file")
    edited = tmp_path / "edited.json"
    doc = json.loads(shards[1].read_text())
    doc["records"].pop()
    edited.write_text(json.dumps(doc))
    _refused([shards[0], edited, shards[2]], out, "incomplete")
    swapped = tmp_path / "swapped.json"
    doc = json.loads(shards[1].read_text())
    doc["records"][0]["key"] = "intruder.png"
    swapped.write_text(json.dumps(doc))
    _refused([shards[0], swapped, shards[2]], out, "do not add up")
    damaged = tmp_path / "damaged.json"
    doc = json.loads(shards[1].read_text())
    del doc["records"][0]["record"]
    damaged.write_text(json.dumps(doc))
    _refused([shards[0], damaged, shards[2]], out, "damaged shard file")
    other = _run_shards(root, tmp_path / "other" / "out.json", 3, job=BrightObjectsJob(level=100))
    _refused([shards[0], other[1], shards[2]], out, "differ in params")
    final = tmp_path / "final.json"
    run_job(BrightObjectsJob(), discover_inputs(root), final, progress=False)
    _refused([final], out, "not a seg_suite shard file")
    _refused([tmp_path / "nope.json"], out, "not found")
    merge_outputs(shards, out, resolver=resolver)  # the complete set still merges


def test_default_resolver_only_imports_seg_suite_jobs():
    with pytest.raises(UserError, match="not a seg_suite job"):
        default_job_resolver("os:system")
    with pytest.raises(UserError, match="not a seg_suite job class"):
        default_job_resolver("seg_suite.pseudo.runner:ShardSpec")
    from seg_suite.pseudo.maskcut_job import MaskCutJob

    assert default_job_resolver("seg_suite.pseudo.maskcut_job:MaskCutJob") is MaskCutJob


def test_second_process_on_the_same_output_is_refused(bright_images):
    root, _ = bright_images
    out = root.parent / "out.json"
    journal = sidecar_path(out, "journal")
    proc = subprocess.Popen([sys.executable, str(CHILD), "--input", str(root), "--output", str(out),
                             "--delay", "0.5"], stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while _lines(journal) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        with pytest.raises(UserError, match="another process is running this job"):
            run_job(BrightObjectsJob(), discover_inputs(root), out, resume=True, progress=False)
    finally:
        proc.kill()
        proc.wait()
    assert not out.exists()


def test_retry_failed_reprocesses_only_with_the_flag(bright_images, monkeypatch):
    from conftest import bright_rectangles
    from PIL import Image

    root, _ = bright_images
    (root / "01a.png").write_bytes(b"")  # fails, then gets fixed while the run is stopped
    out = root.parent / "out.json"
    process = BrightObjectsJob.process

    def interrupted(self, batch):
        if batch[0][0] == "06.png":
            raise KeyboardInterrupt
        return process(self, batch)

    for retry in (False, True):
        (root / "01a.png").write_bytes(b"")
        with monkeypatch.context() as patch:
            patch.setattr(BrightObjectsJob, "process", interrupted)
            with pytest.raises(KeyboardInterrupt):
                run_job(BrightObjectsJob(), discover_inputs(root), out, progress=False, overwrite=True)
        assert json.loads(sidecar_path(out, "failures").read_text())["key"] == "01a.png"
        Image.fromarray(bright_rectangles(3)[0]).save(root / "01a.png")
        summary = run_job(BrightObjectsJob(), discover_inputs(root), out, resume=True, retry_failed=retry,
                          progress=False)
        names = [im["file_name"] for im in json.loads(out.read_text())["images"]]
        assert summary.num_failed == (0 if retry else 1)
        assert ("01a.png" in names) == retry
