"""Training and evaluation on detectron2: the typed entry points, launching, trainer, optimizer, evaluators.

Imports detectron2 (and seg_suite.modeling) when used; import the submodules directly:
``seg_suite.engine.api`` (``build_config``, ``train(cfg, ...)``, ``evaluate(cfg, ...)``: what
``tools/train_net.py``, self-training and the pipeline call), ``seg_suite.engine.launch``
(config building, per-process set-up, one process per GPU), ``seg_suite.engine.cpu_launch``
(several CPU processes over gloo), ``seg_suite.engine.cpu_autocast`` (bfloat16 training on the CPU),
``seg_suite.engine.trainer.Trainer``,
``seg_suite.engine.optimizer.build_optimizer``, ``seg_suite.engine.evaluators.build_evaluator``,
``seg_suite.engine.file_io`` (atomic writes of every file a run writes). The config keys live in
:mod:`seg_suite.config`.
"""
