#!/usr/bin/env python
"""Benchmark MaskCut: per-stage seconds, images/s and peak memory of
our pipeline against a reference-style one, and our eigensolver against the dense one.

    python tools/benchmark_maskcut.py                       # ViT-S/8 and ViT-B/8, CPU
    python tools/benchmark_maskcut.py --device cuda --backbones dino_vitb8

Settings: random-init weights (timing only), fixed size 480, N=3, no CRF,
real photos from ``skimage.data`` written to PNG and decoded with ``seg_suite.io``.

* "ours": sdpa attention, ``solver="auto"`` (Lanczos on the normalised affinity on CPU,
  batched LOBPCG on CUDA).
* "reference-style": what CutLER's ``maskcut.py`` does per cut: naive attention and a
  dense ``scipy.linalg.eigh(D - A, D, subset_by_index=[1, 2])``.
Each (backbone, pipeline) runs in its own process so peak RSS is its own.
Then the affinities of every cut "ours" made are solved by both eigensolvers:
time ratio and the share of patches whose side of the bipartition agrees.
Prints markdown tables. The machine's load average is printed too: timings on a shared
machine are only comparable within one run.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time

import numpy as np

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left")


def _write_photos(folder: str, count: int, names: tuple[str, ...] = PHOTOS) -> list[str]:
    import skimage.data
    from PIL import Image

    paths = []
    for name in names[:count]:
        img = getattr(skimage.data, name)()
        path = os.path.join(folder, f"{name}.png")
        Image.fromarray(img).save(path)
        paths.append(path)
    return paths


def _run_pipeline(backbone: str, reference: bool, device: str, paths: list[str], threads: int, keep_affinities: bool):
    """Child process: run MaskCut over ``paths`` once (after one warm-up image)."""
    import torch

    torch.set_num_threads(threads)
    from seg_suite.features import build_extractor
    from seg_suite.io.images import load_image
    from seg_suite.pseudo import maskcut as mc
    from seg_suite.pseudo import ncut

    ext = build_extractor(backbone, device=device, random_init=True, attention="naive" if reference else "sdpa")
    ext.eval()
    params = mc.MaskCutParams(crf=False, solver="dense" if reference else "auto")
    stages = dict(decode=0.0, features=0.0, eigensolve=0.0, cut_other=0.0, post=0.0)
    affinities = []  # saved .npy paths, filled only in the untimed pass after the timed one
    saving = False
    solve = ncut.second_eigenvector

    def timed_solve(A, *a, **k):
        if saving:
            path = os.path.join(os.path.dirname(paths[0]), f"affinity_{len(affinities)}.npy")
            np.save(path, A.detach().cpu().numpy())
            affinities.append(path)
        sync()
        t = time.perf_counter()
        out = solve(A, *a, **k)
        stages["eigensolve"] += time.perf_counter() - t
        return out

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    ncut.second_eigenvector = timed_solve  # timing hook, this process only

    def one(path, record):
        t0 = time.perf_counter()
        image = load_image(path)
        t1 = time.perf_counter()
        resized, net_in = mc.preprocess(image, params.fixed_size, ext.patch_size)
        feats = mc.extract_features([net_in], ext, params.facet)
        sync()
        t2 = time.perf_counter()
        before = stages["eigensolve"]
        cuts = mc.cut_patches(feats, params)
        t3 = time.perf_counter()
        masks = mc.finish_masks(image, resized, cuts[0], params)
        t4 = time.perf_counter()
        if record:
            stages["decode"] += t1 - t0
            stages["features"] += t2 - t1
            stages["cut_other"] += (t3 - t2) - (stages["eigensolve"] - before)
            stages["post"] += t4 - t3
        else:
            stages["eigensolve"] = before
        return len(masks)

    one(paths[0], record=False)  # warm-up (allocator, kernels)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    n_masks = [one(p, record=True) for p in paths]
    total = time.perf_counter() - t
    out = dict(
        stages={k: v / len(paths) for k, v in stages.items()},
        total=total / len(paths),
        images_per_s=len(paths) / total,
        peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        cuda_peak_gib=torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None,
        masks=n_masks,
    )
    if keep_affinities:  # after the peak memory was read: saving does not count
        saving = True
        for p in paths:
            one(p, record=False)
        out["affinities"] = affinities
    return out


def _child(queue, *args):
    try:
        queue.put(_run_pipeline(*args))
    except Exception as e:  # report, do not hang the parent
        queue.put({"error": f"{type(e).__name__}: {e}"})


def _in_process(*args):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q, *args))
    p.start()
    res = q.get()
    p.join()
    if "error" in res:
        raise RuntimeError(res["error"])
    return res


def _compare_solvers(affinities: list[np.ndarray], side: int):
    """Time ours vs the dense solver on the same affinities; bipartition agreement."""
    import scipy.sparse.linalg
    import torch

    from seg_suite.pseudo import ncut

    rows = []
    for path in affinities:
        A = np.load(path)
        At = torch.from_numpy(A)
        t = time.perf_counter()
        ours, _ = ncut.second_eigenvector(At, solver="auto")
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        dense, _ = ncut.second_eigenvector(At, solver="dense")
        t_dense = time.perf_counter() - t
        dims = (side, A.shape[-1] // side)
        a, _ = ncut.orient(np.reshape(ours, -1), dims)
        b, _ = ncut.orient(np.reshape(dense, -1), dims)
        # Eigengap of the normalised affinity: with mu2 ~ mu3 the second eigenvector is
        # numerically arbitrary for every solver, the dense reference included.
        d = A.reshape(A.shape[-1], -1).astype(np.float64).sum(axis=1)
        M = A.reshape(d.size, d.size) / np.sqrt(d)[:, None] / np.sqrt(d)[None, :]
        mu = np.sort(scipy.sparse.linalg.eigsh(M, k=3, which="LA", return_eigenvectors=False))[::-1]
        rows.append((t_ours, t_dense, float((a == b).mean()), float(mu[1] - mu[2])))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=["dino_vits8", "dino_vitb8"],
                    help="backbones to time, random-init (default: ViT-S/8 and ViT-B/8)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    ap.add_argument("--images", type=int, default=3, help=f"how many skimage.data photos ({', '.join(PHOTOS)}), default 3")
    ap.add_argument("--threads", type=int, default=torch_threads_default(),
                    help="torch CPU threads (default: all cores, os.cpu_count())")
    ap.add_argument("--skip-reference", action="store_true", help="time only our pipeline")
    args = ap.parse_args(argv)

    print(f"# MaskCut benchmark: 480x480, N=3, no CRF, device {args.device}, {args.threads} threads")
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores\n")
    with tempfile.TemporaryDirectory() as tmp:
        paths = _write_photos(tmp, args.images)
        results = {}
        for bb in args.backbones:
            for ref in ([False] if args.skip_reference else [False, True]):
                name = "reference-style" if ref else "ours"
                print(f"running {bb} {name} ...", file=sys.stderr, flush=True)
                results[(bb, name)] = _in_process(bb, ref, args.device, paths, args.threads, not ref)
        print("comparing eigensolvers ...", file=sys.stderr, flush=True)
        solver_rows = {bb: _compare_solvers(results[(bb, "ours")]["affinities"], 480 // 8) for bb in args.backbones}

    print("| backbone | pipeline | decode s | features s | eigensolve s | other cut s | post s | total s/img | img/s | peak RSS GiB | CUDA peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (bb, name), r in results.items():
        s = r["stages"]
        cuda = f"{r['cuda_peak_gib']:.2f}" if r["cuda_peak_gib"] is not None else "-"
        print(f"| {bb} | {name} | {s['decode']:.3f} | {s['features']:.2f} | {s['eigensolve']:.2f} | "
              f"{s['cut_other']:.2f} | {s['post']:.3f} | {r['total']:.2f} | {r['images_per_s']:.3f} | "
              f"{r['peak_rss_gib']:.2f} | {cuda} |")
    if not args.skip_reference:
        print("\n| backbone | end-to-end speed-up vs reference-style |")
        print("|---|---|")
        for bb in args.backbones:
            print(f"| {bb} | {results[(bb, 'reference-style')]['total'] / results[(bb, 'ours')]['total']:.1f}x |")

    print("\n| backbone | cuts | ours s/cut | dense eigh s/cut | speed-up | min agreement | mean agreement | "
          "cuts with mu2-mu3 < 1e-3 | min agreement on the others |")
    print("|---|---|---|---|---|---|---|---|---|")
    for bb in args.backbones:
        rows = solver_rows[bb]
        t_o = np.mean([r[0] for r in rows])
        t_d = np.mean([r[1] for r in rows])
        agr = [r[2] for r in rows]
        clear = [r[2] for r in rows if r[3] >= 1e-3]
        print(f"| {bb} | {len(rows)} | {t_o:.3f} | {t_d:.2f} | {t_d / t_o:.1f}x | {min(agr):.4f} | {np.mean(agr):.4f} | "
              f"{len(rows) - len(clear)} | {min(clear) if clear else float('nan'):.4f} |")
        for i, r in enumerate(rows):
            print(f"  cut {i}: agreement {r[2]:.4f}, mu2 - mu3 = {r[3]:.2e}", file=sys.stderr)
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")
    return 0


def torch_threads_default() -> int:
    return os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())
