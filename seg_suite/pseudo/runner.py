"""The one dataset-level driver: every pseudo-label generator runs through :func:`run_job`.

It gives each generator (MaskCut, SAM, motion grouping, clustering feature extraction...)
sharding, a resume journal, per-item failure reports, overlapped loading and a progress
bar, so none of them re-implements these.

Everything a generator needs is importable from here (the job classes live in
:mod:`seg_suite.pseudo.jobs`, the shard spec and file names in :mod:`seg_suite.pseudo.shards`,
input discovery in :mod:`seg_suite.pseudo.inputs`)::

    items = discover_inputs("images/")                       # sorted WorkItem(key, path)
    summary = run_job(MyJob(...), items, "out.json", shard=ShardSpec.resolve(),
                      resume=True, batch_size=4, workers=2)

Writing a job (subclass :class:`Job`, or :class:`CocoMaskJob` for COCO mask files)
------------------------------------------------------------------------------------
``name``           short job name, recorded in the output.
``unit``           progress-bar unit ("img", "video"...).
``heavy_attrs``    attribute names (models, open handles) dropped when the job is pickled
                   into DataLoader workers; build them lazily in ``process``.
``params()``       the resolved parameters as a JSON dict. They are recorded in the output
                   and must match on ``--resume`` and between merged shards. Execution
                   settings that do not change results (device, batch size, workers) stay out.
``from_params(p)`` classmethod rebuilding a cheap job from ``params()``; ``merge`` uses it to
                   call ``finalize`` without loading any model.
``prepare(item)``  runs in DataLoader workers: read, decode, resize. Gets a
                   :class:`~seg_suite.pseudo.inputs.WorkItem`; returns anything picklable.
                   Raise :class:`ItemError` (or ``ImageReadError``) with a one-line reason
                   for a bad item.
``process(batch)`` runs in the main process (device work) on a list of prepared values;
                   returns one JSON-serialisable record per value, or an :class:`ItemError`
                   instance in its place for a value that failed. If it raises on a batch,
                   the runner retries the items one by one, so one bad item fails alone.
``finalize(records, info)``  records (sorted by item key) -> the final output object;
                   must put ``info`` into it (for COCO, ``out["info"]``).
``write_output(path, final)`` / ``read_info(path)``  default: atomic JSON.
``mask_counts(final)``  ``{"images", "masks", "empty"}`` of a final output holding masks (for the
                   summary line); default None.
``write_records(path, records, info)``  the final write from ``records()`` (a fresh iterator over
                   the sorted records each call); default ``write_output(path, finalize(list(...)))``.
``output_folders(items)``  folders ``process`` writes into besides the output's (default none);
                   each is checked for writing before the first item.

Files (``OUT.json`` given as the output; ``<stem>`` is ``OUT``)
---------------------------------------------------------------
``<stem>.journal.jsonl``   append-only journal of the running (shard) run: a header line, then
                           one line per finished item (flushed and fsynced); deleted once the
                           final file is written. A torn last line (a kill mid-write) is ignored.
``<stem>.failures.jsonl``  ``{"key", "path", "reason"}`` per failed item: appended live during
                           the run, rewritten sorted by key at the end.
``<stem>.log.jsonl``       one line of timings per run or resumed run (kept out of the output so that
                           resumed and sharded outputs are byte-identical to an uninterrupted run).
With ``K > 1`` shards, shard ``I`` writes ``<stem>.shard-IIIII-of-KKKKK.json`` (plus its own
journal/failures/log named from that stem), an intermediate file holding the shard's records
and the SHA-256 of its content (:func:`~seg_suite.pseudo.shards.shard_content_digest`);
:func:`merge_outputs` (``seg-suite merge``) joins all K into ``OUT.json``, byte-identical to
an unsharded run with the same ``--batch-size``, and refuses a shard whose content no longer
matches its digest (edited after it was written), since a merged file cannot show which
shard's records were altered.

Every file is created with the mode a plain ``open()`` gives under the process umask. The
output folder (and any folder the job writes into, :meth:`Job.output_folders`) is checked
before the first item; a sidecar file that cannot be written stops the run with one line.

The full sorted key list is cut into fixed chunks of ``batch_size`` consecutive items, the
batches the model sees; sharding deals chunk ``j`` to shard ``j % K``. That is balanced to
within one chunk, deterministic given the list (every shard records its SHA-256, so merge
refuses shards that saw different inputs; a hash per key would survive added files, but a
changed input is refused anyway and small runs would be unbalanced), and it makes every
batch identical in sharded, unsharded and resumed runs with the same batch size, so the
output is byte-identical even for a backbone whose numbers depend slightly on what else is
in its batch (measured: the handcrafted one, ~1e-4). On resume a partly finished chunk is
recomputed whole, and ``--batch-size`` must be the one the run started with.

Failures and restarts
---------------------
A failed item is journaled like a finished one: ``--resume`` does not retry it unless
``retry_failed``. An exception other than ItemError/ImageReadError is recorded as
``unexpected error (Type: message)`` (its traceback printed once per run); ten such in a row
before any success abort the run, since that is a bug or a broken set-up, not bad data. The
:class:`RunSummary` counts the failures; whether a run with failures counts as a failed run is
the caller's decision (the CLI exits with 3 when none succeeded, or more than ``--max-failed``).
Without ``resume`` an existing journal or output is an error; with it, a finished output
is left alone. The journal is locked (``lockf``), so a second process on the same output stops.
SIGINT and SIGTERM (a ``KeyboardInterrupt``, see :mod:`seg_suite.signals`) unwind through
``finally`` blocks: DataLoader workers are shut down explicitly, every finished item stays in
the journal, and ``--resume`` continues.

For other generators
--------------------
* Video jobs: one item = one video or frame folder (build the items yourself, keys relative
  to the input root); the record carries one ``images`` entry per frame, so CocoMaskJob's
  ``finalize`` numbers the frames in key order and then frame order.
* Bulky per-item results (clustering features, flow): have ``process`` write them atomically
  under a folder named after the output (e.g. ``<stem>.parts/<key>.npy``), put the file name
  in the record, and let ``finalize``/``write_output`` assemble them; records stay small.

Memory
------
A finished record lives in the journal only; the runner keeps its byte offset there (and the
failures), so a run or a ``--resume`` replay holds no records, whatever the dataset's size. The
final write reads them back in key order: :meth:`Job.write_records` hands them to ``finalize`` as
one list by default, and COCO jobs (:class:`CocoMaskJob`) stream them into the file instead, so
their memory stays flat. A shard holds its own records while it writes its file; ``merge`` reads
the shard files one at a time, keeping their records in a temporary file beside the output, so it
holds one shard's records at most. ``tools/benchmark_scale.py`` measures all of these.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from seg_suite import __version__
from seg_suite.errors import UserError
from seg_suite.io.files import atomic_write, atomic_write_json, cannot_write, check_writable_dir, json_default
from seg_suite.io.images import ImageReadError
from seg_suite.pseudo.inputs import WorkItem, discover_inputs
from seg_suite.pseudo.jobs import CocoMaskJob, ItemError, Job, default_job_resolver, job_class_path
from seg_suite.pseudo.shards import (
    SHARD_DIGEST_KEY,
    ShardSpec,
    shard_content_digest,
    shard_output_path,
    sidecar_path,
)
from seg_suite.signals import fetching, ignore_stop_signals

__all__ = [
    "CocoMaskJob", "ItemError", "Job", "RunSummary", "ShardSpec", "WorkItem", "default_job_resolver",
    "discover_inputs", "merge_outputs", "run_job", "shard_output_path", "sidecar_path",
]

JOURNAL_FORMAT = 1
SHARD_FORMAT = 2  # 2: the shard file carries the SHA-256 of its content
# Packages whose versions are recorded in every output (read from metadata, not imported).
VERSIONED_PACKAGES = (
    "torch", "torchvision", "numpy", "pillow", "timm", "scipy", "opencv-python-headless",
    "pycocotools", "pydensecrf2", "scikit-learn", "scikit-image", "segment-anything",
)
# Abort (instead of recording failures forever) when this many items in a row hit an
# unexpected exception before anything succeeded: that is a bug or a broken set-up.
MAX_UNEXPECTED_BEFORE_SUCCESS = 10


# ------------------------------------------------------------------------- info
def library_versions() -> dict:
    versions = {"seg_suite": __version__, "python": ".".join(map(str, sys.version_info[:3]))}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def keys_digest(keys: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode("utf-8")).hexdigest()


def build_info(job_name: str, job_class: str, params: dict, versions: dict, num_items: int,
               num_failed: int, digest: str) -> dict:
    """The ``info`` of a final output: identical for unsharded, resumed and merged runs."""
    return {
        "description": f"seg_suite {job_name} pseudo-labels",
        "version": __version__,
        "job": job_name,
        "job_class": job_class,
        "params": params,
        "versions": versions,
        "inputs": {"num_items": num_items, "num_failed": num_failed, "keys_sha256": digest},
    }


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "unknown error"


def _normalise(record: Any) -> Any:
    """JSON round trip, so in-memory records equal the ones a resumed run reads back."""
    return json.loads(json.dumps(record, default=json_default))


@contextlib.contextmanager
def _writing(path: Path):
    """Turn an OSError while writing the sidecar ``path`` into the one-line UserError.

    The journal, live failures and log are opened here directly (appended to, not replaced
    atomically); a full disk or a read-only mount met there is the user's to fix, not a bug.
    """
    try:
        yield
    except OSError as err:
        raise cannot_write(path, err) from None


# ----------------------------------------------------------------------- journal
class _Journal:
    """Append-only JSON-lines journal; one fsync per line so a kill loses at most one line.

    The file stays open and exclusively locked (``lockf``) for the whole run, so a second
    process started on the same output stops with a message instead of interleaving lines.
    """

    def __init__(self, path: Path, header: dict):
        self.path = path
        self.header = header
        # Per finished key: the byte offset of the journal line holding its record (read back by
        # record()), or its failure dict. Records stay on disk, so memory does not grow with them.
        self.entries: dict[str, int | dict] = {}
        self.fh = None

    def acquire(self) -> None:
        with _writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fh = open(self.path, "a+b")  # appends always go to the end, whatever was read
        try:
            import fcntl

            # A POSIX record lock belongs to this process only: DataLoader workers forked later
            # inherit the descriptor but not the lock, so a killed run frees it at once (flock's
            # lock would live on in orphaned workers for seconds).
            fcntl.lockf(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not POSIX: no lock, the rest works
            pass
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            self.close()
            raise UserError(f"another process is running this job right now (it holds {self.path}); "
                            f"wait for it or stop it first") from None

    def load(self) -> bool:
        """Read the journal; False when it holds not even a header (then it is started afresh).

        Read line by line, keeping only each record's offset: memory stays flat in the journal's size.
        """
        self.fh.seek(0)
        header, offset = None, 0
        for line in self.fh:
            if not line.endswith(b"\n"):  # no final newline: the last line was torn by a kill; drop it
                self.fh.truncate(offset)
                break
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                raise UserError(f"journal {self.path} is corrupt (a line is not JSON); delete it to start over") from None
            if header is None:
                header = obj
                self._check_header(header)
            else:
                self._index(obj, offset)
            offset += len(line)
        if header is None:  # new, or killed while the header was being written: nothing was done yet
            self.fh.truncate(0)
            self._write(self.header)
            return False
        return True

    def _check_header(self, header) -> None:
        if not isinstance(header, dict) or header.get("seg_suite_journal") != JOURNAL_FORMAT:
            raise UserError(f"{self.path} is not a seg_suite journal; delete it to start over")
        for name in ("job", "job_class", "params", "shard", "keys_sha256", "num_items", "versions", "batch_size"):
            if header.get(name) != self.header[name]:
                raise UserError(
                    f"journal {self.path} was written by a different run ({name} differs: "
                    f"{header.get(name)!r} then, {self.header[name]!r} now); use the same input and "
                    f"flags to resume, or delete the journal to start over"
                )

    def _index(self, entry, offset: int) -> None:
        """Remember ``entry`` (the journal line at ``offset``); the last entry for a key wins."""
        if not (isinstance(entry, dict) and isinstance(entry.get("key"), str)
                and ("record" in entry or isinstance(entry.get("failure"), dict))):
            raise UserError(f"journal {self.path} is corrupt (an entry lacks key/record); delete it to start over")
        self.entries[entry["key"]] = offset if "record" in entry else entry["failure"]

    def record(self, key: str) -> Any:
        """The record journaled for ``key``, read back from its line."""
        with _writing(self.path):
            self.fh.seek(self.entries[key])
            return json.loads(self.fh.readline())["record"]

    def records(self, keys: Iterable[str]) -> Iterable[Any]:
        """The records of ``keys`` (finished, not failed), in that order, one at a time."""
        return (self.record(key) for key in keys)

    def _write(self, obj: dict) -> None:
        line = (json.dumps(obj, default=json_default) + "\n").encode("utf-8")
        with _writing(self.path):
            self.fh.write(line)
            self.fh.flush()
            os.fsync(self.fh.fileno())

    def add(self, entry: dict) -> None:
        with _writing(self.path):
            offset = self.fh.seek(0, os.SEEK_END)  # reads move the position; appends go to the end
        self._write(entry)
        self._index(entry, offset)

    def remove(self) -> None:
        """Delete the journal (the run is complete), still holding the lock."""
        with _writing(self.path):
            self.path.unlink()
        self.close()

    def close(self) -> None:
        if self.fh is not None:
            fh, self.fh = self.fh, None
            # Every line was flushed when written; an error here (the disk filled while a line was
            # buffered) must not replace the error that is already on its way up.
            with contextlib.suppress(OSError):
                fh.close()


# --------------------------------------------------------------------- loading
class _PreparedItems:
    """Map-style dataset over work items whose __getitem__ runs ``job.prepare`` safely."""

    def __init__(self, job: Job, items: list[WorkItem]):
        self.job = job
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[WorkItem, bool, Any]:
        item = self.items[index]
        if item.error:  # refused when the item was made (a name that leaves its root): never read
            return item, False, _one_line(item.error)
        try:
            return item, True, self.job.prepare(item)
        except (ImageReadError, ItemError) as err:
            return item, False, _one_line(err)
        except Exception as err:  # noqa: BLE001 - one bad item must not stop the run
            return item, False, _one_line(f"unexpected error while reading ({type(err).__name__}: {err})")


def _identity(batch):
    return batch


def _chunks(num: int, size: int) -> list[list[int]]:
    return [list(range(start, min(start + size, num))) for start in range(0, num, size)]


def _process(job: Job, prepared: list[Any], tracebacks: list) -> list[dict | str]:
    """Records (dict) or one-line failure reasons (str), one per prepared value.

    The first unexpected exception of a run also prints its traceback (a likely bug);
    ``tracebacks`` counts them so later ones stay one line in the failures file.
    """

    def run(values):
        results = job.process(values)
        if len(results) != len(values):
            raise RuntimeError(f"{type(job).__name__}.process returned {len(results)} results for {len(values)} items")
        return [_one_line(r) if isinstance(r, Exception) else _normalise(r) for r in results]

    if len(prepared) > 1:
        try:
            return run(prepared)
        except Exception:  # noqa: BLE001 - retry one by one so only the bad item fails
            pass
    out = []
    for value in prepared:
        try:
            out.extend(run([value]))
        except (ImageReadError, ItemError) as err:
            out.append(_one_line(err))
        except Exception as err:  # noqa: BLE001
            if not tracebacks:
                traceback.print_exc(file=sys.stderr)
            tracebacks.append(type(err).__name__)
            out.append(_one_line(f"unexpected error ({type(err).__name__}: {err})"))
    return out


# ------------------------------------------------------------------------- run
@dataclass
class RunSummary:
    """What :func:`run_job` / :func:`merge_outputs` did; ``num_items`` counts this shard's items."""

    output: Path
    num_items: int
    num_failed: int
    num_processed: int  # by this call (a resumed run counts only what it did)
    seconds: float
    skipped: bool = False  # the output was already complete
    failures: Path | None = None
    masks: dict | None = None  # {"images", "masks", "empty"} of the output (Job.mask_counts), when it holds masks


