"""One detectron2 training run as a picklable call, so that an executor can run it here or as a
SLURM job: ``TrainingJob(config_file, opts, num_gpus, log_file)()``.

On SLURM with several nodes, each node's task joins the same run through detectron2's ``launch``
(machine rank and rendezvous address from :func:`seg_suite.workflows.executor.slurm_dist_setup`).
Training always resumes: a fresh folder starts from ``MODEL.WEIGHTS``, an interrupted or requeued one
continues after its newest checkpoint.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class TrainingJob:
    config_file: str
    opts: list
    num_gpus: int
    log_file: str | None = None
    distributed: bool = False  # a SLURM job: join the machines of the job through detectron2's launch

    def config(self, num_machines: int = 1):
        from seg_suite.engine.api import build_config

        return build_config(self.config_file, list(self.opts), self.num_gpus, num_machines)

    def check(self) -> None:
        """Build the config now: a bad one is refused before anything runs."""
        self.config()

    def __call__(self) -> dict:
        from seg_suite.engine.api import train

        machines, rank, url = 1, 0, "auto"
        if self.distributed:
            from seg_suite.workflows.executor import slurm_dist_setup

            machines, rank, url = slurm_dist_setup()
        return train(self.config(machines), resume=True, num_gpus=self.num_gpus, num_machines=machines,
                     machine_rank=rank, dist_url=url, log_file=self.log_file, config_file=self.config_file)
