"""One generation step as K shard tasks and the merge, on the executor the recipe names.

A step is a picklable callable ``task(shard=ShardSpec, **run_options)`` that runs one shard of a
runner job (:func:`seg_suite.pseudo.runner.run_job`) and writes the final output or, with K > 1,
its shard file. With one local task it runs here, in this process; otherwise the executor runs the K
tasks (local processes or a SLURM job array, :mod:`seg_suite.workflows.executor`), and
:func:`seg_suite.pseudo.runner.merge_outputs` joins their shard files into the output, identical to
an unsharded run. Every task resumes from its journal, so a rerun, or a task requeued after
pre-emption, continues where it stopped.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class ShardTask:
    """Shard ``i`` of ``k`` of a step: what one executor task runs."""

    step: Callable
    run_kwargs: dict

    def __call__(self, shard_index: int, num_shards: int):
        from seg_suite.pseudo.shards import ShardSpec

        return self.step(shard=ShardSpec(num_shards, shard_index), **self.run_kwargs)


def run_sharded(step: Callable, output: Path, spec: Any, log_folder: Path, *, name: str, run_kwargs: dict):
    """Run ``step`` as ``spec.array_tasks`` shard tasks, then merge into ``output``; returns the
    :class:`~seg_suite.pseudo.runner.RunSummary` of the single run or of the merge."""
    from seg_suite.pseudo.runner import merge_outputs
    from seg_suite.pseudo.shards import ShardSpec, shard_output_path

    tasks = max(1, int(spec.array_tasks))
    if tasks == 1 and spec.kind == "local":
        return step(shard=ShardSpec(), **run_kwargs)
    if output.is_file():  # merged by an earlier run: the tasks would only find their outputs complete
        return merge_summary(output)
    from seg_suite.workflows.executor import run_shard_tasks

    remote = dict(run_kwargs, progress=run_kwargs.get("progress", True) and spec.kind == "local" and tasks == 1)
    run_shard_tasks(ShardTask(step, remote), tasks, spec, log_folder, name=name)
    return merge_outputs([shard_output_path(output, ShardSpec(tasks, i)) for i in range(tasks)], output)


def merge_summary(output: Path):
    """The summary of an output that is already complete (nothing was run)."""
    from seg_suite.pseudo.runner import RunSummary
    from seg_suite.pseudo.shards import sidecar_path

    failures = sidecar_path(output, "failures")
    num_failed = sum(1 for line in failures.read_text().splitlines() if line.strip()) if failures.is_file() else 0
    return RunSummary(output, 0, num_failed, 0, 0.0, skipped=True, failures=failures)