def _remove_stale_temporaries(path: Path) -> None:
    # atomic_write's temporaries are ".<name>.<random>.tmp"; a kill leaves one behind.
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()


def _write_failures(path: Path, failures: list[dict]) -> None:
    with atomic_write(path, "w") as fh:
        for entry in failures:
            fh.write(json.dumps(entry) + "\n")


def _check_finished(job: Job, target: Path, header: dict, sharded: bool) -> int:
    """Refuse to treat ``target`` as the finished result of this run if it is not.

    Returns how many items of that finished run failed (0 when the output does not say), so
    that rerunning a finished run reports the same outcome as the run that wrote it.
    """
    try:
        if sharded:
            with open(target, encoding="utf-8") as fh:
                doc = json.load(fh)
            info = {k: doc.get(k) for k in ("job", "params", "keys_sha256")}
            failures = doc.get("failures")
            num_failed = len(failures) if isinstance(failures, list) else 0
        else:
            info = job.read_info(target) or {}
            inputs = info.get("inputs") if isinstance(info.get("inputs"), dict) else {}
            num_failed = inputs.get("num_failed") if isinstance(inputs.get("num_failed"), int) else 0
            info = {"job": info.get("job"), "params": info.get("params"), "keys_sha256": inputs.get("keys_sha256")}
    except (OSError, ValueError, AttributeError) as err:
        raise UserError(f"{target} exists but cannot be read ({_one_line(err)}); delete it to rerun") from None
    for name, value in info.items():
        if value != header[name]:
            raise UserError(f"{target} exists from a run with a different {name}; delete it or choose another --output")
    return num_failed


