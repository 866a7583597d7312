"""The base of jobs that run a model: one place records the weights' file name and SHA-256.

The record goes into the job's ``params``, so a resumed or merged run can tell that the same
checkpoint produced every shard. Hashing a checkpoint is slow, so it happens once per job.
"""
from __future__ import annotations

from pathlib import Path

from seg_suite.devices import resolve_device
from seg_suite.io.files import file_sha256
from seg_suite.pseudo.jobs import Job


class ModelJob(Job):
    """A job whose output depends on a weights file; subclasses say how to find and build it.

    Subclasses set ``device`` (as given on the command line, so the log shows it as typed) and
    list their built model in ``heavy_attrs``, so a job sent to a worker carries no model.
    """

    device = "cpu"
    _weights_record = None

    def model_device(self):
        """``device`` as a ``torch.device`` that exists here; a one-line UserError otherwise."""
        return resolve_device(self.device)

    def weights_file_record(self, path: Path) -> dict:
        """``{"file": name, "sha256": digest}`` of ``path``, hashed on the first call only."""
        if self._weights_record is None:
            self._weights_record = {"file": Path(path).name, "sha256": file_sha256(path)}
        return self._weights_record

    def restore_weights_record(self, record) -> None:
        """Take the weights' record from recorded params (a merge), so no checkpoint is read again."""
        self._weights_record = record if isinstance(record, dict) else None
