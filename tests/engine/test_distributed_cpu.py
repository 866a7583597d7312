"""Several CPU processes over gloo (seg_suite.engine.cpu_launch) train and evaluate as one process does:
2 processes x batch 1 equal 1 process x batch 2, the criterion's mask count is reduced across
processes, evaluation gathers the same figures, and torchrun-sharded MaskCut merges to the
unsharded file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs/synthetic/maskformer2_R50_tiny_cpu.yaml")
PANOPTIC = str(ROOT / "configs/synthetic/maskformer2_R50_tiny_cpu_panoptic.yaml")


@pytest.fixture
def release_loggers():
    from seg_suite.engine.launch import release_log_handlers

    yield
    release_log_handlers()


def _fixed_point_rand(original):
    """``torch.rand`` whose (N, P, 2) point draws give every row the same P points, whatever N.

    The matcher and the criterion draw random points per image and per mask. Two processes draw
    them from two generators, one process from one, so the points differ between the two runs
    even with the same seed; with the same points for every row they depend on nothing but P.
    """
    import torch

    def rand(*size, generator=None, dtype=None, device=None, **kwargs):
        shape = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else size
        if len(shape) != 3 or shape[2] != 2 or generator is not None:
            return original(*size, generator=generator, dtype=dtype, device=device, **kwargs)
        row = original(shape[1], 2, generator=torch.Generator().manual_seed(shape[1]), dtype=dtype)
        return row.expand(shape).clone().to(device)

    return rand


def _train_with_fixed_points(cfg, run, results_path):
    """One process's training run (the engine's own per-process entry) with :func:`_fixed_point_rand`."""
    import torch

    from seg_suite.engine import launch

    original = torch.rand
    torch.rand = _fixed_point_rand(original)
    try:
        launch._execute_and_record(cfg, run, results_path)
    finally:
        torch.rand = original


def _train_opts(root, out):
    # No augmentation (flip off, scale fixed at 1) and no dropout: the two runs must see the same
    # pixels. A no-object weight of 1 makes each image's class-loss normaliser the same (its
    # number of queries), so the mean over processes equals the mean over the batch.
    return ["DATASETS.SYNTHETIC_ROOT", str(root), "OUTPUT_DIR", str(out), "DATASETS.TEST", "()",
            "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.CHECKPOINT_PERIOD", "1",
            "INPUT.RANDOM_FLIP", "none", "INPUT.MIN_SCALE", "1.0", "INPUT.MAX_SCALE", "1.0",
            "MODEL.MASK_FORMER.DROPOUT", "0.0", "MODEL.MASK_FORMER.NO_OBJECT_WEIGHT", "1.0", "SEED", "0"]


@pytest.mark.slow
def test_two_processes_train_as_one_process_with_their_joint_batch(synthetic_dataset, tmp_path, one_thread,
                                                                    release_loggers):
    import torch

    from seg_suite.engine.cpu_launch import launch_cpu
    from seg_suite.engine.launch import RunOptions, build_config

    runs = {}
    for world in (1, 2):
        out = tmp_path / f"world{world}"
        cfg = build_config(CONFIG, _train_opts(synthetic_dataset, out), num_gpus=world)
        launch_cpu(_train_with_fixed_points, world, args=(cfg, RunOptions(), None))
        metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
        weights = [torch.load(out / name, map_location="cpu", weights_only=True)["model"]
                   for name in ("model_0000000.pth", "model_final.pth")]
        runs[world] = metrics[-1], weights
    (one_metrics, one_weights), (two_metrics, two_weights) = runs[1], runs[2]
    assert one_metrics["iteration"] == two_metrics["iteration"] == 2
    losses = sorted(k for k in one_metrics if k.startswith("loss_") or k == "total_loss")
    assert len(losses) > 10 and losses == sorted(k for k in two_metrics if k.startswith("loss_") or k == "total_loss")
    for name in losses:  # the median over the 3 iterations; with 2 processes, of their mean
        assert two_metrics[name] == pytest.approx(one_metrics[name], rel=1e-4, abs=1e-6), name
    for one, two in zip(one_weights, two_weights):  # after the first and after the third step
        assert one.keys() == two.keys()
        for name, value in one.items():
            torch.testing.assert_close(two[name], value, rtol=1e-4, atol=2e-6, msg=name)
    # The steps moved the parameters, so agreeing is more than agreeing on the initial values.
    first, final = one_weights
    assert sum(not torch.equal(first[name], final[name]) for name in first) > len(first) // 2


def _num_masks(counts):
    """The criterion's mask normaliser for images with ``counts`` target masks (in this process)."""
    import torch

    from seg_suite.modeling.criterion import SetCriterion
    from seg_suite.modeling.matcher import HungarianMatcher

    criterion = SetCriterion(4, HungarianMatcher(num_points=16), {}, 0.1, ["labels", "masks"], 16, 3.0, 0.75)
    targets = [{"labels": torch.zeros(n, dtype=torch.int64), "masks": torch.zeros(n, 8, 8)} for n in counts]
    return criterion._num_masks(targets, torch.device("cpu"))


