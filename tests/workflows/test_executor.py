"""The executor (seg_suite.workflows.executor): K local processes, one-line failures, and the SLURM
submission checked without a cluster (submitit's own sbatch text; a fake sbatch records it)."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import pytest

from seg_suite.errors import UserError
from seg_suite.workflows import executor as E

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class WriteShard:
    """A shard task: writes its index, the number of shards and its process id."""

    folder: str
    fail_on: int | None = None

    def __call__(self, index: int, num: int) -> int:
        if index == self.fail_on:
            raise ValueError(f"shard {index} fails on purpose")
        Path(self.folder, f"shard-{index}-of-{num}.txt").write_text(str(os.getpid()))
        return index


@pytest.fixture
def importable(monkeypatch):
    """Worker processes import this module (the task's class) and seg_suite from here."""
    path = os.pathsep.join([str(Path(__file__).parent), str(ROOT), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path)


def test_one_local_task_runs_in_this_process(tmp_path):
    assert E.run_shard_tasks(WriteShard(str(tmp_path)), 1, E.ExecutorSpec(), tmp_path / "logs", name="t") == [0]
    assert (tmp_path / "shard-0-of-1.txt").read_text() == str(os.getpid())
    assert not (tmp_path / "logs").exists()


def test_two_local_tasks_run_as_two_processes(tmp_path, importable):
    results = E.run_shard_tasks(WriteShard(str(tmp_path)), 2, E.ExecutorSpec(array_tasks=2), tmp_path / "logs",
                                name="maskcut")
    assert results == [0, 1]
    pids = {(tmp_path / f"shard-{i}-of-2.txt").read_text() for i in range(2)}
    assert len(pids) == 2 and str(os.getpid()) not in pids


def test_a_failed_task_is_one_line_naming_it_and_its_log(tmp_path, importable):
    with pytest.raises(UserError) as err:
        E.run_shard_tasks(WriteShard(str(tmp_path), fail_on=1), 2, E.ExecutorSpec(), tmp_path / "logs", name="maskcut")
    message = str(err.value)
    assert "\n" not in message
    assert "maskcut: task 1 of 2 failed: ValueError: shard 1 fails on purpose; its log: " in message
    log = Path(message.split("its log: ")[1])
    assert log.is_file() and "fails on purpose" in log.read_text()
    assert (tmp_path / "shard-0-of-2.txt").is_file()  # the other task ran to its end


def test_a_preempted_task_is_resubmitted_as_the_same_call(tmp_path):
    # What submitit does on SLURM's pre-emption / time-limit signal: call checkpoint() and requeue
    # its answer; the shard task then runs again with the same arguments (and resumes its journal).
    call = E._ShardCall(WriteShard(str(tmp_path)), 1, 3)
    again = call.checkpoint()
    assert again.function is call and again.args == () and again.kwargs == {}
    assert again.result() == 1 and (tmp_path / "shard-1-of-3.txt").is_file()


SPEC = E.ExecutorSpec(kind="slurm", array_tasks=4, partition="gpu", account="proj", gpus=2, cpus=10, mem="64G",
                      time="12:30:00", nodes=2)


def test_slurm_parameters_of_an_array_and_of_a_training_job():
    assert E.slurm_parameters(SPEC, array_tasks=4, name="maskcut") == {
        "job_name": "maskcut", "partition": "gpu", "account": "proj", "nodes": 1, "ntasks_per_node": 1,
        "gpus_per_node": 2, "cpus_per_task": 10, "mem": "64G", "time": 750,
        "additional_parameters": {"requeue": True}, "array_parallelism": 4}
    train = E.slurm_parameters(SPEC, array_tasks=None, name="train")
    assert train["nodes"] == 2 and "array_parallelism" not in train
    assert "gpus_per_node" not in E.slurm_parameters(dataclasses.replace(SPEC, gpus=0), array_tasks=2, name="x")


def _sbatch_lines(text: str) -> set[str]:
    return {line for line in text.splitlines() if line.startswith("#SBATCH")}


def test_sbatch_preview_of_an_array(tmp_path):
    text = E.sbatch_preview(SPEC, tmp_path / "logs", array_tasks=4, name="maskcut")
    lines = _sbatch_lines(text)
    assert {"#SBATCH --partition=gpu", "#SBATCH --account=proj", "#SBATCH --gpus-per-node=2",
            "#SBATCH --cpus-per-task=10", "#SBATCH --mem=64G", "#SBATCH --time=750", "#SBATCH --nodes=1",
            "#SBATCH --array=0-3%4", "#SBATCH --requeue", "#SBATCH --signal=USR2@90",
            "#SBATCH --job-name=maskcut", "#SBATCH --ntasks-per-node=1"} <= lines
    assert f"#SBATCH --output={tmp_path / 'logs'}/%A_%a_0_log.out" in lines
    assert "-m submitit.core._submit" in text
    single = _sbatch_lines(E.sbatch_preview(SPEC, tmp_path / "logs", array_tasks=None, name="train"))
    assert "#SBATCH --nodes=2" in single and not any(line.startswith("#SBATCH --array") for line in single)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """An ``sbatch`` that keeps each script it is given and answers with a job id (and an ``srun``)."""
    bin_dir, kept = tmp_path / "bin", tmp_path / "submitted"
    bin_dir.mkdir()
    kept.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {kept}/\necho "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod((bin_dir / tool).stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    waited = []
    monkeypatch.setattr(E, "_wait", lambda jobs, name, what: waited.extend(jobs) or [None] * len(jobs))
    return kept, waited


def test_the_submitted_array_is_the_preview(tmp_path, fake_slurm):
    kept, waited = fake_slurm
    E.run_shard_tasks(WriteShard(str(tmp_path)), 4, SPEC, tmp_path / "logs", name="maskcut")
    scripts = list(kept.iterdir())
    assert len(scripts) == 1 and len(waited) == 4
    assert [job.job_id for job in waited] == ["4242_0", "4242_1", "4242_2", "4242_3"]
    assert scripts[0].read_text() == E.sbatch_preview(SPEC, tmp_path / "logs", array_tasks=4, name="maskcut")
    assert not list(tmp_path.glob("shard-*"))  # nothing ran here


def test_a_training_job_is_one_submission_of_the_nodes(tmp_path, fake_slurm):
    kept, waited = fake_slurm
    E.run_single_job(lambda: 1, SPEC, tmp_path / "logs", name="train", distributed=True)
    (script,) = kept.iterdir()
    assert script.read_text() == E.sbatch_preview(SPEC, tmp_path / "logs", array_tasks=None, name="train")
    assert len(waited) == 1 and waited[0].job_id == "4242"


def test_slurm_without_a_cluster_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun, no sbatch
    with pytest.raises(UserError, match="needs a SLURM cluster"):
        E.run_shard_tasks(WriteShard(str(tmp_path)), 2, SPEC, tmp_path / "logs", name="maskcut")
    assert E.run_single_job(lambda: 7, E.ExecutorSpec(), tmp_path / "logs", name="train") == 7


def test_dist_setup_inside_a_slurm_job(monkeypatch):
    for key, value in {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "1234", "SLURM_JOB_NUM_NODES": "2",
                       "SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "node[3-4]"}.items():
        monkeypatch.setenv(key, value)
    assert E.slurm_dist_setup() == (2, 1, "tcp://node3:21234")


def test_spec_from_a_recipe_section():
    spec = E.ExecutorSpec.from_recipe({"kind": "slurm", "array_tasks": "8", "gpus": 1, "time": "1-00:00:00",
                                       "mem": 32})
    assert spec == E.ExecutorSpec(kind="slurm", array_tasks=8, gpus=1, time="1-00:00:00", mem="32")
    assert spec.timeout_min == 24 * 60 and E.ExecutorSpec().timeout_min == E.DEFAULT_TIMEOUT_MIN
    assert E.ExecutorSpec.from_recipe({}).array_tasks == E.default_tasks()
    assert E.ExecutorSpec.from_recipe({"kind": "slurm"}).array_tasks == 1
    with pytest.raises(UserError, match="unknown executor key.*queue.*valid keys: kind"):
        E.ExecutorSpec.from_recipe({"queue": "gpu"})
    for bad, match in (({"kind": "pbs"}, "not one of local, slurm"), ({"time": "90"}, "HH:MM:SS"),
                       ({"time": "1:75:00"}, "0 to 59"), ({"array_tasks": "two"}, "whole number"),
                       ({"cpus": 0}, "cpus must be")):
        with pytest.raises(UserError, match=match):
            E.ExecutorSpec.from_recipe(bad)
