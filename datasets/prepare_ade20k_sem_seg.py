#!/usr/bin/env python
"""ADE20K-150 labels in detectron2's convention, as ``ade20k_sem_seg_{train,val}`` read them.

The ADEChallengeData2016 PNGs store 0 for "other" and 1..150 for the classes. This writes
``annotations_detectron2/{training,validation}/*.png`` with 0..149 for the classes and 255 for
"other" (ignored), the same mapping as Mask2Former's ``datasets/prepare_ade20k_sem_seg.py``.

    python datasets/prepare_ade20k_sem_seg.py          # $DETECTRON2_DATASETS/ADEChallengeData2016
    python datasets/prepare_ade20k_sem_seg.py --root /data
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from seg_suite.io.files import atomic_write_png


def convert_label(label: np.ndarray) -> np.ndarray:
    """ADE20K label (0 = other, 1..150) -> detectron2 label (0..149, 255 = ignore)."""
    if label.dtype != np.uint8:
        raise ValueError(f"ADE20K labels are uint8, got {label.dtype}")
    return (label.astype(np.int16) - 1).astype(np.uint8)  # 0 - 1 wraps to 255


def convert_dir(src: Path, dst: Path, progress: bool = True) -> int:
    files = sorted(p for p in src.iterdir() if p.suffix.lower() == ".png")
    for path in tqdm(files, desc=src.name, disable=not progress):
        with Image.open(path) as im:
            atomic_write_png(dst / path.name, convert_label(np.asarray(im)))
    return len(files)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=os.getenv("DETECTRON2_DATASETS", "datasets"),
                        help="datasets root holding ADEChallengeData2016/ (default: $DETECTRON2_DATASETS, "
                             "else 'datasets', detectron2's convention)")
    args = parser.parse_args(argv)
    base = Path(args.root) / "ADEChallengeData2016"
    for split in ("training", "validation"):
        src = base / "annotations" / split
        if not src.is_dir():
            print(f"error: {src} not found (see datasets/README.md for the ADE20K layout)", file=sys.stderr)
            return 2
        n = convert_dir(src, base / "annotations_detectron2" / split)
        print(f"{split}: wrote {n} label maps to {base / 'annotations_detectron2' / split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
