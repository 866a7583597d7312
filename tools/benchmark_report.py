"""Benchmark (not a test): build `seg-suite report` pages for 200 images on CPU.

Issue target: a report of 200 images builds in seconds. Makes a synthetic set (256x320 images),
takes its ground truth as scored predictions (one image in ten without masks) and as clusters
(one cluster per class), and times three builds: masks with images and ground truth, the same as
clusters, and the masks without ground truth. Prints wall and CPU seconds per build and the
report's size.

    python tools/benchmark_report.py [--images 200] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args(argv)

    import numpy as np

    from seg_suite.data.synthetic import make_synthetic_dataset
    from seg_suite.pseudo.cluster import assign_clusters
    from seg_suite.report import build_report

    work = Path(args.work or tempfile.mkdtemp(prefix="bench_report_"))
    data = work / "data"
    if not (data / "annotations" / "instances_val.json").is_file():
        make_synthetic_dataset(data, num_train=0, num_val=args.images, num_videos=0, progress=False)
    gt_path = data / "annotations" / "instances_val.json"
    gt = json.loads(gt_path.read_text())
    empty = {im["id"] for im in gt["images"][::10]}
    pred = dict(gt, annotations=[dict(a, score=round(0.3 + 0.7 * ((a["id"] * 37) % 100) / 100, 3))
                                 for a in gt["annotations"] if a["image_id"] not in empty])
    (work / "pred.json").write_text(json.dumps(pred))
    labels = np.array([a["category_id"] - 1 for a in pred["annotations"]])
    clusters = assign_clusters(pred, [a["id"] for a in pred["annotations"]], labels, int(labels.max()) + 1)
    (work / "clusters.json").write_text(json.dumps(clusters))
    images = data / "images" / "val"
    print(f"CPU: {_cpu_name()}; {len(gt['images'])} images, {len(pred['annotations'])} masks")
    for name, source, kwargs in (("masks + ground truth", "pred.json", {"gt": gt_path}),
                                 ("clusters + ground truth", "clusters.json", {"gt": gt_path}),
                                 ("masks, no ground truth", "pred.json", {})):
        out = work / f"report_{source.split('.')[0]}_{'gt' if kwargs else 'nogt'}"
        wall, cpu = time.perf_counter(), _cpu_seconds()
        build_report(work / source, out, images=images, max_images=args.images, **kwargs)
        wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
        print(f"{name:26s} {wall:6.2f} s wall  {cpu:6.2f} s CPU  {_size_mb(out):5.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