def run_job(
    job: Job,
    items: Sequence[WorkItem],
    output: str | os.PathLike,
    *,
    shard: ShardSpec = ShardSpec(),
    resume: bool = False,
    overwrite: bool = False,
    retry_failed: bool = False,
    batch_size: int = 1,
    workers: int = 0,
    progress: bool = True,
) -> RunSummary:
    """Run ``job`` over this shard's part of ``items`` and write ``output`` (or the shard file).

    ``items`` is the FULL input list (all shards); it is sorted by key here. Returns a
    :class:`RunSummary`. See the module docstring for the files written.
    """
    started = time.time()
    if batch_size < 1 or workers < 0:
        raise UserError(f"--batch-size must be >= 1 and --workers >= 0 (got {batch_size}, {workers})")
    items = sorted(items)
    keys = [item.key for item in items]
    if len(set(keys)) != len(keys):
        raise ValueError("work item keys must be unique")
    target = shard_output_path(output, shard)
    journal_path = sidecar_path(target, "journal")
    # Before any model call: an unwritable destination is found in a second, not after the run.
    check_writable_dir(target.parent, "output folder")
    for folder in job.output_folders(items):
        check_writable_dir(folder, f"{job.name} output folder")
    params = _normalise(job.params())
    header = {
        "seg_suite_journal": JOURNAL_FORMAT, "job": job.name, "job_class": job_class_path(job),
        "params": params, "versions": library_versions(), "shard": shard.as_dict(),
        "keys_sha256": keys_digest(keys), "num_items": len(items), "batch_size": batch_size,
    }
    mine = shard.select(items, batch_size)

    if overwrite:
        for path in (journal_path, target):
            with _writing(path), contextlib.suppress(FileNotFoundError):
                path.unlink()
    if journal_path.exists() and not resume:
        raise UserError(f"{journal_path} exists from an earlier run; pass --resume to continue it, "
                        f"or delete it (or pass --overwrite) to start over")
    if not journal_path.exists() and target.exists():
        if not resume:
            raise UserError(f"{target} already exists; delete it, choose another --output, "
                            f"or pass --resume to keep it")
        num_failed = _check_finished(job, target, header, shard.num_shards > 1)
        print(f"{target} is already complete; nothing to do", file=sys.stderr)
        return RunSummary(target, len(mine), num_failed, 0, time.time() - started, skipped=True,
                          failures=sidecar_path(target, "failures"))
    journal = _Journal(journal_path, header)
    journal.acquire()
    try:
        return _run_locked(job, items, mine, target, journal, header, params, shard, retry_failed,
                           batch_size, workers, progress, started)
    finally:
        journal.close()


