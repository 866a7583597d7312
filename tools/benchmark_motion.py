#!/usr/bin/env python
"""Speed of the motion pipeline at 854x480 (DAVIS 480p) on CPU: a benchmark, not a test.

Reports frames/s of each flow backend, of the grouping alone, of the whole `motion-masks` job per
frame (JPEG decoding, forward + backward DIS flow, grouping, RLE, PNG writing), peak RSS, and the
machine's load average (other processes share the cores). Frames come from
seg_suite.data.synthetic.generate_video at 854x480, so J against ground truth is printed too.

    .venv/bin/python tools/benchmark_motion.py [--frames 30] [--threads 2] [--output bench.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _fps(fn, n):
    t = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=30, help="video length (default: %(default)s)")
    ap.add_argument("--height", type=int, default=480, help="default: %(default)s (DAVIS 480p)")
    ap.add_argument("--width", type=int, default=854, help="default: %(default)s (DAVIS 480p)")
    ap.add_argument("--threads", type=int, default=2, help="OpenCV/torch threads (default: %(default)s)")
    ap.add_argument("--raft-pairs", type=int, default=2,
                    help="pairs timed with random-init RAFT small (timing only; default: %(default)s, 0 = skip)")
    ap.add_argument("--output", default=None, help="also write the figures as JSON")
    args = ap.parse_args(argv)

    import cv2
    import torch
    from PIL import Image

    from seg_suite.data.synthetic import generate_video
    from seg_suite.evaluation.davis import evaluate_sequence
    from seg_suite.pseudo.inputs import WorkItem
    from seg_suite.pseudo.motion.flow import DISFlow, FarnebackFlow, RAFTFlow
    from seg_suite.pseudo.motion.grouping import MotionGrouper
    from seg_suite.pseudo.motion.job import MotionMasksJob

    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    n = args.frames
    t0 = time.perf_counter()
    video = generate_video(np.random.default_rng(0), num_frames=n, height=args.height, width=args.width)
    frames = video["frames"]
    res = {"size": f"{args.width}x{args.height}", "frames": n, "threads": args.threads,
           "cpu_count": os.cpu_count(), "load_avg_before": os.getloadavg(),
           "render_s": round(time.perf_counter() - t0, 1)}

    flow_fps = {}
    for name, fn in [("dis_ultrafast", DISFlow("ultrafast")), ("dis_fast", DISFlow("fast")),
                     ("dis_medium", DISFlow("medium")), ("farneback", FarnebackFlow())]:
        fn(frames[0], frames[1])  # warm-up
        flow_fps[name] = round(_fps(lambda i: fn(frames[i % (n - 1)], frames[i % (n - 1) + 1]), min(n - 1, 20)), 1)
    if args.raft_pairs:
        raft = RAFTFlow("raft_small", random_init=True)
        flow_fps["raft_small_random_init"] = round(_fps(lambda i: raft(frames[i], frames[i + 1]), args.raft_pairs), 2)
    res["flow_pairs_per_s"] = flow_fps

    dis = DISFlow("fast")
    fw = [dis(frames[t], frames[t + 1]) for t in range(n - 1)]
    bw = [dis(frames[t + 1], frames[t]) for t in range(n - 1)]
    grouper = MotionGrouper()

    def group(t):
        grouper.segment(fw[t] if t < n - 1 else None, bw[t - 1] if t > 0 else None, frames[t],
                        frames[t + 1] if t < n - 1 else None, frames[t - 1] if t > 0 else None)

    grouper.reset()
    res["grouping_fps"] = round(_fps(group, n), 1)

    with tempfile.TemporaryDirectory() as tmp:
        seq_dir = Path(tmp) / "in" / "bench"
        seq_dir.mkdir(parents=True)
        for i, f in enumerate(frames):
            Image.fromarray(f).save(seq_dir / f"{i:05d}.jpg", quality=95)
        job = MotionMasksJob(masks_dir=str(Path(tmp) / "masks"))
        job._flow_fn()
        t = time.perf_counter()
        record = job._one(WorkItem("bench", str(seq_dir)))
        res["end_to_end_fps"] = round(n / (time.perf_counter() - t), 1)
        masks = [np.asarray(Image.open(p)) > 127 for p in sorted((Path(tmp) / "masks" / "bench").iterdir())]
        gts = [m > 0 for m in video["instance_masks"]]
        res["J_mean_vs_ground_truth"] = round(evaluate_sequence("bench", gts, masks).J_mean, 3)
        res["annotations"] = sum(len(a) for a in record["annotations"])
    res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    res["load_avg_after"] = os.getloadavg()
    print(json.dumps(res, indent=1))
    if args.output:
        Path(args.output).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
