#!/usr/bin/env python
"""Benchmark ``--precision``: MaskCut with bf16 (or fp16) backbone features against fp32.

    python tools/benchmark_precision.py                              # ViT-S/8 and ViT-B/8, bf16, CPU
    python tools/benchmark_precision.py --device cuda --precisions bf16 fp16

Settings as tools/benchmark_maskcut.py: random-init weights (no weights can be downloaded
here; the same seed for every precision), fixed size 480, N=3, no CRF, real photos from
``skimage.data`` written to PNG and decoded with ``seg_suite.io``.

Per backbone and precision it reports
  * agreement with fp32: the mean cosine of the patch features; the mean best-match IoU of
    the masks (each fp32 mask against the most overlapping mask of the same image at the
    other precision; 0 where there is none); the bipartition agreement (share of patches on
    the same side of the first cut, as the cut chose its foreground). A control row compares
    fp32 with fp32 under explicit softmax attention (float32 rounding only): images where even
    that changes a mask have no cut defined by the features, and the IoU is also given without them;
  * speed, in one process after a warm-up image: the backbone forward at 480² and MaskCut
    end to end (decoded image to masks, the steps of ``maskcut_batch``), seconds per image;
  * with ``--command``: the wall time of the whole ``seg-suite maskcut`` command over the
    photos (start-up, decoding, writing), one fresh process per precision.
Prints markdown tables, with the CPU's model name and the load average: timings on a shared
machine are only comparable within one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark_maskcut import _write_photos  # noqa: E402 - the MaskCut benchmark's photo writer

# skimage.data photos that ship with scikit-image (no download); the first three are the MaskCut benchmark's.
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")


DEFINED = 0.99  # control IoU from which a cut counts as defined by the features


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def best_match_iou(ref: list[np.ndarray], other: list[np.ndarray]) -> list[float]:
    """Per mask of ``ref``: its largest IoU with a mask of ``other`` (0 when ``other`` is empty)."""
    out = []
    for a in ref:
        ious = [np.logical_and(a, b).sum() / max(1, np.logical_or(a, b).sum()) for b in other]
        out.append(float(max(ious, default=0.0)))
    return out


def first_cut(masks, grid: tuple[int, int]) -> np.ndarray:
    """The foreground of the first cut on the patch grid (all False when MaskCut dropped it)."""
    for m in masks:
        if m.cut_index == 0:
            return m.patch_mask
    return np.zeros(grid, dtype=bool)


def run_precision(backbone: str, precision: str, device: str, images: list[np.ndarray],
                  attention: str = "sdpa", tau: float | None = None) -> dict:
    """MaskCut over ``images`` at ``precision``: masks, features and timings (after a warm-up image)."""
    import torch

    from seg_suite.features import build_extractor
    from seg_suite.pseudo import maskcut as mc

    ext = build_extractor(backbone, device=device, random_init=True, precision=precision, attention=attention)
    params = mc.MaskCutParams(crf=False) if tau is None else mc.MaskCutParams(crf=False, tau=tau)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    mc.maskcut(images[0], ext, params)  # warm-up
    feats, masks, forward_s, e2e_s = [], [], [], []
    for im in images:  # maskcut_batch's steps, so the forward is timed inside the end-to-end time
        sync()
        t = time.perf_counter()
        resized, net_in = mc.preprocess(im, params.fixed_size, ext.patch_size)
        t_fwd = time.perf_counter()
        f = mc.extract_features([net_in], ext, params.facet)
        sync()
        forward_s.append(time.perf_counter() - t_fwd)
        masks.append(mc.finish_masks(im, resized, mc.cut_patches(f, params)[0], params))
        sync()
        e2e_s.append(time.perf_counter() - t)
        feats.append(f[0].cpu())
    return {"feats": feats, "masks": masks, "forward_s": float(np.mean(forward_s)), "e2e_s": float(np.mean(e2e_s))}


def agreement(ref: dict, other: dict) -> dict:
    import torch.nn.functional as F

    cos = [float(F.cosine_similarity(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]), dim=-1).mean())
           for a, b in zip(ref["feats"], other["feats"])]
    per_image, sides = [], []
    for feats, m_ref, m_other in zip(ref["feats"], ref["masks"], other["masks"]):
        grid = tuple(feats.shape[:2])
        per_image.append(best_match_iou([m.mask for m in m_ref], [m.mask for m in m_other]))
        sides.append(float((first_cut(m_ref, grid) == first_cut(m_other, grid)).mean()))
    return {"cosine": float(np.mean(cos)), "per_image": per_image, "bipartition": float(np.mean(sides)),
            "min_bipartition": float(min(sides))}


def iou_summary(per_image: list[list[float]], keep: list[bool] | None = None) -> str:
    """``mean (min), n masks`` of the best-match IoUs of the images kept."""
    ious = [v for i, image in enumerate(per_image) if keep is None or keep[i] for v in image]
    if not ious:
        return "— (0 masks)"
    return f"{np.mean(ious):.3f} ({min(ious):.3f}), {len(ious)} masks"


def time_command(backbone: str, precision: str, device: str, folder: str, out_dir: str) -> float:
    """Wall seconds of ``seg-suite maskcut`` over ``folder`` (a fresh process: start-up included)."""
    out = os.path.join(out_dir, f"{backbone}-{precision}.json")
    cmd = [sys.executable, "-m", "seg_suite.cli", "maskcut", "--input", folder, "--output", out,
           "--backbone", backbone, "--random-init", "--precision", precision, "--device", device,
           "--no-crf", "--workers", "0", "--no-progress", "--overwrite"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=["dino_vits8", "dino_vitb8"])
    ap.add_argument("--precisions", nargs="+", default=["bf16"], help="compared with fp32 (default: bf16)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=len(PHOTOS), help=f"how many of {', '.join(PHOTOS)}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tau", type=float, default=None,
                    help="affinity threshold (default: MaskCut's 0.15). Random-init ViT-B/8 features are so alike "
                         "(median cosine ~0.9) that at 0.15 the affinity graph is complete and no cut is defined")
    ap.add_argument("--command", action="store_true", help="also time the whole seg-suite maskcut command")
    args = ap.parse_args()

    import torch

    from seg_suite.io.images import load_image

    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_name()}; torch {torch.__version__}; {args.threads} threads; device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    print(f"load average at start: {os.getloadavg()[0]:.1f}\n")
    rows_agree, rows_speed, rows_cmd = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "photos")
        os.makedirs(folder)
        images = [load_image(p) for p in _write_photos(folder, args.images, PHOTOS)]
        for backbone in args.backbones:
            ref = run_precision(backbone, "fp32", args.device, images, tau=args.tau)
            rows_speed.append((backbone, "fp32", ref["forward_s"], ref["e2e_s"], 1.0))
            # fp32 again with explicit softmax attention: float32 rounding differences only. Where its
            # masks differ from fp32's, the cut is not defined by the features (a near-complete affinity
            # graph, as random-init ViTs give on some photos) and no precision can reproduce it.
            control = agreement(ref, run_precision(backbone, "fp32", args.device, images, "naive", args.tau))
            defined = [bool(image) and min(image) >= DEFINED for image in control["per_image"]]
            rows_agree.append((backbone, "fp32, naive attention (control)", control, defined))
            for precision in args.precisions:
                res = run_precision(backbone, precision, args.device, images, tau=args.tau)
                rows_agree.append((backbone, precision, agreement(ref, res), defined))
                rows_speed.append((backbone, precision, res["forward_s"], res["e2e_s"], ref["e2e_s"] / res["e2e_s"]))
            if args.command:
                for precision in ["fp32"] + args.precisions:
                    rows_cmd.append((backbone, precision, time_command(backbone, precision, args.device, folder, tmp)))
    tau = "0.15" if args.tau is None else f"{args.tau:g}"
    print(f"Agreement with fp32 ({len(images)} photos, random-init weights, 480², N=3, tau {tau}, no CRF):\n")
    print(f"Images with a defined cut: every fp32 mask matched at IoU >= {DEFINED} by the control.\n")
    print("| backbone | compared with fp32 | feature cosine | mean best-match IoU (min), all images "
          "| the same, images with a defined cut | bipartition agreement (min) |")
    print("|---|---|---|---|---|---|")
    for backbone, precision, a, defined in rows_agree:
        print(f"| {backbone} | {precision} | {a['cosine']:.5f} | {iou_summary(a['per_image'])} "
              f"| {iou_summary(a['per_image'], defined)} ({sum(defined)} of {len(defined)} images) "
              f"| {a['bipartition']:.4f} ({a['min_bipartition']:.4f}) |")
    print("\nSpeed, seconds per image (one process, after a warm-up image):\n")
    print("| backbone | precision | forward 480² s | MaskCut end to end s | speed-up end to end |")
    print("|---|---|---|---|---|")
    for backbone, precision, fwd, e2e, speedup in rows_speed:
        print(f"| {backbone} | {precision} | {fwd:.2f} | {e2e:.2f} | {speedup:.2f}× |")
    if rows_cmd:
        print(f"\nWhole `seg-suite maskcut` command over {len(images)} photos (fresh process each):\n")
        print("| backbone | precision | wall s | s per image |")
        print("|---|---|---|---|")
        for backbone, precision, wall in rows_cmd:
            print(f"| {backbone} | {precision} | {wall:.1f} | {wall / len(images):.2f} |")
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
