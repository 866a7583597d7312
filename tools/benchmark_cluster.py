"""Benchmark (not a test): cluster 200k x 768 L2-normalised random features into K=300.

Issue target: at most 60 s on 2 CPU cores; also reports peak memory. The features are written to a
memory-mapped .npy first and clustered from it, as `seg-suite cluster` does.

    python tools/benchmark_cluster.py [--rows 200000] [--dim 768] [--k 300] [--backend torch] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path


def write_features(path: str, rows: int, dim: int, seed: int) -> None:
    """Random L2-normalised float32 rows into a .npy, in blocks (RAM stays bounded)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, dim))
    for start in range(0, rows, 50_000):
        block = rng.standard_normal((min(50_000, rows - start), dim), dtype=np.float32)
        mm[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    mm.flush()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000,
                        help="feature vectors (default: %(default)s)")
    parser.add_argument("--dim", type=int, default=768, help="feature width (default: %(default)s, ViT-B)")
    parser.add_argument("--k", type=int, default=300, help="clusters (default: %(default)s, U2Seg)")
    parser.add_argument("--backend", default="torch", choices=("torch", "sklearn", "faiss"),
                        help="MaskClusterer backend (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=4096, help="mini-batch rows (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch/BLAS threads (default: %(default)s, the target machine)")
    parser.add_argument("--device", default="cpu", help="torch backend device (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="data and clustering seed (default: %(default)s)")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from seg_suite.pseudo.kmeans import MaskClusterer

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "features.npy"
        # Written by a child process, so the peak memory below is the clustering's own.
        ctx = multiprocessing.get_context("spawn")
        child = ctx.Process(target=write_features, args=(str(path), args.rows, args.dim, args.seed))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit("writing the features failed")
        feats = np.load(path, mmap_mode="r")
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        cpu0 = _cpu_seconds()
        t0 = time.perf_counter()
        km = MaskClusterer(args.k, random_state=args.seed, batch_size=args.batch_size, backend=args.backend,
                           device=args.device).fit(feats)
        t_fit = time.perf_counter() - t0
        labels = km.predict(feats)
        t_all = time.perf_counter() - t0
        cpu = _cpu_seconds() - cpu0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sizes = np.bincount(labels, minlength=args.k)
    result = {
        "rows": args.rows, "dim": args.dim, "k": args.k, "backend": args.backend, "threads": args.threads,
        "fit_seconds": round(t_fit, 1), "fit_and_predict_seconds": round(t_all, 1), "steps": km.n_steps_,
        # CPU time of fit + predict: on a shared machine the wall time grows with the load, this does not
        # (divide by the thread count for the wall time of an idle machine).
        "cpu_seconds": round(cpu, 1),
        # peak resident memory of this process: torch itself, plus the pages of the memory-mapped
        # features it has read (file-backed, reclaimable), plus the working buffers
        "peak_rss_mib": round(peak), "rss_before_fit_mib": round(rss_before),
        "features_mib": round(args.rows * args.dim * 4 / 2**20), "non_empty_clusters": int((sizes > 0).sum()),
        "load_average_1min": os.getloadavg()[0], "cpu_cores": os.cpu_count(), "target_seconds": 60,
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
