"""Entry point logic of ``tools/train_net.py``: config set-up, training, evaluation, launching.

detectron2 conventions (``default_argument_parser``): ``--config-file``, ``--num-gpus``,
``--num-machines``, ``--machine-rank``, ``--dist-url``, ``--resume``, ``--eval-only`` and
trailing ``KEY VALUE`` overrides; multi-GPU / multi-node runs go through detectron2's ``launch``
(torch.distributed). ``--num-gpus 0`` runs in this process on the CPU.
"""

from __future__ import annotations

import logging
import os
import sys

import torch
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import seg_suite.modeling  # noqa: F401  (registers the MaskFormer components)
from seg_suite.config import add_seg_suite_config
from seg_suite.data.datasets import register_from_cfg, register_synthetic
from seg_suite.engine.config import add_training_config
from seg_suite.engine.trainer import Trainer
from seg_suite.errors import UserError
from seg_suite.modeling import MaskFormerCheckpointer

logger = logging.getLogger("seg_suite")


def build_config(config_file: str = "", opts: list | None = None, num_gpus: int | None = None):
    """The frozen config: detectron2 defaults + seg_suite keys + ``config_file`` + ``opts``.

    Device rules: ``--num-gpus 0`` means CPU; without CUDA the device falls back to CPU (logged).
    AMP is forced off on CPU (detectron2's AMPTrainer asserts CUDA).
    """
    cfg = get_cfg()
    add_seg_suite_config(cfg)
    add_training_config(cfg)
    if config_file:
        if not os.path.isfile(config_file):
            raise UserError(f"config file not found: {config_file}")
        try:
            cfg.merge_from_file(config_file)
        except (KeyError, AssertionError, ValueError) as err:
            raise UserError(f"bad config file {config_file}: {err}") from None
    try:
        cfg.merge_from_list(list(opts or []))
    except (KeyError, AssertionError, ValueError) as err:
        raise UserError(f"bad config override: {err}") from None
    if num_gpus == 0 or (cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available()):
        if cfg.MODEL.DEVICE != "cpu":
            logger.warning("running on CPU (MODEL.DEVICE was %s; no GPU requested or available)", cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"
    if cfg.MODEL.DEVICE == "cpu" and cfg.SOLVER.AMP.ENABLED:
        logger.info("mixed precision (SOLVER.AMP.ENABLED) is CUDA-only: turned off on CPU")
        cfg.SOLVER.AMP.ENABLED = False
    cfg.freeze()
    return cfg


def register_datasets(cfg) -> None:
    """Register the datasets a config names beyond the built-in ones (pseudo-label files, synthetic root)."""
    if cfg.DATASETS.SYNTHETIC_ROOT:
        register_synthetic(cfg.DATASETS.SYNTHETIC_ROOT)
    register_from_cfg(cfg)


def setup(args):
    """Config + logging + dataset registration for one process (detectron2's ``default_setup``)."""
    cfg = build_config(args.config_file, args.opts, args.num_gpus)
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="seg_suite")
    register_datasets(cfg)
    return cfg


def main(args):
    """Train (``--resume`` continues from the last checkpoint in OUTPUT_DIR) or only evaluate."""
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        MaskFormerCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def parse_args(argv: list[str] | None = None):
    parser = default_argument_parser(
        epilog="Defaults of every config key: seg_suite/config.py (the official Mask2Former YAML values) and "
               "seg_suite/engine/config.py; configs/ holds the official schedules. Example:\n"
               "  tools/train_net.py --config-file configs/synthetic/maskformer2_R50_tiny_cpu.yaml --num-gpus 0"
    )
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and train or evaluate; user mistakes (bad config, missing weights or data
    files) become one ``error:`` line and exit code 2."""
    args = parse_args(argv)
    try:
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:  # e.g. a dataset JSON that detectron2's own loaders open
        print(f"error: file not found: {err.filename or err} (see datasets/README.md)", file=sys.stderr)
        return 2
    return 0
