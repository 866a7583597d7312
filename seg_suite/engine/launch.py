"""The owner of training processes: the checked config, each process's set-up, and launching.

:func:`build_config` turns a config file and ``KEY VALUE`` overrides into a frozen, checked
config; :func:`launch_run` runs training or evaluation on it in one process per GPU
(detectron2's ``launch``, torch.distributed over NCCL) or, with ``MODEL.DEVICE cpu``, in
``--num-gpus`` CPU processes over gloo (:func:`seg_suite.engine.cpu_launch.launch_cpu`), each
process set up by :func:`prepare`. The typed
entry points over these are :func:`seg_suite.engine.api.train` and
:func:`seg_suite.engine.api.evaluate`.

Devices. ``num_gpus 0`` runs in this process on the CPU. ``MODEL.DEVICE`` left at detectron2's
default (``cuda``) follows the machine: the CPU with ``num_gpus 0`` or without CUDA (logged). A
``MODEL.DEVICE cuda`` written in the config or the overrides is a request: it is refused without
CUDA (:func:`seg_suite.devices.resolve_device`, the rule of every command), and refused with
``num_gpus 0``, which contradicts it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass

import torch

# fvcore.nn (focal losses) and detectron2.modeling.box_regression compile functions with
# torch.jit.script when imported, an API torch deprecates: FutureWarnings on every start that the
# user can do nothing about. Exactly that warning is silenced, and only while those two import.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning,
                            module=r"torch\.jit\._script")
    import detectron2.modeling.box_regression  # noqa: F401
    import fvcore.nn  # noqa: F401

from detectron2.config import get_cfg
from detectron2.engine import default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import seg_suite.modeling  # noqa: F401  (registers the MaskFormer components)
from seg_suite import signals
from seg_suite.config import (
    add_seg_suite_config,
    add_training_config,
    check_config,
    merge_config_file,
    merge_overrides,
)
from seg_suite.data.datasets import register_from_cfg, register_synthetic
from seg_suite.devices import parse_device, resolve_device
from seg_suite.engine import file_io
from seg_suite.engine.cpu_autocast import check_cpu_bf16
from seg_suite.engine.cpu_launch import launch_cpu
from seg_suite.engine.trainer import Trainer
from seg_suite.errors import UserError
from seg_suite.io.files import atomic_write_json, check_writable_dir
from seg_suite.io.safe_yaml import load_yaml
from seg_suite.modeling import MaskFormerCheckpointer
from seg_suite.modeling.checkpoint import resume_candidates

logger = logging.getLogger("seg_suite")


def _resolve_device(cfg, explicit: bool, num_gpus: int | None) -> None:
    """Apply the device rules of the module docstring to ``cfg.MODEL.DEVICE`` (in place)."""
    device = str(cfg.MODEL.DEVICE)
    if parse_device(device, "MODEL.DEVICE").type == "cpu":
        return
    if not explicit:
        if num_gpus == 0 or not torch.cuda.is_available():
            logger.warning("running on CPU (MODEL.DEVICE was %s; no GPU requested or available)", device)
            cfg.MODEL.DEVICE = "cpu"
        return
    if num_gpus == 0:
        raise UserError(f"--num-gpus 0 means training on the CPU, but MODEL.DEVICE is '{device}'; drop "
                        f"MODEL.DEVICE (or set it to cpu) to use the CPU, or give --num-gpus N to use N GPUs")
    resolve_device(device, "MODEL.DEVICE")  # the rule of every seg-suite command
    if num_gpus is not None and num_gpus > torch.cuda.device_count():
        raise UserError(f"--num-gpus {num_gpus} requested but this machine has {torch.cuda.device_count()} "
                        f"CUDA device(s)")


def _written(mapping: dict, opts: list, *key: str) -> bool:
    """Whether the config ``mapping`` or the overrides ``opts`` set ``key``."""
    node = mapping
    for part in key:
        if not isinstance(node, dict) or part not in node:
            return ".".join(key) in opts[0::2]
        node = node[part]
    return True


def _cpu_amp(cfg, requested: bool) -> None:
    """``SOLVER.AMP.ENABLED`` on the CPU (in place): bfloat16 autocast when the config file or the
    overrides ask for it (refused in one line on a CPU without bfloat16 units); off when it comes
    from a ``_BASE_`` file, since the official schedules enable float16 AMP for their GPUs."""
    if requested:
        check_cpu_bf16()
        logger.info("mixed precision on the CPU: bfloat16 autocast (SOLVER.AMP.ENABLED)")
        return
    logger.info("mixed precision (SOLVER.AMP.ENABLED, from a _BASE_ config) is for the GPU: off on the CPU; set "
                "SOLVER.AMP.ENABLED True in the config file or the overrides for bfloat16 autocast on the CPU")
    cfg.SOLVER.AMP.ENABLED = False


def build_config(config_file: str = "", opts: list | None = None, num_gpus: int | None = None,
                 num_machines: int = 1):
    """The frozen, checked config: detectron2 defaults + seg_suite keys + ``config_file`` + ``opts``.

    The file and its ``_BASE_`` chain are read as data only (a YAML Python tag is refused);
    unknown keys, values of the wrong type and values that cannot train
    (:data:`seg_suite.config.VALUE_RULES`) are one-line UserErrors. Device rules: see the
    module docstring. ``SOLVER.AMP.ENABLED`` on the CPU: bfloat16 autocast only when the config
    file or ``opts`` set it, off when it comes from a ``_BASE_`` file (:func:`_cpu_amp`).
    ``num_gpus`` and ``num_machines`` (None: one process) check that the batch splits evenly.
    """
    cfg = get_cfg()
    add_seg_suite_config(cfg)
    add_training_config(cfg)
    mapping = merge_config_file(cfg, config_file) if config_file else {}
    opts = [str(x) for x in (opts or [])]
    merge_overrides(cfg, opts)
    _resolve_device(cfg, _written(mapping, opts, "MODEL", "DEVICE"), num_gpus)
    if cfg.MODEL.DEVICE == "cpu" and cfg.SOLVER.AMP.ENABLED:
        own = load_yaml(config_file) if config_file else {}  # the file's own keys, not its _BASE_'s
        _cpu_amp(cfg, _written(own if isinstance(own, dict) else {}, opts, "SOLVER", "AMP", "ENABLED"))
    check_config(cfg, max(1, (num_gpus or 0) * max(1, num_machines)))
    cfg.freeze()
    return cfg


def register_datasets(cfg) -> None:
    """Register the datasets a config names beyond the built-in ones (pseudo-label files, synthetic root)."""
    if cfg.DATASETS.SYNTHETIC_ROOT:
        register_synthetic(cfg.DATASETS.SYNTHETIC_ROOT)
    register_from_cfg(cfg)


def _check_weights_for_eval(cfg, args) -> None:
    if cfg.MODEL.WEIGHTS or getattr(args, "allow_untrained", False):
        return
    if getattr(args, "resume", False) and resume_candidates(cfg.OUTPUT_DIR):
        return
    raise UserError("--eval-only needs trained weights: set MODEL.WEIGHTS path/to/model_final.pth (or pass --resume "
                    "with the run's OUTPUT_DIR); --allow-untrained scores a randomly initialised model instead")


# The loggers a training run writes to: detectron2's, fvcore's (checkpointer) and ours.
TRAINING_LOGGERS = ("detectron2", "fvcore", "seg_suite")
_LOG_FORMAT = logging.Formatter("[%(asctime)s] %(name)s %(levelname)s: %(message)s", datefmt="%m/%d %H:%M:%S")


class _ConsoleHandler(logging.StreamHandler):
    """Writes each record to ``sys.stdout`` as it is when the record is emitted.

    A process that trains more than once (self-training rounds, the pipeline, a test session)
    may have replaced ``sys.stdout`` since the handler was made; holding the stream of that moment
    would write to a closed or stale one.
    """

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _value):  # StreamHandler.__init__ assigns one; the current sys.stdout always wins
        pass


class _RunFileHandler(logging.FileHandler):
    """A log file that seg_suite opened (and so closes when the handlers are replaced)."""


def release_log_handlers() -> None:
    """Detach every handler from the training loggers, closing the log files seg_suite opened."""
    for name in TRAINING_LOGGERS:
        log = logging.getLogger(name)
        for handler in list(log.handlers):
            log.removeHandler(handler)
            if isinstance(handler, _RunFileHandler):
                handler.close()


def install_log_handlers(output_dir: str, rank: int = 0, log_file: str | None = None) -> None:
    """The training loggers' handlers for one run, replacing any set up before in this process.

    Every rank appends to ``OUTPUT_DIR/log.txt`` (``log.txt.rankN`` beyond rank 0). Rank 0 also
    writes to the console, or, when ``log_file`` is given, appends there instead, so that a command
    that trains as one of its steps keeps its terminal for its own lines. Calling it again (another
    round, another run) leaves exactly one set of handlers.
    """
    release_log_handlers()
    targets: list[logging.Handler] = []
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        name = os.path.join(output_dir, "log.txt") + (f".rank{rank}" if rank else "")
        targets.append(_RunFileHandler(name, encoding="utf-8"))
    if rank == 0:
        if log_file:
            os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
            targets.append(_RunFileHandler(log_file, encoding="utf-8"))
        else:
            targets.append(_ConsoleHandler())
    for handler in targets:
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(_LOG_FORMAT)
    for name in TRAINING_LOGGERS:
        log = logging.getLogger(name)
        log.setLevel(logging.DEBUG)
        log.propagate = False
        for handler in targets:
            log.addHandler(handler)


def _setup_logging(cfg, args) -> None:
    rank = comm.get_rank()
    # default_setup calls detectron2's setup_logger, which adds a console and a file handler per
    # new argument set (it is lru_cached on its arguments). Making those exact calls first puts
    # them in the cache, so default_setup adds nothing; their handlers are then replaced by ours.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=rank, name="fvcore")
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=rank)
    install_log_handlers(cfg.OUTPUT_DIR, rank, getattr(args, "log_file", None))


@dataclass(frozen=True)
class RunOptions:
    """How one training or evaluation run starts, besides its config (logged by detectron2's
    ``default_setup`` as the run's arguments).

    ``config_file``: the file the config came from, whose text goes into the log ("" for none);
    ``eval_only``: score the model instead of training it; ``resume``: continue after the newest
    checkpoint in OUTPUT_DIR that loads (with ``eval_only``: load it); ``allow_untrained``: with
    ``eval_only`` and no weights, score a randomly initialised model; ``log_file``: where rank 0
    logs instead of the console (see :func:`install_log_handlers`).
    """

    config_file: str = ""
    eval_only: bool = False
    resume: bool = False
    allow_untrained: bool = False
    log_file: str | None = None


def prepare(cfg, run) -> None:
    """Checks + logging + dataset registration for one process (detectron2's ``default_setup``).

    Everything that can be refused is checked before detectron2 writes anything: the weights of
    ``eval_only`` and a writable OUTPUT_DIR. ``run``: a :class:`RunOptions` (or command-line
    arguments with the same names); its ``log_file``, when set, takes the console's place.
    """
    if getattr(run, "eval_only", False):
        _check_weights_for_eval(cfg, run)
    if comm.is_main_process():
        check_writable_dir(cfg.OUTPUT_DIR or ".", "output folder (OUTPUT_DIR)")
    file_io.install()
    _setup_logging(cfg, run)
    default_setup(cfg, run)
    register_datasets(cfg)


def setup(args):
    """The config of command-line ``args`` (:func:`build_config`), prepared for this process (:func:`prepare`)."""
    cfg = build_config(args.config_file, args.opts, args.num_gpus, getattr(args, "num_machines", 1))
    prepare(cfg, args)
    return cfg


def execute(cfg, run: RunOptions) -> dict:
    """One process's part of a run: train (``run.resume`` continues after the newest checkpoint in
    OUTPUT_DIR that loads) or only evaluate; returns the evaluation results ({} without any)."""
    if comm.get_world_size() > 1:
        # A process started for one GPU (or one CPU share): bind its DataLoader workers to it too.
        signals.install()
    prepare(cfg, run)
    if run.eval_only:
        model = Trainer.build_model(cfg)
        MaskFormerCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=run.resume)
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return finite_results(res)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=run.resume)
    return finite_results(trainer.train())


def finite_results(results) -> dict:
    """``results`` ({} for None) with NaN (e.g. AP of an absent size range) replaced by None, so
    that files of them are strict JSON."""
    return _finite(dict(results or {}))


def _finite(obj):
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def _execute_and_record(cfg, run: RunOptions, results_path: str | None) -> None:
    results = execute(cfg, run)
    if results_path and comm.is_main_process():
        atomic_write_json(results_path, results, indent=1)


@dataclass(frozen=True)
class Processes:
    """How many processes run: GPUs per machine (0: this process, on the CPU; with
    ``MODEL.DEVICE cpu``, that many CPU processes), machines, this machine's rank and the
    torch.distributed URL ("auto": a free local port)."""

    num_gpus: int = 1
    num_machines: int = 1
    machine_rank: int = 0
    dist_url: str = "auto"


def launch_run(cfg, run: RunOptions, processes: Processes = Processes(), results_path=None) -> dict:
    """Run :func:`execute` in one process per GPU (detectron2's ``launch``), or per ``num_gpus``
    on the CPU (:func:`~seg_suite.engine.cpu_launch.launch_cpu`); returns rank 0's results.

    ``results_path``: also write them there (strict JSON). Several processes hand their results
    back through that file (a temporary one when none is given).
    """
    world = max(1, processes.num_gpus) * processes.num_machines
    if world == 1 and results_path is None:
        return execute(cfg, run)
    with tempfile.TemporaryDirectory(prefix="seg_suite_results_") as tmp:
        path = str(results_path or os.path.join(tmp, "results.json"))
        start = launch_cpu if cfg.MODEL.DEVICE == "cpu" else launch
        start(_execute_and_record, processes.num_gpus, num_machines=processes.num_machines,
               machine_rank=processes.machine_rank, dist_url=processes.dist_url, args=(cfg, run, path))
        if processes.machine_rank != 0:
            return {}
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