def _run_locked(job, items, mine, target, journal, header, params, shard, retry_failed, batch_size, workers,
                progress, started) -> RunSummary:
    """The part of :func:`run_job` that runs with the journal open and locked."""
    failures_path = sidecar_path(target, "failures")
    resumed = journal.load()
    if retry_failed:
        journal.entries = {k: e for k, e in journal.entries.items() if isinstance(e, int)}
    _remove_stale_temporaries(target)
    _remove_stale_temporaries(failures_path)
    earlier = [e for e in journal.entries.values() if isinstance(e, dict)]
    _write_failures(failures_path, sorted(earlier, key=lambda f: f["key"]))
    processed = _process_pending(job, mine, journal, failures_path, batch_size, workers, progress)

    failures = [journal.entries[item.key] for item in mine if isinstance(journal.entries[item.key], dict)]
    done = [item.key for item in mine if isinstance(journal.entries[item.key], int)]
    masks = None  # a shard file: the merge counts
    if shard.num_shards > 1:
        doc = {"seg_suite_shard": SHARD_FORMAT,
               **{k: header[k] for k in ("job", "job_class", "params", "versions", "shard", "keys_sha256", "num_items",
                                     "batch_size")},
               "records": [{"key": key, "record": record} for key, record in zip(done, journal.records(done))],
               "failures": failures}
        doc[SHARD_DIGEST_KEY] = shard_content_digest(doc)
        atomic_write_json(target, doc)
    else:
        info = build_info(job.name, header["job_class"], params, header["versions"], len(items),
                          len(failures), header["keys_sha256"])
        masks = job.write_records(target, lambda: journal.records(done), info)
    _write_failures(failures_path, failures)
    seconds = time.time() - started
    log = {
        "job": job.name, "output": str(target), "resumed": resumed, "shard": shard.as_dict(),
        "started_utc": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3), "items_in_shard": len(mine), "processed_this_session": processed,
        "items_per_second": round(processed / seconds, 3) if seconds > 0 else None,
        "num_failed": len(failures), "batch_size": batch_size, "workers": workers, **job.runtime_info(),
    }
    log_path = sidecar_path(target, "log")
    with _writing(log_path), open(log_path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(log) + "\n")
    journal.remove()
    return RunSummary(target, len(mine), len(failures), processed, seconds, failures=failures_path, masks=masks)


