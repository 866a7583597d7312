"""A small real job for testing the runner without any model: bright-object pseudo-masks.

Each connected component of pixels whose grey level exceeds ``level`` becomes one mask
(score = the component's mean grey level / 255). On the test images (bright rectangles
on a dark background) the masks are exactly the rectangles, which the tests check.

``delay`` (seconds per item in process) and ``write_delay`` (a pause half-way through
writing the final file) only slow the job down so that tests can SIGKILL it at a chosen
point; they are execution settings and stay out of ``params()``.

Also runnable as a script (the child process the kill-and-resume tests kill).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from scipy import ndimage

from seg_suite.io.files import json_default, atomic_write
from seg_suite.io.images import load_image
from seg_suite.pseudo.runner import CocoMaskJob, ItemError


class BrightObjectsJob(CocoMaskJob):
    name = "bright-objects"

    def __init__(self, level: int = 128, min_area: int = 4, delay: float = 0.0, write_delay: float = 0.0):
        self.level, self.min_area = int(level), int(min_area)
        self.delay, self.write_delay = delay, write_delay

    def params(self) -> dict:
        return {"level": self.level, "min_area": self.min_area}

    @classmethod
    def from_params(cls, params: dict) -> "BrightObjectsJob":
        return cls(**params)

    def prepare(self, item):
        image = load_image(item.path)
        if min(image.shape[:2]) < 2:
            raise ItemError(f"image smaller than 2x2: {item.path}")
        return item.key, image

    def process(self, batch):
        records = []
        for key, image in batch:
            time.sleep(self.delay)
            labels, num = ndimage.label(image.mean(axis=2) > self.level)
            anns = []
            for label in range(1, num + 1):
                mask = labels == label
                if mask.sum() >= self.min_area:
                    anns.append(self.mask_annotation(mask, image[mask].mean() / 255.0))
            h, w = image.shape[:2]
            records.append({"images": [{"file_name": key, "width": w, "height": h}], "annotations": [anns]})
        return records

    def write_output(self, path, final):
        if not self.write_delay:
            return super().write_output(path, final)
        text = json.dumps(final, default=json_default)
        with atomic_write(path, "w") as fh:
            fh.write(text[: len(text) // 2])
            fh.flush()
            time.sleep(self.write_delay)
            fh.write(text[len(text) // 2 :])


def main(argv=None) -> int:
    from seg_suite.pseudo.inputs import discover_inputs
    from seg_suite.pseudo.runner import ShardSpec, run_job

    parser = argparse.ArgumentParser()
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--write-delay", type=float, default=0.0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--batch-size", type=int, default=1)
    args = parser.parse_args(argv)
    from runner_jobs import BrightObjectsJob as Job  # not __main__'s copy: the class path is recorded

    job = Job(delay=args.delay, write_delay=args.write_delay)
    run_job(job, discover_inputs(args.input), Path(args.output), shard=ShardSpec(), resume=args.resume,
            batch_size=args.batch_size, progress=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
