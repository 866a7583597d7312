#!/usr/bin/env python
"""Train-step time, peak memory and inference speed of seg_suite's Mask2Former, side by side with
Hugging Face Transformers' ``Mask2FormerForUniversalSegmentation`` at the same sizes.

Conditions: the R50 COCO panoptic config
(configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml: 133 classes, 100 queries,
6 deformable encoder layers, 9 decoder layers, 12544 points), random weights, batch 2 at 256x256 and
512x512, 5 instances per image; CPU, and GPU when one is present. Transformers is configured to the
same sizes (ResNet-50 bottleneck backbone, 256-d features, encoder FFN 1024, decoder FFN 2048).

A train step is forward + backward + optimizer step in float32 (no AMP, on GPU too). Both models
use the same optimizer: AdamW
(fused kernel) at lr 1e-4, weight decay 0.05, with the whole-model gradient norm clipped to 0.01;
ours through seg_suite.engine.optimizer.build_optimizer (backbone multiplier included).
Inference is one image at a time with panoptic post-processing (ours: the model's panoptic output
only; Transformers: its image processor's ``post_process_panoptic_segmentation``).

On CPU our linear layers run on oneDNN by default (seg_suite/modeling/linear.py: MKL, which
``F.linear`` uses, took its slower path on the AMD machine these figures come from);
``--cpu-linear aten`` times our model with ``F.linear`` everywhere, as Transformers runs, which
separates the model's own gains from that kernel choice.

Each (implementation, size, repeat) runs in its own subprocess, so the peak resident memory of one
does not hide the other's. Memory is the process's peak RSS on CPU and ``max_memory_allocated`` on
GPU. The two implementations alternate (ours, HF, ours, HF, ...) ``--repeats`` times, so a slow
spell of a shared machine hits both; the reported step time is the median over every timed step of
every repeat, and the spread is the range of the per-repeat medians. On CPU the step time moves a
lot from step to step (fresh memory pages for the activations), so use at least 10 steps x 3
repeats before reading a ratio.

Usage: tools/benchmark_model.py [--sizes 256 512] [--steps 10] [--repeats 3] [--device cpu|cuda]
       [--threads N] [--cpu-linear onednn|aten]
Transformers is the optional extra ``bench`` (``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

CONFIG = "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"
NUM_INSTANCES = 5
BATCH = 2


def _targets(size: int, n: int, num_classes: int, seed: int):
    """n random rectangles (bool (n, size, size)) with random classes (n,)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n):
        y0, x0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
        h, w = torch.randint(size // 8, size // 2, (2,), generator=g).tolist()
        masks[i, y0:y0 + h, x0:x0 + w] = True
    classes = torch.randint(0, num_classes, (n,), generator=g)
    return masks, classes


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _build_ours(device: str):
    import seg_suite.modeling  # noqa: F401
    from detectron2.modeling import build_model
    from detectron2.structures import Instances

    from seg_suite.engine.launch import build_config
    from seg_suite.engine.optimizer import build_optimizer

    cfg = build_config(CONFIG, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", device, "SOLVER.AMP.ENABLED", "False",
                                "MODEL.MASK_FORMER.TEST.SEMANTIC_ON", "False",
                                "MODEL.MASK_FORMER.TEST.INSTANCE_ON", "False"], None)
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)

    def batch(size: int, seed: int):
        import torch

        items = []
        for b in range(BATCH):
            masks, classes = _targets(size, NUM_INSTANCES, 133, seed + b)
            inst = Instances((size, size))
            inst.gt_masks, inst.gt_classes = masks, classes
            image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
            items.append({"image": image, "instances": inst, "height": size, "width": size})
        return items

    def loss(items):
        return sum(model(items).values())

    def infer(items):
        return model([{k: items[0][k] for k in ("image", "height", "width")}])

    return model, optimizer, batch, loss, infer


def _build_hf(device: str):
    import torch
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor, ResNetConfig

    backbone = ResNetConfig(depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048], layer_type="bottleneck",
                            out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(
        backbone_config=backbone, num_labels=133, num_queries=100, encoder_layers=6, decoder_layers=10,
        hidden_dim=256, feature_size=256, mask_feature_size=256, dim_feedforward=2048, encoder_feedforward_dim=1024,
        train_num_points=12544, oversample_ratio=3.0, importance_sample_ratio=0.75, num_attention_heads=8,
        use_auxiliary_loss=True, class_weight=2.0, mask_weight=5.0, dice_weight=5.0, no_object_weight=0.1,
        id2label={i: str(i) for i in range(133)}, label2id={str(i): i for i in range(133)},
    )
    model = Mask2FormerForUniversalSegmentation(config).to(device)
    processor = Mask2FormerImageProcessor()
    inner = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=True)
    mean = torch.tensor([123.675, 116.280, 103.530], device=device).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.120, 57.375], device=device).view(1, 3, 1, 1)

    class Clipped:
        param_groups = inner.param_groups

        def zero_grad(self):
            inner.zero_grad()

        def step(self):
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)
            inner.step()

    def batch(size: int, seed: int):
        pixels = torch.randint(0, 256, (BATCH, 3, size, size), dtype=torch.uint8)
        tg = [_targets(size, NUM_INSTANCES, 133, seed + b) for b in range(BATCH)]
        return pixels, [m.float().to(device) for m, _ in tg], [c.to(device) for _, c in tg]

    def loss(items):
        pixels, masks, classes = items
        x = (pixels.to(device).float() - mean) / std
        return model(pixel_values=x, mask_labels=masks, class_labels=classes).loss

    def infer(items):
        pixels = items[0][:1]
        x = (pixels.to(device).float() - mean) / std
        out = model(pixel_values=x)
        return processor.post_process_panoptic_segmentation(out, threshold=0.8, overlap_mask_area_threshold=0.8,
                                                            target_sizes=[tuple(pixels.shape[-2:])])

    return model, Clipped(), batch, loss, infer


