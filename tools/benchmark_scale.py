"""Benchmark (not a test): how the dataset runner's cost grows with the number of images.

Runs ``maskcut`` with the handcrafted backbone (no weights; 64x64 generated PNGs, ``--fixed-size 64``,
no CRF, batch 1, no DataLoader workers) over N images for each N in ``--sizes``, and reports per N:

- ``run``: the whole run up to the final write (time per item; the journal is fsynced per item);
- ``journal``: the size of the finished run's journal (the run is stopped just before its final
  write, as a kill there would, so the journal holds every item);
- ``resume``: ``--resume`` of that run: the journal replay, then the final write (``write_records``:
  the COCO file streamed from the journal); the replay is the resume time less the final write's;
- ``merge``: ``merge`` of the 8 shard files of a sharded run of the same images (its items'
  records replayed from the unsharded run's journal, no model run); the merged output is checked
  byte-identical to the unsharded one;
- ``features``: ``cluster``'s feature stage (handcrafted, ``pooled``, input 64²) over the run's masks;
- peak RSS of each of these, each measured in its own child process (``wait4``).

``--kmeans-rows`` also runs ``tools/benchmark_cluster.py`` (synthetic 768-d features, K = 300)
at those row counts, for the k-means stage of ``cluster``.

    python tools/benchmark_scale.py --sizes 1000,5000,20000 [--kmeans-rows 50000,200000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
NUM_SHARDS = 8
IMAGE_SIZE = 64


# ---------------------------------------------------------------- data
def generate_images(folder: Path, count: int, seed: int = 0) -> None:
    """``count`` IMAGE_SIZE² PNGs: a noisy background with one or two bright shapes, reproducible."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE]
    for i in range(count):
        img = rng.integers(0, 60, (IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.uint8)
        for _ in range(1 + i % 2):
            cy, cx = rng.integers(12, IMAGE_SIZE - 12, 2)
            ry, rx = rng.integers(5, 14, 2)
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            img[inside] = rng.integers(150, 255, 3)
        Image.fromarray(img).save(folder / f"{i:07d}.png")


# ---------------------------------------------------------------- children
def _job_class():
    """The MaskCut job with its final write timed, a stop before it, and a replay of known records."""
    from seg_suite.pseudo.maskcut_job import MaskCutJob

    class TimedMaskCutJob(MaskCutJob):
        stop_before_write = False
        timings: dict = {}
        replay: dict | None = None  # key -> record: return these instead of running the model

        def prepare(self, item):
            return (item.key, None) if self.replay is not None else super().prepare(item)

        def process(self, batch):
            return [self.replay[key] for key, _ in batch] if self.replay is not None else super().process(batch)

        def write_records(self, path, records, info):
            if self.stop_before_write:
                raise KeyboardInterrupt("stopped before the final write (benchmark)")
            t0 = time.perf_counter()
            super().write_records(path, records, info)
            self.timings["write_s"] = time.perf_counter() - t0

    TimedMaskCutJob.__qualname__ = TimedMaskCutJob.__name__  # a stable job_class in the journal header
    return TimedMaskCutJob


def _make_job(cls):
    from seg_suite.pseudo.maskcut import MaskCutParams

    return cls(MaskCutParams(fixed_size=IMAGE_SIZE, crf=False), backbone="handcrafted").load()


def child(mode: str, images: Path, work: Path, report: Path) -> None:
    """One measurement, in its own process so that its peak RSS is its own."""
    import torch

    torch.set_num_threads(1)
    from seg_suite.pseudo.inputs import discover_inputs
    from seg_suite.pseudo.runner import ShardSpec, merge_outputs, run_job, shard_output_path

    cls = _job_class()
    out = work / ("merged.json" if mode == "merge" else "masks.json")
    result: dict = {}
    if mode == "baseline":  # imports and the job, nothing run: the floor of every peak RSS
        _make_job(cls)
        report.write_text(json.dumps(result))
        return
    t0 = time.perf_counter()
    items = discover_inputs(str(images))
    result["discover_s"] = time.perf_counter() - t0
    if mode == "run":
        job = _make_job(cls)
        job.stop_before_write = True
        t0 = time.perf_counter()
        try:
            run_job(job, items, out, progress=False)
        except KeyboardInterrupt:
            pass
        result["run_s"] = time.perf_counter() - t0
    elif mode == "resume":
        job = _make_job(cls)
        t0 = time.perf_counter()
        run_job(job, items, out, resume=True, progress=False)
        result["resume_s"] = time.perf_counter() - t0
        result.update(cls.timings)
    elif mode == "shards":  # the 8 shards of the same run, their records taken from the run's journal
        job = _make_job(cls)
        with open(work / "masks.journal.jsonl", encoding="utf-8") as fh:
            job.replay = {e["key"]: e["record"] for e in map(json.loads, list(fh)[1:])}
        t0 = time.perf_counter()
        for sid in range(NUM_SHARDS):
            run_job(job, items, work / "sharded.json", shard=ShardSpec(NUM_SHARDS, sid), progress=False)
        result["shards_s"] = time.perf_counter() - t0
    elif mode == "merge":
        shards = [shard_output_path(work / "sharded.json", ShardSpec(NUM_SHARDS, sid)) for sid in range(NUM_SHARDS)]
        t0 = time.perf_counter()
        merge_outputs(shards, out, resolver=lambda _path: cls)
        result["merge_s"] = time.perf_counter() - t0
        result.update(cls.timings)
    elif mode == "features":
        from seg_suite.pseudo.cluster import extract_mask_features

        t0 = time.perf_counter()
        extract_mask_features(work / "masks.json", str(images), work / "features.json", backbone="handcrafted",
                              mode="pooled", input_size=IMAGE_SIZE, progress=False)
        result["features_s"] = time.perf_counter() - t0
    else:
        raise SystemExit(f"unknown child mode {mode}")
    report.write_text(json.dumps(result))


def measure(mode: str, images: Path, work: Path) -> dict:
    report = work / f"{mode}.report.json"
    cmd = [sys.executable, str(HERE), "--child", mode, str(images), str(work), str(report)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=dict(os.environ, PYTHONPATH=str(HERE.parents[1])))
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"child {mode} failed (status {status})")
    result = json.loads(report.read_text())
    result["process_s"] = wall
    result["peak_rss_mib"] = usage.ru_maxrss / 1024  # KiB on Linux
    return result


