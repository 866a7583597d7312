"""The training loop: detectron2's ``DefaultTrainer`` with Mask2Former's data, optimizer and evaluators.

Everything the official ``train_net.py`` customises lives here so that ``tools/train_net.py`` and
later self-training share one code path: the mapper named by ``INPUT.DATASET_MAPPER_NAME``, the
optimizer of :mod:`seg_suite.engine.optimizer`, DeepLab's LR schedulers (``WarmupPolyLR`` for
ADE20K), evaluators from dataset metadata, and seg_suite's checkpointer (official ``.pkl``/``.pth``
files load through it).

Devices. Several processes wrap the model in DistributedDataParallel on its own device: the
process's GPU, or the CPU for CPU processes (:mod:`seg_suite.engine.cpu_launch`), where detectron2's
``create_ddp_model`` would name a GPU. ``SOLVER.AMP.ENABLED`` trains with detectron2's
``AMPTrainer`` on CUDA (float16 and a gradient scaler) and with :class:`CPUAutocastTrainer` on the
CPU (bfloat16, see there); :func:`seg_suite.engine.launch.build_config` decides when the CPU may.

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
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, create_ddp_model
from detectron2.projects.deeplab import build_lr_scheduler
from detectron2.utils import comm

from seg_suite import signals
from seg_suite.data.mappers import build_train_mapper
from seg_suite.engine import file_io
from seg_suite.engine.cpu_autocast import CPUAutocastTrainer
from seg_suite.engine.evaluators import build_evaluator
from seg_suite.engine.optimizer import build_optimizer
from seg_suite.modeling import MaskFormerCheckpointer


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` configured for MaskFormer-style models (see the module docstring)."""

    def __init__(self, cfg):
        # DefaultTrainer.__init__'s steps in its order, with the model wrapped for its device, the
        # inner loop chosen for it, and seg_suite's checkpointer (it also reads official model-zoo files).
        file_io.install()
        TrainerBase.__init__(self)
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        on_cpu = cfg.MODEL.DEVICE == "cpu"
        model = create_ddp_model(model, broadcast_buffers=False,
                                 device_ids=None if on_cpu else [comm.get_local_rank()])
        loop = SimpleTrainer
        if cfg.SOLVER.AMP.ENABLED:
            loop = CPUAutocastTrainer if on_cpu else AMPTrainer
        self._trainer = loop(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = MaskFormerCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

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
