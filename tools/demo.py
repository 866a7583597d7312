"""The demo behind `make demo`: the main job on embedded synthetic data, no downloads.

    .venv/bin/python tools/demo.py --output demo_output

Steps (each prints the `seg-suite` command it runs, so they can be repeated by hand):
  1. make-synthetic   textured objects on textured backgrounds, with exact ground truth
  2. maskcut          MaskCut pseudo-masks on the validation images, with the weight-free
                      `handcrafted` backbone (a stand-in for DINO features)
  3. visualize        overlay PNGs of the pseudo-masks
  4. evaluate-masks   class-agnostic AP / AP50 / AR100 against the synthetic ground truth
  5. run u2seg       the U2Seg recipe with its smoke preset, on its own 32 + 16 synthetic images,
                      resumable (a rerun of the demo skips its finished stages): MaskCut on the train
                      images -> k-means into 8 thing clusters -> 3 stuff clusters -> panoptic
                      pseudo-labels -> 300 iterations of Mask2Former training (tiny CPU config) ->
                      predictions -> instance AP, Hungarian mIoU and PQ on val, the mapping fitted on
                      the train split. It prints its results table, then the demo its total time;
                      detectron2's log is in OUTPUT/u2seg/train.log.
  6. report           a static HTML report of the recipe run and of the MaskCut pseudo-masks
                      (OUTPUT/report/index.html), its path printed last
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from seg_suite.cli import main as seg_suite


def run(*argv: str) -> None:
    """Run one `seg-suite` command in this process, echoing it first; stop the demo if it fails."""
    print(f"\n$ seg-suite {shlex.join(argv)}", flush=True)
    code = seg_suite(list(argv))
    if code != 0:
        sys.exit(f"demo step failed (exit code {code}): seg-suite {shlex.join(argv)}")


def make_data(out: Path, args) -> None:
    run("make-synthetic", "--output", str(out / "synthetic"), "--seed", str(args.seed))


def maskcut(out: Path, args) -> None:
    run("maskcut", "--input", str(out / "synthetic" / "images" / "val"), "--output", str(out / "maskcut_val.json"),
        "--backbone", "handcrafted", "--device", args.device, "--overwrite")


def overlays(out: Path, args) -> None:
    run("visualize", "--input", str(out / "maskcut_val.json"),
        "--images", str(out / "synthetic" / "images" / "val"), "--output", str(out / "overlays"))


def evaluate(out: Path, args) -> None:
    run("evaluate-masks", "--pred", str(out / "maskcut_val.json"),
        "--gt", str(out / "synthetic" / "annotations" / "instances_val.json"),
        "--output", str(out / "maskcut_val_eval.json"))


def summary(out: Path, args) -> None:
    metrics = json.loads((out / "maskcut_val_eval.json").read_text())  # written by evaluate-masks
    print("\nMaskCut pseudo-masks (handcrafted features) vs synthetic ground truth, class-agnostic segm:")
    print(f"  AP {metrics['AP']:.1f}   AP50 {metrics['AP50']:.1f}   AR100 {metrics['AR100']:.1f}")
    print("\nOutputs:")
    print(f"  data         {out / 'synthetic'}")
    print(f"  pseudo-masks {out / 'maskcut_val.json'}   (failures: {out / 'maskcut_val.failures.jsonl'})")
    print(f"  overlays     {out / 'overlays'}")
    print(f"  metrics      {out / 'maskcut_val_eval.json'}")


def u2seg(out: Path, args) -> None:
    run("run", "u2seg", "--preset", "smoke", "--output", str(out / "u2seg"), "--device", args.device)


def report(out: Path, args) -> None:
    run("report", "--input", str(out / "u2seg"), str(out / "maskcut_val.json"),
        "--images", str(out / "synthetic" / "images" / "val"),
        "--gt", str(out / "synthetic" / "annotations" / "instances_val.json"), "--output", str(out / "report"))
    print(f"\nreport: open {(out / 'report' / 'index.html').resolve()} in a browser")


STEPS = [make_data, maskcut, overlays, evaluate, summary, u2seg, report]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="demo_output", help="folder for everything the demo writes "
                                                                "(default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic set of steps 1-4; the recipe run uses its preset's (default: %(default)s)")
    args = parser.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    for step in STEPS:
        step(out, args)
    print(f"\ndemo finished in {time.time() - started:.0f} s; outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
