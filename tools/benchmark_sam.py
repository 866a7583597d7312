#!/usr/bin/env python
"""Seconds per image and peak memory of SAM in seg_suite: image embedding, automatic mask
generation (``seg-suite sam-masks``) and refinement of coarse masks (``seg-suite refine``).

Conditions: ViT-B (random weights unless --sam-checkpoint is given;
the encoder and decoder cost the same whatever the weights, but generation's work after the
decoder (NMS, RLE encoding, small-region removal) grows with the number of masks that pass the
filters. Random weights are run with the filters open, yet box NMS still collapses their
blob-like masks to about one per image, so that part is a lower bound), on skimage.data photos
(astronaut 512x512, coffee 400x600, chelsea 300x451). Generation runs SamAutomaticMaskGenerator
with --points-per-side (default 32, segment-anything's) and no crops; refinement prompts 3
coarse masks per image (MaskCut's N=3), all in one batch, embedding included, with the
decoder-only time reported beside it.

Each device runs in its own subprocess so peak memory is not shared. Memory: peak resident set
size of the process (sampled every 5 ms during each stage; the model's weights included) on CPU,
``max_memory_allocated`` on GPU. Beside wall-clock seconds the process's CPU seconds are reported,
which a machine shared with other jobs inflates less.

Usage: tools/benchmark_sam.py [--device cpu cuda] [--points-per-side 32] [--images 3]
                              [--threads N] [--sam-type vit_b] [--sam-checkpoint PATH] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

PHOTOS = ("astronaut", "coffee", "chelsea")


class PeakRSS:
    """Peak resident memory (MiB) of this process while the block runs, sampled in a thread."""

    def __enter__(self):
        import psutil

        self.proc, self.peak, self.stop = psutil.Process(), 0, threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self.stop.wait(0.005)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        self.mib = self.peak / 2**20


def coarse_masks(image):
    """Three MaskCut-like coarse masks: an ellipse at the centre, a box and a disc off-centre."""
    import numpy as np

    h, w = image.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    ellipse = ((yy - h / 2) / (0.3 * h)) ** 2 + ((xx - w / 2) / (0.25 * w)) ** 2 <= 1
    box = np.zeros((h, w), bool)
    box[h // 10 : h // 3, w // 10 : w // 2] = True
    disc = (yy - 0.75 * h) ** 2 + (xx - 0.75 * w) ** 2 <= (0.12 * min(h, w)) ** 2
    return [ellipse, box, disc]


def _sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def run_device(args) -> dict:
    """All stages on one device, in this process."""
    import numpy as np
    import torch
    from segment_anything import SamPredictor
    from skimage import data

    from seg_suite.pseudo.sam import SamGeneratorParams, generate_masks, load_sam, make_generator
    from seg_suite.pseudo.sam_refine import RefineParams, refine_masks

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device[0]
    cuda = device.startswith("cuda")
    model = load_sam(args.sam_type, args.sam_checkpoint, device=device, random_init=args.sam_checkpoint is None)
    images = [getattr(data, name)() for name in PHOTOS[: args.images]]
    open_filters = args.sam_checkpoint is None
    gen_params = SamGeneratorParams(points_per_side=args.points_per_side,
                                    **(dict(pred_iou_thresh=0.0, stability_score_thresh=0.0) if open_filters else {}))
    generator = make_generator(model, gen_params)
    predictor = SamPredictor(model)
    refine = RefineParams()

    def timed(fn, image):
        _sync(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        out = fn(image)
        _sync(device)
        return time.perf_counter() - start, time.process_time() - cpu_start, out

    with torch.inference_mode():
        timed(lambda im: predictor.set_image(im), images[0])  # warm-up (kernel selection, allocator)
    results = {}
    stages = {
        "embedding": lambda im: predictor.set_image(im),
        "generation": lambda im: generate_masks(generator, im),
        "refinement": lambda im: refine_masks(predictor, im, coarse_masks(im), refine),
        "refinement_decoder_only": lambda im: refine_masks(predictor, im, coarse_masks(im), refine, embed=False),
    }
    for name, fn in stages.items():
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times, cpu_times, counts = [], [], []
        with PeakRSS() as mem, torch.inference_mode():
            for im in images:
                if name == "refinement_decoder_only":
                    predictor.set_image(im)
                for _ in range(args.repeat):
                    seconds, cpu_seconds, out = timed(fn, im)
                    times.append(seconds)
                    cpu_times.append(cpu_seconds)
                counts.append(len(out) if isinstance(out, list) else None)
        results[name] = {
            "seconds_per_image": round(float(np.mean(times)), 4),
            "min_seconds": round(float(np.min(times)), 4),
            # CPU seconds of this process (all threads): on a shared machine a steadier figure
            "cpu_seconds_per_image": round(float(np.mean(cpu_times)), 4),
            "peak_rss_mib": round(mem.mib, 1),
            **({"peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)} if cuda else {}),
            **({"masks_per_image": counts} if name == "generation" else {}),
        }
    return {
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({torch.get_num_threads()} threads)",
        "sam_type": args.sam_type, "weights": args.sam_checkpoint or "random-init",
        "points_per_side": args.points_per_side, "images": list(PHOTOS[: args.images]),
        "image_sizes": [list(im.shape[:2]) for im in images], "repeat": args.repeat, "stages": results,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", nargs="+", default=None,
                        help="devices to run on (default: cpu, and cuda when available)")
    parser.add_argument("--points-per-side", type=int, default=32,
                        help="generation grid (default: 32, segment-anything's; use 8-16 on a small CPU)")
    parser.add_argument("--images", type=int, default=3, choices=(1, 2, 3), help="how many photos (default: 3)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per image and stage (default: 1)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--sam-type", default="vit_b", help="vit_b, vit_l or vit_h (default: vit_b, the smallest)")
    parser.add_argument("--sam-checkpoint", default=None, help="real weights (default: random init)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(run_device(args)))
        return 0
    if args.device is None:
        import torch

        args.device = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in args.device:
        cmd = [sys.executable, __file__, "--child", "--device", device, *_forward(args)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if proc.returncode != 0:
            print(f"{device}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
            return 1
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"\n{row['device']}  SAM {row['sam_type']} ({row['weights']}), points_per_side {row['points_per_side']}, "
              f"images {row['images']}")
        for stage, r in row["stages"].items():
            extra = f"  masks/image {r['masks_per_image']}" if "masks_per_image" in r else ""
            gpu = f"  peak GPU {r['peak_gpu_mib']:.0f} MiB" if "peak_gpu_mib" in r else ""
            print(f"  {stage:<25} {r['seconds_per_image']:8.3f} s/image (min {r['min_seconds']:.3f})  "
                  f"cpu {r['cpu_seconds_per_image']:.3f} s  peak RSS {r['peak_rss_mib']:.0f} MiB{gpu}{extra}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=1)
    return 0


def _forward(args) -> list[str]:
    out = ["--points-per-side", str(args.points_per_side), "--images", str(args.images), "--repeat", str(args.repeat),
           "--threads", str(args.threads), "--sam-type", args.sam_type]
    if args.sam_checkpoint:
        out += ["--sam-checkpoint", args.sam_checkpoint]
    return out


if __name__ == "__main__":
    sys.exit(main())