# ---------------------------------------------------------------- extrapolation
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "coins")


def coco_memory_per_image(copies: int = 2000) -> dict:
    """What one image's MaskCut records cost where they are held in memory: ``merge`` holds every
    shard's records, and a job without a streamed final write gets them as one list and builds its
    output in memory (the runner's unsharded COCO write streams and holds neither).

    Realistic records: handcrafted MaskCut at CutLER's settings (480², N=3, CRF) on skimage photos
    resized to 500x375 (ImageNet's typical size). ``copies`` records are parsed from their journal
    lines, then ``finalize`` builds the COCO dict; tracemalloc measures both.
    """
    import tracemalloc

    import numpy as np
    import skimage.data
    from PIL import Image

    from seg_suite.features import build_extractor
    from seg_suite.pseudo.jobs import CocoMaskJob
    from seg_suite.pseudo.maskcut import MaskCutParams, maskcut  # CutLER's settings: 480², N=3, CRF

    extractor = build_extractor("handcrafted")
    lines = []
    for name in PHOTOS:
        image = np.asarray(Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize((500, 375)))
        anns = [CocoMaskJob.mask_annotation(m.mask, m.score) for m in maskcut(image, extractor, MaskCutParams())]
        record = {"images": [{"file_name": f"{name}.JPEG", "width": 500, "height": 375}], "annotations": [anns]}
        lines.append(json.dumps({"key": name, "record": record}))
    masks = sum(len(json.loads(line)["record"]["annotations"][0]) for line in lines)
    tracemalloc.start()
    entries = {f"{i:08d}": json.loads(lines[i % len(lines)]) for i in range(copies)}
    after_replay = tracemalloc.get_traced_memory()[0]
    coco = _finalize_coco([e["record"] for e in entries.values()])
    after_finalize = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    output_bytes = len(json.dumps(coco, separators=(", ", ": ")))
    return {"photos": len(PHOTOS), "masks_per_image": masks / len(PHOTOS),
            "journal_bytes_per_image": sum(len(line) + 1 for line in lines) / len(lines),
            "records_bytes_per_image": after_replay / copies, "final_dict_bytes_per_image": (after_finalize - after_replay) / copies,
            "output_bytes_per_image": output_bytes / copies}


def _finalize_coco(records):
    from seg_suite.pseudo.maskcut_job import MaskCutJob

    return MaskCutJob(backbone="handcrafted").finalize(records, {})


