"""The training loop: detectron2's ``DefaultTrainer`` with Mask2Former's data, optimizer and evaluators.

Everything the official ``train_net.py`` customises lives here so that ``tools/train_net.py`` and
later self-training share one code path: the mapper named by ``INPUT.DATASET_MAPPER_NAME``, the
optimizer of :mod:`seg_suite.engine.optimizer`, DeepLab's LR schedulers (``WarmupPolyLR`` for
ADE20K), evaluators from dataset metadata, and seg_suite's checkpointer (official ``.pkl``/``.pth``
files load through it). AMP is used only on CUDA: detectron2's ``AMPTrainer`` asserts CUDA, so
:func:`seg_suite.engine.launch.setup` turns ``SOLVER.AMP.ENABLED`` off on CPU.
"""

from __future__ import annotations

import weakref

from detectron2.data import build_detection_train_loader
from detectron2.engine import DefaultTrainer, hooks
from detectron2.projects.deeplab import build_lr_scheduler

from seg_suite.data.mappers import build_train_mapper
from seg_suite.engine.evaluators import build_evaluator
from seg_suite.engine.optimizer import build_optimizer
from seg_suite.modeling import MaskFormerCheckpointer


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` configured for MaskFormer-style models (see the module docstring)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        # Same arguments as DefaultTrainer's checkpointer; ours also reads official model-zoo files.
        # The periodic-checkpoint hook was built with the old one: point it at ours too.
        self.checkpointer = MaskFormerCheckpointer(self._trainer.model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        for hook in self._hooks:
            if isinstance(hook, hooks.PeriodicCheckpointer):
                hook.checkpointer = self.checkpointer

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=build_train_mapper(cfg))

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)
