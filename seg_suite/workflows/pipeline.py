"""The whole unsupervised pipeline on the synthetic set: the ``u2seg`` recipe's ``smoke`` preset.

    summary = run_unsupervised_pipeline("out/pipeline")   # or: seg-suite pipeline --output out/pipeline
                                                           # or: seg-suite run u2seg --preset smoke --output ...

There is one code path: this is :func:`seg_suite.workflows.run.run_recipe` on
``configs/recipes/u2seg.yaml`` with ``--preset smoke``, its sizes set from the arguments. The stages
(MaskCut with the weight-free ``handcrafted`` backbone -> k-means of the masks into K thing clusters ->
S stuff clusters -> U2Seg's panoptic merge -> Mask2Former training with the tiny CPU config ->
prediction and the unsupervised evaluation, the cluster -> class mapping fitted on the train split and
scored on val) are described in :mod:`seg_suite.workflows.recipe_stages`.
"""

from __future__ import annotations

from pathlib import Path

from seg_suite.errors import UserError
from seg_suite.workflows.recipe_schema import DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "synthetic" / "maskformer2_R50_tiny_cpu_panoptic.yaml"
# K: twice the 4 true thing categories. Over-clustering is U2Seg's practice (300 clusters for COCO's 80
# classes); measured on the pseudo-masks of the default run (32 train images, pseudo-label PQ with the
# mapping fitted on the same images): K=4 gives PQ_th 25.8 (two classes never separated), K=6 64.4 or
# 42.0 depending on the k-means seed, K=8 61.3 and 61.2 (seeds 0, 1).
DEFAULT_NUM_THINGS = 8
# S: the 2 true stuff categories + 1. The stuff k-means runs on ALL patches, so the objects take a
# cluster of their own, which the panoptic 70% rule then drops. Measured (same run): S=2 merges
# sky with objects (pseudo-label PQ_st 21.5), S=3 gives 76.2, S=4 61.2, S=6 45.7.
DEFAULT_NUM_STUFF = 3
DEFAULT_MAX_ITER = 300  # tiny CPU config: 0.55-0.8 s per iteration on the shared 2-core machine (measured)
SYNTHETIC_DATASETS = ("train", "fit", "eval")  # the u2seg recipe's datasets, all synthetic under the smoke preset


def smoke_sets(*, num_train: int = DEFAULT_NUM_TRAIN, num_val: int = DEFAULT_NUM_VAL,
               num_things: int = DEFAULT_NUM_THINGS, num_stuff: int = DEFAULT_NUM_STUFF,
               max_iter: int = DEFAULT_MAX_ITER, seed: int = 0, config_file=CONFIG, opts=()) -> list[str]:
    """The ``--set`` overrides of the u2seg smoke recipe that give these pipeline arguments."""
    if num_things < 4:
        raise UserError(f"--num-things must be at least 4 (the synthetic set's thing categories), got {num_things}")
    if num_stuff < 1 or num_train < 2 or num_val < 1 or max_iter < 1:
        raise UserError("need --num-stuff >= 1, --num-train >= 2, --num-val >= 1 and --max-iter >= 1")
    if len(opts) % 2:
        raise UserError(f"training overrides come in KEY VALUE pairs, got {len(opts)} words")
    sets = [f"datasets.{name}.{key}={value}" for name in SYNTHETIC_DATASETS
            for key, value in (("num_train", num_train), ("num_val", num_val), ("seed", seed))]
    train_opts = {"SOLVER.IMS_PER_BATCH": 4, "SOLVER.BASE_LR": 0.0003, "SOLVER.MAX_ITER": max_iter,
                  "SOLVER.CHECKPOINT_PERIOD": max(1, max_iter // 3), "SEED": seed,
                  **dict(zip(opts[::2], opts[1::2]))}
    return [*sets, f"stages.cluster.n_clusters={num_things}", f"stages.cluster.seed={seed}",
            f"stages.stuff.num_stuff={num_stuff}", f"stages.stuff.seed={seed}",
            f"stages.train.config={Path(config_file).resolve()}",
            "stages.train.opts={" + ", ".join(f"{k}: {v}" for k, v in train_opts.items()) + "}"]


def run_unsupervised_pipeline(output_dir, *, device: str = "cpu", progress: bool = True, **sizes) -> dict:
    """Run (or resume) the u2seg smoke recipe into ``output_dir``; returns ``results.json``'s content.

    ``sizes``: the keyword arguments of :func:`smoke_sets` (images per split, K, S, iterations, seed,
    training config and ``KEY VALUE`` overrides)."""
    from seg_suite.workflows.recipe import load_recipe
    from seg_suite.workflows.run import run_recipe

    if not Path(sizes.get("config_file", CONFIG)).is_file():
        raise UserError(f"config file not found: {sizes['config_file']}")
    recipe = load_recipe("u2seg", smoke_sets(**sizes), preset="smoke")
    return run_recipe(recipe, output_dir, device=device, progress=progress)
