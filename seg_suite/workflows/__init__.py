"""Workflows: a published method run end to end from a recipe file (recipes, stages, resume).

- :mod:`~seg_suite.workflows.recipe` / :mod:`~seg_suite.workflows.recipe_schema`: recipe files;
- :mod:`~seg_suite.workflows.pipeline`: the whole unsupervised pipeline on the synthetic set;
- :mod:`~seg_suite.workflows.self_training`: CutLER's multi-round self-training;
- :mod:`~seg_suite.workflows.predict`: a trained model over a folder of images, through the runner;
- :mod:`~seg_suite.workflows.executor`: where stages run (this process, local processes, SLURM via submitit);
- :mod:`~seg_suite.workflows.stages`: the one marker that lets a stage or round be skipped once done.
"""