def run_one(impl: str, size: int, steps: int, device: str) -> dict:
    """Time ``steps`` train steps (after one warm-up) and ``steps`` inferences in this process."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    model, optimizer, make_batch, loss_fn, infer = (_build_ours if impl == "ours" else _build_hf)(device)
    model.train()
    rss_before = _rss_mb()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, cpu_times = [], []
    for i in range(steps + 1):
        items = make_batch(size, seed=i * 10)
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        loss = loss_fn(items)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sync()
        if i > 0:  # the first step warms up allocators and caches
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else _rss_mb()
    model.eval()
    items = make_batch(size, seed=999)
    with torch.no_grad():
        infer(items)
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            infer(items)
        sync()
        infer_s = (time.perf_counter() - t0) / steps
    return {
        "impl": impl, "size": size, "device": device, "threads": torch.get_num_threads(),
        "cpu_linear": os.environ.get("SEG_SUITE_CPU_LINEAR", "onednn") if impl == "ours" else "aten",
        "step_times_s": times, "step_cpu_times_s": cpu_times,
        "peak_mem_mb": peak, "mem_before_steps_mb": rss_before if device == "cpu" else 0.0,
        "infer_images_per_s": 1.0 / infer_s,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512],
                        help="square image sizes (default: 256 512)")
    parser.add_argument("--steps", type=int, default=10,
                        help="timed train steps and inferences per run, after one warm-up (default: 10)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per implementation and size, alternating between them (default: 3)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="default: cpu, plus cuda when a GPU is present")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads; 0 keeps torch's default (one per core)")
    parser.add_argument("--cpu-linear", choices=["onednn", "aten"], default="onednn",
                        help="how our model computes float32 linear layers on CPU: onednn (the default, "
                             "see seg_suite/modeling/linear.py) or aten (F.linear, MKL in the official "
                             "wheels, as Transformers does); sets SEG_SUITE_CPU_LINEAR for our runs")
    parser.add_argument("--impls", nargs="+", default=["ours", "hf"], choices=["ours", "hf"],
                        help="implementations to run (default: both)")
    parser.add_argument("--output", help="also write the results as JSON here")
    parser.add_argument("--_child", nargs=3, metavar=("IMPL", "SIZE", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be at least 1")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args._child:
        impl, size, device = args._child
        print(json.dumps(run_one(impl, int(size), args.steps, device)))
        return 0

    if "hf" in args.impls:
        try:
            import transformers  # noqa: F401
        except ImportError:
            print("error: the Transformers comparison needs `pip install transformers` (extra `bench`)",
                  file=sys.stderr)
            return 2
    devices = [args.device] if args.device else (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    summaries = []
    for device in devices:
        for size in args.sizes:
            runs = {impl: [] for impl in args.impls}
            for repeat in range(args.repeats):
                for impl in args.impls:
                    cmd = [sys.executable, os.path.abspath(__file__), "--steps", str(args.steps),
                           "--threads", str(args.threads), "--_child", impl, str(size), device]
                    env = dict(os.environ, SEG_SUITE_CPU_LINEAR=args.cpu_linear)
                    proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
                    if proc.returncode != 0:
                        print(proc.stderr[-3000:], file=sys.stderr)
                        return 1
                    res = json.loads(proc.stdout.strip().splitlines()[-1])
                    runs[impl].append(res)
                    print(f"{device} {size:4d} {impl:4s} run {repeat + 1}/{args.repeats}: step median "
                          f"{statistics.median(res['step_times_s']):.2f} s, peak mem {res['peak_mem_mb']:.0f} MB, "
                          f"inference {res['infer_images_per_s']:.2f} img/s", flush=True)
            pair = {}
            for impl, results in runs.items():
                steps = [t for r in results for t in r["step_times_s"]]
                per_run = [statistics.median(r["step_times_s"]) for r in results]
                pair[impl] = summary = {
                    "impl": impl, "size": size, "device": device, "runs": results,
                    "step_s": statistics.median(steps),
                    "step_cpu_s": statistics.median(t for r in results for t in r["step_cpu_times_s"]),
                    "run_medians_s": per_run,
                    "peak_mem_mb": max(r["peak_mem_mb"] for r in results),
                    "infer_images_per_s": statistics.median(r["infer_images_per_s"] for r in results),
                }
                summaries.append(summary)
                print(f"{device} {size:4d} {impl:4s}: step {summary['step_s']:.2f} s (median of {len(steps)}; "
                      f"run medians {min(per_run):.2f}-{max(per_run):.2f} s; cpu {summary['step_cpu_s']:.2f} s), "
                      f"peak mem {summary['peak_mem_mb']:.0f} MB, inference {summary['infer_images_per_s']:.2f} img/s",
                      flush=True)
            if len(pair) == 2:
                o, h = pair["ours"], pair["hf"]
                print(f"{device} {size:4d} ratio ours/HF: step {o['step_s'] / h['step_s']:.2f}x, "
                      f"cpu time {o['step_cpu_s'] / h['step_cpu_s']:.2f}x, "
                      f"memory {o['peak_mem_mb'] / h['peak_mem_mb']:.2f}x, "
                      f"inference speed {o['infer_images_per_s'] / h['infer_images_per_s']:.2f}x", flush=True)
    if args.output:
        from seg_suite.io.files import atomic_write_json

        atomic_write_json(args.output, summaries, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
