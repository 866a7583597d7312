"""Training and evaluation on detectron2: trainer, optimizer, evaluator selection, entry point.

Imports detectron2 (and seg_suite.modeling) when used; import the submodules directly:
``seg_suite.engine.launch`` (``build_config``, ``setup``, ``main``, ``run``),
``seg_suite.engine.trainer.Trainer``, ``seg_suite.engine.optimizer.build_optimizer``,
``seg_suite.engine.evaluators.build_evaluator``, ``seg_suite.engine.config`` (safe config loading
and value checks), ``seg_suite.engine.file_io`` (atomic writes of every file a run writes).
"""