# ---------------------------------------------------------------- driver
def bench_size(n: int, root: Path, features: bool = True) -> dict:
    images, work = root / f"images_{n}", root / f"work_{n}"
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    generate_images(images, n)
    gen_s = time.perf_counter() - t0
    row: dict = {"n": n, "generate_s": round(gen_s, 1)}
    run = measure("run", images, work)
    journal = work / "masks.journal.jsonl"
    row["journal_mib"] = journal.stat().st_size / 2**20
    measure("shards", images, work)  # the shard files merge joins; no model runs (records replayed)
    merge = measure("merge", images, work)
    resume = measure("resume", images, work)
    output = work / "masks.json"
    coco = json.loads(output.read_text())
    row.update(
        run_s=run["run_s"], run_ms_per_item=1000 * run["run_s"] / n, run_rss_mib=run["peak_rss_mib"],
        discover_s=run["discover_s"],
        resume_s=resume["resume_s"], write_s=resume["write_s"],
        replay_s=resume["resume_s"] - resume["write_s"], resume_rss_mib=resume["peak_rss_mib"],
        output_mib=output.stat().st_size / 2**20, annotations=len(coco["annotations"]),
        merge_s=merge["merge_s"], merge_rss_mib=merge["peak_rss_mib"],
        merge_identical=(work / "merged.json").read_bytes() == output.read_bytes(),
    )
    del coco
    if not features:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
    feats = measure("features", images, work)
    row.update(features_s=feats["features_s"], features_ms_per_mask=1000 * feats["features_s"] / max(row["annotations"], 1),
               features_rss_mib=feats["peak_rss_mib"])
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def print_table(rows: list[dict]) -> None:
    cols = [("n", "N"), ("run_ms_per_item", "ms/item"), ("run_rss_mib", "run RSS MiB"), ("journal_mib", "journal MiB"),
            ("replay_s", "replay s"), ("write_s", "final write s"),
            ("resume_rss_mib", "resume RSS MiB"), ("merge_s", "merge 8 s"), ("merge_rss_mib", "merge RSS MiB"),
            ("output_mib", "output MiB"), ("features_ms_per_mask", "features ms/mask"),
            ("features_rss_mib", "features RSS MiB")]
    print("| " + " | ".join(title for _, title in cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(f"{row[key]:.3g}" if isinstance(row.get(key), float) else str(row.get(key, "-"))
                                for key, _ in cols) + " |")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], Path(argv[2]), Path(argv[3]), Path(argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,5000,20000", help="comma-separated N (default: %(default)s)")
    parser.add_argument("--kmeans-rows", default="", help="comma-separated row counts for tools/benchmark_cluster.py "
                                                          "(default: none)")
    parser.add_argument("--no-features-at", default="", type=lambda text: {int(s) for s in text.split(",") if s},
                        help="comma-separated N at which the features stage is skipped (default: none)")
    parser.add_argument("--tmp", default=None, help="folder for the generated images and outputs (default: system temp)")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--images-at-scale", type=int, default=1_281_167,
                        help="extrapolate the in-memory COCO cost to this many images (default: %(default)s, "
                             "ImageNet-1k train, what CutLER runs MaskCut on)")
    parser.add_argument("--masks-per-image", type=float, default=3.0,
                        help="masks per image at that scale (default: %(default)s, CutLER's --N 3 at most)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    results: dict = {"cpu": cpu_name(), "cores": os.cpu_count(), "load_average_start": os.getloadavg(), "rows": []}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        results["baseline_rss_mib"] = round(measure("baseline", Path(tmp), Path(tmp))["peak_rss_mib"], 1)
        for n in sizes:
            row = bench_size(n, Path(tmp), features=n not in args.no_features_at)
            print(json.dumps(row), flush=True)
            results["rows"].append(row)
    results["kmeans"] = []
    for rows in [int(r) for r in args.kmeans_rows.split(",") if r]:
        cmd = [sys.executable, str(HERE.with_name("benchmark_cluster.py")), "--rows", str(rows)]
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=str(HERE.parents[1])))
        km = json.loads(proc.stdout)
        print(json.dumps(km), flush=True)
        results["kmeans"].append(km)
    per_image = coco_memory_per_image()
    # Per mask (the image's own entry is small beside its masks' RLE), then at --masks-per-image.
    masks = args.images_at_scale * args.masks_per_image
    results["at_scale"] = dict(per_image, images=args.images_at_scale, masks=masks, **{
        f"{name}_gib": round(per_image[f"{name}_bytes_per_image"] / per_image["masks_per_image"] * masks / 2**30, 2)
        for name in ("journal", "records", "final_dict", "output")})
    print(json.dumps(results["at_scale"]), flush=True)
    results["load_average_end"] = os.getloadavg()
    print(f"CPU: {results['cpu']} ({results['cores']} cores); load average {results['load_average_start']} at the "
          f"start, {results['load_average_end']} at the end; baseline RSS {results['baseline_rss_mib']} MiB")
    print_table(results["rows"])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
