#!/usr/bin/env python
"""Benchmark (not a test): training on the CPU in float32 against bfloat16 autocast (``SOLVER.AMP.ENABLED``).

Trains the same config twice from the same seed, on the same images in the same order (the
synthetic set, made in a temporary folder unless ``--data`` names one), once in float32 and once
with ``SOLVER.AMP.ENABLED True`` (seg_suite.engine.cpu_autocast: bfloat16 autocast, no gradient
scaler), and reports:

- the step time (forward + backward + optimizer step), median over the steps after ``--warmup``,
  as wall-clock time and as the process's CPU time (the figure to read on a shared machine);
- the loss agreement: per iteration, the relative difference of bfloat16's total loss from
  float32's, its mean and largest value over the ``--iters`` iterations, and the final losses.

Both runs use every random draw in the same order, so their inputs, augmentations and sampled
points are identical; they differ only by the arithmetic. The runs alternate ``--repeats`` times.

    python tools/benchmark_amp_cpu.py [--iters 20] [--image-size 128] [--threads 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/synthetic/maskformer2_R50_tiny_cpu.yaml"


def train(config: str, data: str, out: str, amp: bool, iters: int, image_size: int, batch: int, extra: list) -> dict:
    """One training run in this process; the per-iteration total loss and step time."""
    from seg_suite.engine.launch import build_config, prepare, release_log_handlers, RunOptions
    from seg_suite.engine.trainer import Trainer

    opts = ["DATASETS.SYNTHETIC_ROOT", data, "OUTPUT_DIR", out, "DATASETS.TEST", "()", "SOLVER.MAX_ITER", str(iters),
            "SOLVER.IMS_PER_BATCH", str(batch), "SOLVER.CHECKPOINT_PERIOD", str(10 * iters), "SEED", "0",
            "INPUT.IMAGE_SIZE", str(image_size), "SOLVER.AMP.ENABLED", str(amp), *extra]
    cfg = build_config(config, opts, num_gpus=0)
    prepare(cfg, RunOptions(log_file=str(Path(out) / "console.txt")))
    trainer = Trainer(cfg)
    trainer.register_hooks([_step_times_hook()])
    trainer.resume_or_load(resume=False)
    trainer.train()
    release_log_handlers()
    history = trainer.storage.history
    losses = [v for v, _ in history("total_loss").values()]
    times = [v for v, _ in history("step_wall").values()]
    cpu = [v for v, _ in history("step_cpu").values()]
    return {"loss": losses, "time": times, "cpu_time": cpu, "loop": type(trainer._trainer).__name__}


def _step_times_hook():
    from detectron2.engine import HookBase

    class StepTimes(HookBase):
        """Wall-clock and process CPU time per step (user + system, all threads): on a machine shared with
        other jobs it counts this run's work, where the wall-clock step time also counts waiting."""

        def before_step(self):
            self._start = time.perf_counter(), time.process_time()

        def after_step(self):
            wall, cpu = time.perf_counter() - self._start[0], time.process_time() - self._start[1]
            self.trainer.storage.put_scalars(step_wall=wall, step_cpu=cpu, smoothing_hint=False)

    return StepTimes()


def _cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(CONFIG),
                        help="training config (default: the tiny synthetic CPU config)")
    parser.add_argument("--data", default="", help="synthetic set folder (default: one made in a temporary folder)")
    parser.add_argument("--iters", type=int, default=20, help="iterations per run (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out of the time (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=128, help="INPUT.IMAGE_SIZE (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=2, help="SOLVER.IMS_PER_BATCH (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=2, help="fp32/bf16 run pairs (default: %(default)s)")
    parser.add_argument("--json", default="", help="also write the figures there")
    parser.add_argument("opts", nargs="*", help="further KEY VALUE config overrides")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from seg_suite.engine.cpu_autocast import check_cpu_bf16

    check_cpu_bf16()
    with tempfile.TemporaryDirectory(prefix="benchmark_amp_cpu_") as tmp:
        data = args.data
        if not data:
            from seg_suite.data.synthetic import make_synthetic_dataset

            data = str(Path(tmp) / "synthetic")
            make_synthetic_dataset(data, num_train=8, num_val=2, height=256, width=320, seed=0, num_videos=0,
                                   progress=False)
        runs = {"fp32": [], "bf16": []}
        for repeat in range(args.repeats):
            for name, amp in (("fp32", False), ("bf16", True)):
                run = train(args.config, data, str(Path(tmp) / f"{name}{repeat}"), amp, args.iters, args.image_size,
                            args.batch, args.opts)
                runs[name].append(run)
                print(f"{name} run {repeat}: {run['loop']}, median step "
                      f"{statistics.median(run['time'][args.warmup:]):.3f} s (CPU "
                      f"{statistics.median(run['cpu_time'][args.warmup:]):.3f} s), final loss {run['loss'][-1]:.4f}",
                      file=sys.stderr)

    step = {name: statistics.median(t for r in rs for t in r["time"][args.warmup:]) for name, rs in runs.items()}
    cpu = {name: statistics.median(t for r in rs for t in r["cpu_time"][args.warmup:]) for name, rs in runs.items()}
    fp32, bf16 = runs["fp32"][0]["loss"], runs["bf16"][0]["loss"]
    rel = [abs(b - f) / abs(f) for f, b in zip(fp32, bf16)]
    repeat_same = all(r["loss"] == fp32 for r in runs["fp32"])
    figures = {
        "cpu": _cpu_name(), "threads": args.threads, "image_size": args.image_size, "batch": args.batch,
        "iters": args.iters, "repeats": args.repeats,
        "step_s": step, "speedup": step["fp32"] / step["bf16"],
        "step_cpu_s": cpu, "cpu_speedup": cpu["fp32"] / cpu["bf16"],
        "loss_rel_diff_mean": statistics.fmean(rel), "loss_rel_diff_max": max(rel),
        "final_loss": {"fp32": fp32[-1], "bf16": bf16[-1]}, "fp32_repeats_identical": repeat_same,
        "loss_fp32": fp32, "loss_bf16": bf16,
    }
    print(f"{figures['cpu']}, {args.threads} threads, {args.image_size}² batch {args.batch}, {args.iters} iterations")
    print("| precision | step, wall (median) | step, CPU time (median) | final total loss |\n|---|---|---|---|")
    for name in ("fp32", "bf16"):
        print(f"| {name} | {step[name]:.3f} s | {cpu[name]:.3f} s | {figures['final_loss'][name]:.4f} |")
    print(f"bf16 speed-up {figures['speedup']:.2f}x wall, {figures['cpu_speedup']:.2f}x CPU time; total loss "
          f"relative difference over {len(rel)} iterations: mean {figures['loss_rel_diff_mean']:.4f}, "
          f"max {figures['loss_rel_diff_max']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
