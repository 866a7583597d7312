"""How a seg_suite process stops: SIGTERM and SIGINT end it cleanly, and its children die with it.

Batch schedulers stop jobs with SIGTERM (SLURM on pre-emption and at the time limit), people
with Ctrl-C. :func:`install` makes SIGTERM raise :class:`~seg_suite.errors.Terminated` (a
KeyboardInterrupt) in the main thread, so both unwind through the same ``finally`` blocks: the
runner's journal is closed with every finished item on disk, DataLoader workers are shut down,
and the command exits with 143 (SIGTERM) or 130 (SIGINT). ``--resume`` then continues.

Children that ``fork`` from a seg_suite process (DataLoader workers, in every loader: the
runner's, detectron2's, the motion trainer's) are bound to it:

- they ask the kernel for SIGKILL when their parent dies (``PR_SET_PDEATHSIG``, Linux), so a
  SIGKILL of the main process leaves no orphan holding hundreds of MB;
- they ignore SIGTERM and SIGINT, which a scheduler or a terminal sends to the whole process
  group: the parent decides when they stop, so the parent sees its own signal, not a
  "worker killed" error.

torch's DataLoader worker loop installs its own SIGTERM handler after the fork (it dies on a
SIGTERM from anyone but its parent), so every DataLoader also needs :func:`ignore_stop_signals`
as its ``worker_init_fn``; :func:`bind_loader_workers` adds it to loaders built elsewhere
(detectron2's), keeping their own ``worker_init_fn``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading

from seg_suite.errors import Terminated

__all__ = ["Terminated", "bind_loader_workers", "exit_code", "ignore_stop_signals", "install"]

_PR_SET_PDEATHSIG = 1
_installed = False
_forking_pid = 0  # the pid of the process that is forking, recorded just before fork()


def _raise_terminated(signum, frame):  # noqa: ARG001 - signal handler signature
    raise Terminated(f"received signal {signum}")


def _before_fork() -> None:
    global _forking_pid
    _forking_pid = os.getpid()


def _bind_child_to_parent() -> None:
    """In a freshly forked child: die with the parent, leave SIGTERM/SIGINT to it."""
    parent_pid = _forking_pid
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except OSError:  # no libc to call: the DataLoader's own watchdog remains
            return
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)


def install() -> None:
    """Install the handlers of the module docstring in this (main) process; idempotent."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    os.register_at_fork(before=_before_fork, after_in_child=_bind_child_to_parent)
    _installed = True


def exit_code(err: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 143 for SIGTERM."""
    from seg_suite.errors import EXIT_SIGINT, EXIT_SIGTERM

    return EXIT_SIGTERM if isinstance(err, Terminated) else EXIT_SIGINT


def ignore_stop_signals(worker_id: int | None = None) -> None:  # noqa: ARG001 - worker_init_fn signature
    """A DataLoader ``worker_init_fn``: this worker leaves SIGTERM and SIGINT to its parent."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _IgnoreStopSignalsThen:
    """``worker_init_fn`` that ignores the stop signals, then runs the loader's own one (picklable)."""

    def __init__(self, then):
        self.then = then

    def __call__(self, worker_id: int) -> None:
        ignore_stop_signals(worker_id)
        if self.then is not None:
            self.then(worker_id)


def bind_loader_workers(loader):
    """Give every torch DataLoader inside ``loader`` the stop-signal rule of the module docstring.

    Follows ``.dataset`` through wrappers such as detectron2's ``AspectRatioGroupedDataset`` and
    ``MapDataset``; returns ``loader``. A DataLoader's ``worker_init_fn`` may be set after it is built
    and is read when iteration starts.
    """
    import torch.utils.data

    obj, seen = loader, set()
    while obj is not None and id(obj) not in seen:
        seen.add(id(obj))
        if isinstance(obj, torch.utils.data.DataLoader) and not isinstance(obj.worker_init_fn, _IgnoreStopSignalsThen):
            obj.worker_init_fn = _IgnoreStopSignalsThen(obj.worker_init_fn)
        obj = getattr(obj, "dataset", None)
    return loader