def _batches(job: Job, mine: list[WorkItem], chunks: list[list[int]], workers: int):
    """An iterator over the prepared chunks, and the function that stops its worker processes."""
    dataset = _PreparedItems(job, mine)
    if workers == 0 or not chunks:  # the same chunks in this process, without importing torch for light jobs
        return ([dataset[i] for i in chunk] for chunk in chunks), lambda: None
    import torch.utils.data

    loader = torch.utils.data.DataLoader(dataset, batch_sampler=chunks, num_workers=workers, collate_fn=_identity,
                                         worker_init_fn=ignore_stop_signals)
    batches = iter(loader)
    # The iterator's own __del__ would stop the workers only when the garbage collector gets to it,
    # which an exception's traceback can delay; torch has no public method for this.
    return batches, getattr(batches, "_shutdown_workers", lambda: None)


def _process_pending(job, mine, journal, failures_path, batch_size, workers, progress) -> int:
    """Run every chunk that still has unjournaled items; returns how many items were journaled.

    On any exit (done, an error, SIGINT/SIGTERM as KeyboardInterrupt) the DataLoader workers are
    shut down before this returns: they ignore those signals themselves, so the parent stops
    them with the journal holding every finished item and no process left behind.
    """
    from tqdm import tqdm

    chunks = [c for c in _chunks(len(mine), batch_size) if any(mine[i].key not in journal.entries for i in c)]
    failed = sum(isinstance(e, dict) for e in journal.entries.values())
    done = sum(item.key in journal.entries for item in mine)
    with _writing(failures_path):
        live = open(failures_path, "a", encoding="utf-8")
    bar = tqdm(total=len(mine), initial=done, unit=job.unit, desc=job.name, disable=not progress,
               dynamic_ncols=True, file=sys.stderr)
    batches, shutdown = _batches(job, mine, chunks, workers)
    try:
        with bar, live:
            return _consume(job, batches, journal, live, failures_path, bar, failed)
    finally:
        shutdown()


