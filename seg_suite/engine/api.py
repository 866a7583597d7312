"""Training and evaluation as library calls: ``train(cfg, ...)`` and ``evaluate(cfg, ...)``.

    cfg = build_config("configs/synthetic/maskformer2_R50_tiny_cpu.yaml", ["OUTPUT_DIR", "out"], num_gpus=0)
    train(cfg, num_gpus=0)                                  # out/: checkpoints, metrics.json, config.yaml
    results = evaluate(cfg, "out/model_final.pth", num_gpus=0)

Both run what ``tools/train_net.py`` runs (its flags map one to one onto the keyword arguments)
in one process per GPU (:func:`seg_suite.engine.launch.launch_run`), and return the evaluation
results of the config's ``DATASETS.TEST`` as a dict (NaN as None; {} when nothing was
evaluated). ``cfg`` comes from :func:`build_config` with the same ``num_gpus`` and
``num_machines``, which check the device and the batch split.
"""

from __future__ import annotations

import os

from seg_suite.engine.launch import Processes, RunOptions, build_config, launch_run

__all__ = ["build_config", "evaluate", "train"]


def train(cfg, *, resume: bool = False, num_gpus: int = 1, num_machines: int = 1, machine_rank: int = 0,
          dist_url: str = "auto", log_file: str | None = None, config_file: str = "") -> dict:
    """Train the model of ``cfg`` into ``cfg.OUTPUT_DIR``.

    ``resume``: continue after the newest checkpoint there that loads (none: start from
    ``MODEL.WEIGHTS``). ``log_file``: where the log goes instead of the console. ``config_file``:
    the file ``cfg`` came from, copied into the log for the record. Returns the results of the
    final evaluation (``TEST.EXPECTED_RESULTS`` set), else {}.
    """
    run = RunOptions(config_file=config_file, resume=resume, log_file=log_file)
    return launch_run(cfg, run, Processes(num_gpus, num_machines, machine_rank, dist_url))


def evaluate(cfg, weights: str | os.PathLike | None = None, *, resume: bool = False,
             allow_untrained: bool = False, num_gpus: int = 1, num_machines: int = 1, machine_rank: int = 0,
             dist_url: str = "auto", log_file: str | None = None, config_file: str = "",
             results_path: str | os.PathLike | None = None) -> dict:
    """Score the model of ``cfg`` on its ``DATASETS.TEST``; returns the results per dataset.

    ``weights``: the checkpoint (None: ``cfg.MODEL.WEIGHTS``); ``resume``: load the newest
    checkpoint of ``cfg.OUTPUT_DIR`` instead; ``allow_untrained``: without either, score a randomly
    initialised model rather than refuse. ``results_path``: also write the results there (JSON).
    The evaluators' files (predictions) land in ``cfg.OUTPUT_DIR/inference/``.
    """
    if weights is not None:
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.WEIGHTS = str(weights)
        cfg.freeze()
    run = RunOptions(config_file=config_file, eval_only=True, resume=resume, allow_untrained=allow_untrained,
                     log_file=log_file)
    return launch_run(cfg, run, Processes(num_gpus, num_machines, machine_rank, dist_url),
                      None if results_path is None else str(results_path))
