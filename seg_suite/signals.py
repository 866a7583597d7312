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

While a batch is being received from a DataLoader worker (:func:`fetching`), a first signal is
held back until the batch has arrived, then raised; a second one is raised at once.

torch's DataLoader worker loop installs its own SIGTERM handler after the fork (it dies on a
SIGTERM from anyone but its parent), so every DataLoader also needs :func:`ignore_stop_signals`
as its ``worker_init_fn``; :func:`bind_loader_workers` adds it to loaders built elsewhere
(detectron2's), keeping their own ``worker_init_fn``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import inspect
import os
import signal
import sys
import threading

from seg_suite.errors import Terminated

__all__ = ["Fetching", "Terminated", "bind_loader_workers", "exit_code", "fetching", "ignore_stop_signals", "install"]

_PR_SET_PDEATHSIG = 1
_installed = False
_forking_pid = 0  # the pid of the process that is forking, recorded just before fork()


_pending: KeyboardInterrupt | None = None  # a stop held back by fetching(), raised once the item is in
_holding = 0  # how many fetching() calls are inside next() right now


def _stop(signum, frame):  # noqa: ARG001 - signal handler signature
    global _pending
    err = Terminated(f"received signal {signum}") if signum == signal.SIGTERM else KeyboardInterrupt()
    if _holding and _pending is None:  # the first signal waits for the item in transit; a second one does not
        _pending = err
        return
    raise err


def fetching(iterable):
    """Iterate ``iterable`` (a DataLoader) with SIGTERM/SIGINT held back while each item is received.

    Stopping in the middle of receiving a batch from a DataLoader worker breaks the hand-over of
    its shared memory, and the worker prints a traceback from a background thread. The stop is
    raised right after the item arrives instead (a second signal stops at once). When iteration
    ends for any reason, the loader's worker processes are shut down before this returns.
    """
    global _holding, _pending
    it = iter(iterable)
    try:
        while True:
            _holding += 1
            try:
                item = next(it)
            except StopIteration:
                return
            finally:
                _holding -= 1
            if _pending is not None and not _holding:
                err, _pending = _pending, None
                raise err
            yield item
    finally:
        if callable(getattr(it, "_shutdown_workers", None)):
            it._shutdown_workers()  # a torch DataLoader iterator: torch has no public way
        elif inspect.isgenerator(it):
            it.close()  # e.g. detectron2's aspect-ratio grouping: drops the DataLoader iterator it holds


class Fetching:
    """An iterable whose iterators are :func:`fetching` ones (for loaders handed to other code)."""

    def __init__(self, iterable):
        self.iterable = iterable

    def __iter__(self):
        return fetching(self.iterable)


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
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
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
