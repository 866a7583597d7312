"""Masks that claim to be huge, and a way to measure a command's peak memory: the shared pieces of
the tests that check a huge RLE is refused before it is decoded (tests/io/test_hostile_data.py,
tests/pseudo/test_sam.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from seg_suite.io.masks import _rle_counts_total, check_segmentation

HUGE = 60000  # an RLE claiming 60000 x 60000 pixels: 3.6 GB as a bool mask
MAX_RSS_KB = 1_500_000  # the commands run in ~0.7 GB; decoding the claimed mask needs 3.6 GB


def _counts_string(runs: list[int]) -> str:
    """COCO's compressed RLE string of ``runs`` (pycocotools' rleToString), for runs too long to make a mask of."""
    chars = []
    for i, x in enumerate(runs):
        if i > 2:
            x -= runs[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            chars.append(chr((c | 0x20 if more else c) + 48))
    return "".join(chars)


def huge_rle() -> dict:
    """A valid RLE of a 60000 x 60000 mask (all background) in a few bytes of JSON."""
    rle = {"size": [HUGE, HUGE], "counts": _counts_string([HUGE * HUGE])}
    assert _rle_counts_total(rle["counts"]) == HUGE * HUGE
    check_segmentation(rle, HUGE, HUGE, max_pixels=HUGE * HUGE)  # nothing wrong with it but its size
    return rle


MEASURE = ("import json, resource, subprocess, sys\n"
           "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
           "print(json.dumps({'rc': p.returncode, 'out': p.stdout, 'err': p.stderr,\n"
           "                  'maxrss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n")


def run_measured(argv: list[str], cwd: Path) -> dict:
    """Run ``argv`` in a fresh wrapper process; returns its exit code, output and peak RSS (KB) alone."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, "-c", MEASURE, *argv], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
