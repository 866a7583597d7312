"""Where the stages of a workflow run: in this process, as processes on this machine, or on SLURM.

Scale-out goes through submitit (github.com/facebookincubator/submitit), the engine CutLER uses
for the same job (``maskcut/run_with_submitit_maskcut_array.py``, ``cutler/tools/run_with_submitit.sh``):

    spec = ExecutorSpec.from_recipe({"kind": "slurm", "array_tasks": 8, "partition": "gpu", "time": "12:00:00"})
    run_shard_tasks(MaskCutShard(...), spec.array_tasks, spec, out / "logs", name="maskcut")
    run_single_job(TrainCall(...), spec, out / "logs", name="train", distributed=True)

- A generation stage (MaskCut, features, SAM refinement, motion, predict) is ``K`` shard tasks,
  ``task(shard_index, num_shards)``, each running the dataset runner on its shard with
  ``resume=True``; the stage then merges the shards. ``local`` runs one task in this process, or
  ``K`` processes on this machine (one GPU each when there are GPUs); ``slurm`` submits one job
  array. A task SLURM pre-empts or times out is requeued by submitit (``--signal`` USR2 before the
  kill, ``--requeue``) and, called again with the same arguments, continues from its journal.
- A training stage is one job (:func:`run_single_job`): ``nodes`` machines with one task each and
  ``gpus`` GPUs per machine; inside it the task calls detectron2-style ``launch`` with
  :func:`slurm_dist_setup`'s ``(num_machines, machine_rank, dist_url)``.
- :func:`slurm_parameters` and :func:`sbatch_preview` give the submission without a cluster
  (``--dry-run``); the preview is submitit's own sbatch text.

Tasks are pickled into the worker processes (cloudpickle): pass a module-level function or an
instance of a module-level class. Logs of every task land in ``log_folder`` (submitit's
``<job id>_<task>_log.out`` / ``.err``); a failed task is a one-line :class:`UserError` naming it
and its log file.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

import submitit

from seg_suite.errors import UserError

KINDS = ("local", "slurm")
RECIPE_KEYS = ("kind", "array_tasks", "partition", "account", "gpus", "cpus", "mem", "time", "nodes")
# Without a time limit: 72 hours, the --timeout default of CutLER's submitit launchers
# (maskcut/run_with_submitit_maskcut_array.py, cutler/tools/run_with_submitit.sh); submitit itself
# would ask SLURM for 5 minutes, and its local processes stop after 2.
DEFAULT_TIMEOUT_MIN = 72 * 60
_TIME = re.compile(r"^(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2})$")


def default_tasks() -> int:
    """The local number of shard tasks: one per GPU of this machine, or 1 without a GPU."""
    import torch

    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def parse_time(text: str) -> int:
    """A SLURM time limit ``HH:MM:SS`` (or ``D-HH:MM:SS``) in whole minutes, rounded up."""
    match = _TIME.match(str(text).strip())
    if not match:
        raise UserError(f"executor time {text!r} is not a time limit; write HH:MM:SS or D-HH:MM:SS, e.g. 12:00:00")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    if minutes > 59 or seconds > 59:
        raise UserError(f"executor time {text!r}: minutes and seconds run from 0 to 59")
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total < 1:
        raise UserError(f"executor time {text!r} is zero; give the time a task may run")
    return -(-total // 60)


@dataclasses.dataclass(frozen=True)
class ExecutorSpec:
    """Where and with what the tasks run.

    ``kind``: "local" or "slurm". ``array_tasks``: K shard tasks of a generation stage.
    ``partition``, ``account``, ``mem`` (SLURM's spelling, e.g. "64G"; a bare number is megabytes, as
    SLURM reads it) and ``time`` ("HH:MM:SS") go to sbatch as they are; None leaves them to the
    cluster's defaults, except the time (:data:`DEFAULT_TIMEOUT_MIN`).
    ``gpus`` and ``cpus``: per task (per machine for training). ``nodes``: machines of a training job.
    """

    kind: str = "local"
    array_tasks: int = 1
    partition: str | None = None
    account: str | None = None
    gpus: int = 1
    cpus: int = 8
    mem: str | None = None
    time: str | None = None
    nodes: int = 1

    def __post_init__(self):
        if self.kind not in KINDS:
            raise UserError(f"executor kind {self.kind!r} is not one of {', '.join(KINDS)}")
        for name, least in (("array_tasks", 1), ("gpus", 0), ("cpus", 1), ("nodes", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise UserError(f"executor {name} must be a whole number >= {least}, got {value!r}")
        if self.time is not None:
            parse_time(self.time)

    @property
    def timeout_min(self) -> int:
        """``time`` in minutes (:data:`DEFAULT_TIMEOUT_MIN` without one)."""
        return DEFAULT_TIMEOUT_MIN if self.time is None else parse_time(self.time)

    @classmethod
    def from_recipe(cls, section: dict | None) -> "ExecutorSpec":
        """The spec of a recipe's ``executor`` section (keys :data:`RECIPE_KEYS`; whole numbers may be
        written as strings, as ``--set`` gives them). Without ``array_tasks``, a local executor runs
        :func:`default_tasks` tasks and a SLURM one 1."""
        section = dict(section or {})
        unknown = sorted(set(section) - set(RECIPE_KEYS))
        if unknown:
            raise UserError(f"unknown executor key(s) {', '.join(unknown)}; valid keys: {', '.join(RECIPE_KEYS)}")
        values = {k: v for k, v in section.items() if v is not None}
        for name in ("array_tasks", "gpus", "cpus", "nodes"):
            if name in values and isinstance(values[name], str):
                try:
                    values[name] = int(values[name])
                except ValueError:
                    raise UserError(f"executor {name} must be a whole number, got {values[name]!r}") from None
        for name in ("partition", "account", "mem", "time"):
            if name in values:
                values[name] = str(values[name])
        if "array_tasks" not in values:
            values["array_tasks"] = default_tasks() if values.get("kind", "local") == "local" else 1
        return cls(**values)


class _ShardCall(submitit.helpers.Checkpointable):
    """``task(index, num_tasks)`` as a submitit callable. On pre-emption or timeout submitit calls
    :meth:`checkpoint`, which (inherited) resubmits this same call; the task continues from its journal."""

    def __init__(self, task: Callable[[int, int], Any], index: int, num_tasks: int):
        self.task, self.index, self.num_tasks = task, index, num_tasks

    def __call__(self) -> Any:
        return self.task(self.index, self.num_tasks)


class _JobCall(submitit.helpers.Checkpointable):
    """``task()`` as a submitit callable, resubmitted the same way (training resumes from its checkpoint)."""

    def __init__(self, task: Callable[[], Any]):
        self.task = task

    def __call__(self) -> Any:
        return self.task()


def slurm_parameters(spec: ExecutorSpec, *, array_tasks: int | None, name: str) -> dict:
    """The parameters of ``submitit.SlurmExecutor.update_parameters`` for ``spec``.

    ``array_tasks``: K for a job array of K one-machine tasks, all allowed to run at once
    (``array_parallelism``); None for one job of ``spec.nodes`` machines (training). Every task asks
    for ``--signal`` (submitit's default, USR2 90 s before the end) and ``--requeue``, so a pre-empted
    or timed-out task is put back in the queue.
    """
    params = {
        "job_name": name,
        "partition": spec.partition,
        "account": spec.account,
        "nodes": 1 if array_tasks else spec.nodes,
        "ntasks_per_node": 1,
        "gpus_per_node": spec.gpus or None,
        "cpus_per_task": spec.cpus,
        "mem": spec.mem,
        "time": spec.timeout_min,
        "additional_parameters": {"requeue": True},
    }
    if array_tasks:
        params["array_parallelism"] = array_tasks
    return {k: v for k, v in params.items() if v is not None}


def _submit_command(folder: Path) -> str:
    # The command submitit's SlurmExecutor puts into every submission (its _submitit_command_str).
    return " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])


def sbatch_preview(spec: ExecutorSpec, log_folder, *, array_tasks: int | None, name: str) -> str:
    """The sbatch script submitit would submit for ``spec`` (built by submitit, no cluster needed).

    A job array when ``array_tasks`` > 1 (``#SBATCH --array=0-{K-1}%{K}``), as submitit turns a
    batch of K > 1 submissions into one; a single job otherwise.
    """
    from submitit.slurm.slurm import _make_sbatch_string

    folder = Path(log_folder).expanduser().absolute()
    params = slurm_parameters(spec, array_tasks=array_tasks, name=name)
    map_count = array_tasks if array_tasks and array_tasks > 1 else None
    return _make_sbatch_string(command=_submit_command(folder), folder=folder, map_count=map_count, **params)


def _slurm_executor(log_folder, params: dict) -> "submitit.SlurmExecutor":
    try:
        executor = submitit.SlurmExecutor(folder=Path(log_folder))
    except RuntimeError as err:  # submitit: 'Could not detect "srun"'
        raise UserError(f"the slurm executor needs a SLURM cluster (sbatch and srun on PATH): {err}") from None
    executor.update_parameters(**params)
    return executor


def _reason(err: BaseException) -> str:
    """The last line of the task's traceback in submitit's error (which puts the traceback between
    two dashed lines, then the log paths), or the error's first line."""
    text = str(err)
    parts = re.split(r"\n-{10,}\n", text)
    lines = [line.strip() for line in (parts[1] if len(parts) > 2 else text).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return lines[-1] if len(parts) > 2 else lines[0]


def _wait(jobs: list, name: str, what: str) -> list:
    """The results of ``jobs`` in order; a UserError naming the first failed one (``what``, formatted
    with its ``index``) and its log.
    An interruption (Ctrl-C, SIGTERM) cancels the jobs still running; a rerun resumes them."""
    results, failed = [], []
    try:
        for index, job in enumerate(jobs):
            try:
                results.append(job.result())
            except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as err:
                failed.append((index, job, err))
                results.append(None)
    except BaseException:
        for job in jobs:
            if not job.done():
                job.cancel(check=False)
        raise
    if failed:
        index, job, err = failed[0]
        more = f" ({len(failed) - 1} more failed)" if len(failed) > 1 else ""
        raise UserError(f"{name}: {what.format(index=index)} failed: {_reason(err)}; its log: {job.paths.stderr}{more}")
    return results


def run_shard_tasks(task: Callable[[int, int], Any], num_tasks: int, spec: ExecutorSpec, log_folder,
                    *, name: str) -> list:
    """Run ``task(i, num_tasks)`` for i = 0..num_tasks-1 as ``spec`` says; returns their results in order.

    local: ``num_tasks`` == 1 runs in this process (its exceptions as they are); more run as that
    many processes here (submitit's LocalExecutor), task i on GPU ``i % GPUs`` when there are
    GPUs. slurm: one job array. Waits for every task; a failed one is a UserError naming it and
    its log file.
    """
    if num_tasks < 1:
        raise UserError(f"{name}: the number of shard tasks must be at least 1, got {num_tasks}")
    if spec.kind == "local" and num_tasks == 1:
        return [task(0, 1)]
    calls = [_ShardCall(task, i, num_tasks) for i in range(num_tasks)]
    if spec.kind == "slurm":
        executor = _slurm_executor(log_folder, slurm_parameters(spec, array_tasks=num_tasks, name=name))
        with executor.batch():
            jobs = [executor.submit(call) for call in calls]
        return _wait(jobs, name, f"task {{index}} of {num_tasks}")
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    executor = submitit.LocalExecutor(folder=Path(log_folder))
    jobs = []
    for i, call in enumerate(calls):
        executor.update_parameters(timeout_min=spec.timeout_min, gpus_per_node=1 if gpus else 0,
                                   visible_gpus=(i % gpus,) if gpus else ())
        jobs.append(executor.submit(call))
    return _wait(jobs, name, f"task {{index}} of {num_tasks}")


def run_single_job(task: Callable[[], Any], spec: ExecutorSpec, log_folder, *, name: str,
                   distributed: bool = False) -> Any:
    """Run ``task()`` as ``spec`` says and return its result: local, in this process; slurm, one job
    of ``spec.nodes`` machines (``distributed``; else one machine), one task per machine with
    ``spec.gpus`` GPUs, whose task 0's result is returned."""
    if spec.kind == "local":
        return task()
    if not distributed:
        spec = dataclasses.replace(spec, nodes=1)
    executor = _slurm_executor(log_folder, slurm_parameters(spec, array_tasks=None, name=name))
    return _wait([executor.submit(_JobCall(task))], name, "job")[0]


def slurm_dist_setup(base_port: int = 20000) -> tuple[int, int, str]:
    """``(num_machines, machine_rank, dist_url)`` for detectron2's ``launch`` inside a SLURM job of one
    task per machine: the machines of the job, this one's rank, and ``tcp://<first machine>:<port>``
    with a port taken from the job id (the same on every machine and after a requeue)."""
    try:
        env = submitit.JobEnvironment()
    except RuntimeError:
        raise UserError("slurm_dist_setup runs inside a SLURM job (no SLURM job environment found)") from None
    digits = re.sub(r"\D", "", str(env.job_id)) or "0"
    port = base_port + int(digits) % 20000
    return env.num_nodes, env.node, f"tcp://{env.hostnames[0]}:{port}"
