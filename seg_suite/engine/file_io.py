"""Every file detectron2 writes during a run is replaced atomically, never left half written.

detectron2 and fvcore open their outputs through ``detectron2.utils.file_io.PathManager``:
checkpoints (``Checkpointer.save`` then ``tag_last_checkpoint``), ``config.yaml``
(``default_setup``), evaluator result files. With iopath's native handler, ``open(path, "wb")``
truncates the destination first, so a run killed mid-save leaves a truncated ``model_final.pth``
that the next ``--resume`` trips over.

:func:`install` swaps the PathManager's native handler for :class:`AtomicPathHandler`, whose
truncating write modes (``"w"``, ``"wb"``) return an :class:`AtomicFile`: the data go to a
temporary file in the destination folder, which replaces the destination on ``close()`` (after an
fsync) through :func:`seg_suite.io.files.atomic_write`. An exception inside a ``with`` block, or a
file object dropped without ``close()``, discards the temporary file and leaves the destination as
it was. Appends (``log.txt``, ``metrics.json``) and reads keep iopath's behaviour.
"""

from __future__ import annotations

import os
from typing import Any

from iopath.common.file_io import NativePathHandler

from seg_suite.io.files import atomic_write

_ATOMIC_MODES = {"w", "wb", "wt", "bw", "tw"}


class AtomicFile:
    """A writable file whose content reaches ``path`` only when it is closed without error.

    Attribute access (``write``, ``flush``, ``fileno``, ...) goes to the temporary file, so
    ``torch.save``, ``json.dump`` and ``yaml.dump`` take it as they take a plain file.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "wb"):
        self.name = os.fspath(path)
        self.mode = mode
        self._writer = atomic_write(path, mode)
        self._fh = self._writer.__enter__()
        self._finished = False

    def __getattr__(self, name: str) -> Any:
        fh = self.__dict__.get("_fh")
        if fh is None:  # the constructor failed before the temporary file existed
            raise AttributeError(name)
        return getattr(fh, name)

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._finish(exc_type, exc, tb)
        return False

    def __iter__(self):
        return iter(self._fh)

    @property
    def closed(self) -> bool:
        return self._finished

    def close(self) -> None:
        """Publish the content under the destination name (atomically)."""
        self._finish(None, None, None)

    def discard(self) -> None:
        """Drop what was written; the destination keeps its previous content (or stays absent)."""
        if not self._finished:
            self._finish(RuntimeError, RuntimeError("discarded"), None)

    def _finish(self, exc_type, exc, tb) -> None:
        if self._finished:
            return
        self._finished = True
        if exc_type is None:
            self._writer.__exit__(None, None, None)
            return
        try:
            self._writer.__exit__(exc_type, exc, tb)
        except BaseException as raised:  # the writer re-raises what it was handed; that is expected
            if raised is not exc:
                raise

    def __del__(self):
        # Dropped without close(): something went wrong before the writer finished, so the
        # partial content must not become the destination.
        if not self.__dict__.get("_finished", True):
            self.discard()


class AtomicPathHandler(NativePathHandler):
    """iopath's native (local file) handler, with atomic truncating writes (module docstring)."""

    def _open(self, path: str, mode: str = "r", buffering: int = -1, encoding=None, errors=None, newline=None,
              closefd: bool = True, opener=None, **kwargs: Any):
        if mode in _ATOMIC_MODES and buffering == -1 and encoding is None and errors is None \
                and newline is None and closefd and opener is None:
            self._check_kwargs(kwargs)
            return AtomicFile(self._get_path_with_cwd(path), "wb" if "b" in mode else "w")
        return super()._open(path, mode, buffering=buffering, encoding=encoding, errors=errors, newline=newline,
                             closefd=closefd, opener=opener, **kwargs)


def install() -> None:
    """Make detectron2's PathManager write local files atomically (idempotent).

    iopath's ``register_handler`` replaces the manager's fallback handler (the one for plain
    local paths, ``_native_path_handler``) when given a ``NativePathHandler``.
    """
    from detectron2.utils.file_io import PathManager

    if not isinstance(getattr(PathManager, "_native_path_handler", None), AtomicPathHandler):
        PathManager.register_handler(AtomicPathHandler(), allow_override=True)
