"""Steps of a workflow that mark themselves finished, so that a rerun skips them.

A :class:`Stage` is one step writing into its own folder (a pipeline stage, a self-training
round). When it has finished, its record (what it produced, its numbers) is written to a marker
file in that folder, last and atomically, so a stop at any moment leaves either no marker (the
step runs again and resumes through its own journals and checkpoints) or a complete one (the
step is skipped)::

    stage = Stage(out / "cluster", "cluster", config=params)
    record = stage.done()
    if record is None:
        record = stage.finish(run_cluster(...))

``config``, when given, is recorded in the marker (key ``"config"``) and must match for the step
to count as done: a step whose settings changed runs again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from seg_suite.io.files import atomic_write_json

MARKER = "stage.json"


class Stage:
    """One resumable step: ``folder`` holds its files and its marker ``folder/marker``."""

    def __init__(self, folder, name: str, *, config: Any = None, marker: str = MARKER):
        self.folder = Path(folder)
        self.name = name
        self.config = config
        self.marker = self.folder / marker
        self._started = time.time()

    def done(self) -> dict | None:
        """The record of the finished step, or None when it has to run (no marker, or one written
        with another config)."""
        if not self.marker.is_file():
            return None
        try:
            record = json.loads(self.marker.read_text())
        except (OSError, UnicodeDecodeError, ValueError):  # a damaged marker: the step runs again
            return None
        if not isinstance(record, dict):
            return None
        if self.config is not None and record.get("config") != self.config:
            return None
        return record

    def start(self) -> None:
        """Start the step's clock (:meth:`finish` records the seconds since)."""
        self._started = time.time()

    def finish(self, record: dict, *, timed: bool = True) -> dict:
        """Mark the step finished with ``record`` (plus its name, its config and, when ``timed``, its
        seconds); returns what was written."""
        record = dict(record)
        if timed:
            record.update(stage=self.name, seconds=round(time.time() - self._started, 1))
        if self.config is not None:
            record["config"] = self.config
        atomic_write_json(self.marker, record, indent=1)
        return record