def _consume(job, batches, journal, live, failures_path, bar, failed) -> int:
    """Process and journal every prepared chunk; returns how many items were journaled."""
    processed, successes, unexpected_streak, tracebacks = 0, 0, 0, []
    for chunk in fetching(batches):
        good = [(item, value) for item, ok, value in chunk if ok]
        results = dict(zip((item.key for item, _ in good), _process(job, [v for _, v in good], tracebacks)))
        for item, ok, value in chunk:
            if item.key in journal.entries:  # part of a chunk recomputed after a kill
                continue
            result = results[item.key] if ok else value
            if isinstance(result, str):
                failure = {"key": item.key, "path": item.path, "reason": result}
                journal.add({"key": item.key, "failure": failure})
                failed += 1
                with _writing(failures_path):
                    live.write(json.dumps(failure) + "\n")
                    live.flush()
                unexpected_streak = unexpected_streak + 1 if result.startswith("unexpected") else 0
                if unexpected_streak >= MAX_UNEXPECTED_BEFORE_SUCCESS and successes == 0:
                    raise RuntimeError(f"{unexpected_streak} items in a row failed unexpectedly and none "
                                       f"succeeded; last: {result}")
            else:
                journal.add({"key": item.key, "record": result})
                successes, unexpected_streak = successes + 1, 0
            processed += 1
            bar.update(1)
        bar.set_postfix(failed=failed, refresh=False)
    return processed