def _record_num_masks(rank_counts, out_dir):
    from detectron2.utils import comm

    rank = comm.get_rank()
    (Path(out_dir) / f"rank{rank}").write_text(str(_num_masks(rank_counts[rank])))


def test_criterion_mask_count_is_averaged_over_processes(tmp_path):
    from seg_suite.engine.cpu_launch import launch_cpu

    counts = [[1, 0], [3, 4]]  # rank 0: 2 images with 1 and 0 masks; rank 1: 3 and 4 masks
    launch_cpu(_record_num_masks, 2, args=(counts, str(tmp_path)))
    # Mask2Former's SetCriterion: the masks of all processes, divided by the number of processes,
    # so that DDP's mean of the gradients is the gradient of the loss over the whole batch.
    assert [float((tmp_path / f"rank{r}").read_text()) for r in range(2)] == [4.0, 4.0]
    assert _num_masks(counts[0]) == 1.0  # one process alone: its own count


@pytest.mark.slow
def test_two_processes_evaluate_to_the_figures_of_one(synthetic_dataset, tmp_path, one_thread, release_loggers):
    import torch

    from seg_suite.engine.api import build_config, evaluate
    from seg_suite.engine.trainer import Trainer

    def config(out, num_gpus):
        # Threshold 0: every query's mask takes part, so that the randomly initialised model's
        # panoptic output is not empty.
        return build_config(PANOPTIC, ["DATASETS.SYNTHETIC_ROOT", str(synthetic_dataset), "OUTPUT_DIR", str(out),
                                       "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.0", "SEED", "0"],
                            num_gpus=num_gpus)

    # One set of weights for both runs (each process would otherwise initialise its own).
    torch.manual_seed(0)
    weights = tmp_path / "random.pth"
    torch.save({"model": Trainer.build_model(config(tmp_path / "build", 0)).state_dict()}, weights)
    one = evaluate(config(tmp_path / "one", 0), weights, num_gpus=0)
    two = evaluate(config(tmp_path / "two", 2), weights, num_gpus=2)
    assert {"panoptic_seg", "segm", "sem_seg"} <= set(one)
    assert two == one  # exactly: the same predictions, gathered in dataset order
    figures = [one["panoptic_seg"]["PQ"], one["segm"]["AP"], one["sem_seg"]["mIoU"]]
    assert all(isinstance(x, float) for x in figures) and one["sem_seg"]["mIoU"] > 0


@pytest.mark.slow
def test_torchrun_shards_merge_to_the_unsharded_file(synthetic_dataset, tmp_path):
    from seg_suite.cli import main as cli_main

    common = ["maskcut", "--backbone", "handcrafted", "--workers", "1", "--no-progress", "--input",
              str(synthetic_dataset / "images" / "val"), "--max-images", "5", "--fixed-size", "96", "--batch-size", "2"]
    assert cli_main([*common, "--output", str(tmp_path / "single.json")]) == 0
    # The children import seg_suite from this checkout, whatever is installed.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    sharded = tmp_path / "sharded.json"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "0",
                    "-m", "seg_suite.cli", *common, "--output", str(sharded)], env=env, check=True, cwd=tmp_path,
                   capture_output=True)
    shards = sorted(p.name for p in tmp_path.glob("sharded.shard-*-of-00002.json"))
    assert shards == ["sharded.shard-00000-of-00002.json", "sharded.shard-00001-of-00002.json"]
    subprocess.run([sys.executable, "-m", "seg_suite.cli", "merge", "--output", str(sharded)], env=env, check=True,
                   capture_output=True)
    assert sharded.read_bytes() == (tmp_path / "single.json").read_bytes()


def _refuse_on_rank_one():
    import torch.distributed as dist

    from seg_suite.errors import UserError

    if dist.get_rank() == 1:
        raise UserError("rank 1 refuses this input")
    dist.barrier()  # rank 0 waits for rank 1, which never comes: launch_cpu must stop it


def test_a_mistake_in_one_process_is_one_line_and_stops_the_others():
    from seg_suite.engine.cpu_launch import launch_cpu
    from seg_suite.errors import UserError

    with pytest.raises(UserError, match="^rank 1 refuses this input$"):
        launch_cpu(_refuse_on_rank_one, 2)
