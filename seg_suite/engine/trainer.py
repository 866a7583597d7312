"""The training loop: detectron2's ``DefaultTrainer`` with Mask2Former's data, optimizer and evaluators.

Everything the official ``train_net.py`` customises lives here so that ``tools/train_net.py`` and
later self-training share one code path: the mapper named by ``INPUT.DATASET_MAPPER_NAME``, the
optimizer of :mod:`seg_suite.engine.optimizer`, DeepLab's LR schedulers (``WarmupPolyLR`` for
ADE20K), evaluators from dataset metadata, and seg_suite's checkpointer (official ``.pkl``/``.pth``
files load through it). AMP is used only on CUDA: detectron2's ``AMPTrainer`` asserts CUDA, so
:func:`seg_suite.engine.launch.setup` turns ``SOLVER.AMP.ENABLED`` off on CPU.

Every file the run writes through detectron2 (checkpoints, ``last_checkpoint``, ``config.yaml``,
evaluator outputs) is written atomically (:mod:`seg_suite.engine.file_io`), and ``--resume``
starts from the newest checkpoint that loads (:class:`seg_suite.modeling.MaskFormerCheckpointer`).
A stopped run (SIGTERM, Ctrl-C) shuts its DataLoader workers down before the exception leaves
:meth:`Trainer.train`.
"""

from __future__ import annotations

import inspect
import logging
import weakref

from detectron2.data import build_detection_train_loader
from detectron2.engine import DefaultTrainer, hooks
from detectron2.projects.deeplab import build_lr_scheduler
from detectron2.utils import comm

from seg_suite import signals
from seg_suite.data.mappers import build_train_mapper
from seg_suite.engine import file_io
from seg_suite.engine.evaluators import build_evaluator
from seg_suite.engine.optimizer import build_optimizer
from seg_suite.modeling import MaskFormerCheckpointer


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` configured for MaskFormer-style models (see the module docstring)."""

    def __init__(self, cfg):
        file_io.install()
        super().__init__(cfg)
        # Same arguments as DefaultTrainer's checkpointer; ours also reads official model-zoo files.
        # The periodic-checkpoint hook was built with the old one: point it at ours too.
        self.checkpointer = MaskFormerCheckpointer(self._trainer.model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        for hook in self._hooks:
            if isinstance(hook, hooks.PeriodicCheckpointer):
                hook.checkpointer = self.checkpointer

    def resume_or_load(self, resume=True):
        """``--resume``: continue after the newest checkpoint of OUTPUT_DIR that loads, skipping
        damaged ones (logged); otherwise, or with no checkpoint there, start from MODEL.WEIGHTS."""
        self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resume and self.checkpointer.resumed_from:
            # A checkpoint holds the iteration that had just finished.
            self.start_iter = self.iter + 1
        if self.checkpointer.skipped and self.start_iter >= self.max_iter and comm.is_main_process():
            # Nothing is left to train, so the loop would never rewrite the damaged files; write the
            # final state the run reached (the final checkpoint's content: weights, optimizer, iteration).
            logging.getLogger(__name__).warning("rewriting model_final.pth from %s", self.checkpointer.resumed_from)
            self.checkpointer.save("model_final", iteration=self.iter)

    def train(self):
        try:
            return super().train()
        except KeyboardInterrupt:
            self._stop_data_loader()
            raise

    def _stop_data_loader(self) -> None:
        """Shut the DataLoader workers down now rather than when the loader is collected: the
        exception's traceback keeps the trainer alive until the process is about to exit.
        The train loader iterates through :func:`seg_suite.signals.fetching`, whose generator
        stops its workers when closed."""
        state = vars(self._trainer)
        loader_iter = state.get("_data_loader_iter_obj") or state.get("_data_loader_iter")
        if inspect.isgenerator(loader_iter):
            loader_iter.close()

    @classmethod
    def build_train_loader(cls, cfg):
        loader = signals.bind_loader_workers(build_detection_train_loader(cfg, mapper=build_train_mapper(cfg)))
        return signals.Fetching(loader)  # a stop waits until the batch in transit has arrived

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return signals.bind_loader_workers(super().build_test_loader(cfg, dataset_name))

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)