# ----------------------------------------------------------------------- merge
def _load_shard(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        raise UserError(f"shard file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise UserError(f"{path} is not a complete shard file ({_one_line(err)}); rerun that shard with --resume") from None
    if isinstance(doc, dict) and isinstance(doc.get("seg_suite_shard"), int) and doc["seg_suite_shard"] < SHARD_FORMAT:
        raise UserError(f"{path} was written by an older seg_suite (shard format {doc['seg_suite_shard']}, without a "
                        f"content digest); rerun that shard")
    if not isinstance(doc, dict) or doc.get("seg_suite_shard") != SHARD_FORMAT:
        raise UserError(f"{path} is not a seg_suite shard file (expected *.shard-IIIII-of-KKKKK.json)")
    try:
        ok = (isinstance(doc["shard"]["num_shards"], int) and isinstance(doc["shard"]["shard_id"], int)
              and isinstance(doc["num_items"], int) and isinstance(doc["job_class"], str)
              and isinstance(doc["batch_size"], int) and doc["batch_size"] >= 1
              and all(isinstance(e["key"], str) and "record" in e for e in doc["records"])
              and all(isinstance(f["key"], str) for f in doc["failures"]))
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise UserError(f"{path} is a damaged shard file (fields missing or of the wrong type); rerun that shard")
    return doc


class _Spool:
    """A temporary JSON-lines file beside the merged output holding every shard's records, so that
    merge loads one shard file at a time and writes the output from disk in key order."""

    def __init__(self, output: Path):
        import tempfile

        with _writing(output):
            fd, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".merge.tmp", dir=output.parent)
        self.path = Path(name)
        self.fh = os.fdopen(fd, "w+b")
        self.offsets: dict[str, int] = {}

    def add(self, key: str, record: Any) -> None:
        self.offsets[key] = self.fh.tell()
        with _writing(self.path):
            self.fh.write((json.dumps(record, default=json_default) + "\n").encode("utf-8"))

    def records(self) -> Iterable[Any]:
        """Every record, in key order."""
        with _writing(self.path):
            self.fh.flush()
        for key in sorted(self.offsets):
            self.fh.seek(self.offsets[key])
            yield json.loads(self.fh.readline())

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.fh.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


def merge_outputs(
    paths: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    overwrite: bool = False,
    resolver: Callable[[str], type[Job]] = default_job_resolver,
) -> RunSummary:
    """Join the K shard files of one run into ``output``, identical to an unsharded run.

    Refuses (without writing anything) missing, duplicate, corrupt, incomplete or
    mismatched shards. Also writes ``<stem>.failures.jsonl`` beside ``output``. Shard files are
    read one at a time; their records wait in a temporary file beside ``output`` (removed at the
    end), so memory holds one shard's records, and the output is written by the job's
    :meth:`~Job.write_records` (streamed for COCO jobs).
    """
    started = time.time()
    output = Path(output)
    if output.exists() and not overwrite:
        raise UserError(f"{output} already exists; delete it, choose another --output or pass --overwrite")
    if not paths:
        raise UserError("no shard files given")
    check_writable_dir(output.parent, "output folder")
    _remove_stale_temporaries(output)  # an interrupted merge's temporary files (spool and output)
    spool = _Spool(output)
    try:
        return _merge_spooled([Path(p) for p in paths], output, resolver, spool, started)
    finally:
        spool.remove()


def _merge_spooled(paths: list[Path], output: Path, resolver, spool: _Spool, started: float) -> RunSummary:
    # One pass over the shard files: keep each one's header, keys, failures and whether its content
    # matches its digest; its records go to the spool. The checks then run in their usual order.
    docs = []
    for path in paths:
        doc = _load_shard(path)
        sealed = doc.get(SHARD_DIGEST_KEY) == shard_content_digest(doc)
        for entry in doc["records"]:
            spool.add(entry["key"], entry["record"])
        doc["keys"] = [e["key"] for e in doc["records"]]
        del doc["records"]
        docs.append((path, doc, sealed))
    first_path, first, _ = docs[0]
    for path, doc, _ in docs[1:]:
        for name in ("job", "job_class", "params", "versions", "keys_sha256", "num_items", "batch_size"):
            if doc.get(name) != first.get(name):
                raise UserError(f"shards do not belong to the same run: {path} and {first_path} differ in {name}")
        if doc["shard"]["num_shards"] != first["shard"]["num_shards"]:
            raise UserError(f"shards do not belong to the same run: {path} and {first_path} differ in the number of shards")
    num_shards, num_items = first["shard"]["num_shards"], first["num_items"]
    seen: dict[int, Path] = {}
    for path, doc, _ in docs:
        sid = doc["shard"]["shard_id"]
        if sid in seen:
            raise UserError(f"shard {sid} given twice: {seen[sid]} and {path}")
        seen[sid] = path
        expected = len(ShardSpec(num_shards, sid).select(range(num_items), first["batch_size"]))
        got = len(doc["keys"]) + len(doc["failures"])
        if got != expected:
            raise UserError(f"{path} is incomplete: {got} of its {expected} items; rerun that shard with --resume")
    missing = sorted(set(range(num_shards)) - set(seen))
    if missing:
        raise UserError(f"missing shard(s) {', '.join(map(str, missing))} of {num_shards}: "
                        f"expected {shard_output_path(output, ShardSpec(num_shards, missing[0]))}; run them first")
    all_keys = sorted([k for _, d, _ in docs for k in d["keys"]] + [f["key"] for _, d, _ in docs for f in d["failures"]])
    if keys_digest(all_keys) != first["keys_sha256"]:
        raise UserError("the shards' items do not add up to the run's input list (a shard file was edited "
                        "or comes from another run); rerun the shards")
    # Last, so that the checks above name what is wrong with a damaged set; this one catches the
    # edits that leave a shard well-formed (a changed mask, score or failure reason).
    for path, _, sealed in docs:
        if not sealed:
            raise UserError(f"shard {path} was modified after it was written (its content no longer matches its "
                            f"{SHARD_DIGEST_KEY}); rerun that shard")
    failures = sorted((f for _, doc, _ in docs for f in doc["failures"]), key=lambda f: f["key"])
    job = resolver(first["job_class"]).from_params(first["params"])
    info = build_info(first["job"], first["job_class"], first["params"], first["versions"], num_items,
                      len(failures), first["keys_sha256"])
    masks = job.write_records(output, spool.records, info)
    failures_path = sidecar_path(output, "failures")
    _write_failures(failures_path, failures)
    return RunSummary(output, num_items, len(failures), 0, time.time() - started, failures=failures_path,
                      masks=masks)
