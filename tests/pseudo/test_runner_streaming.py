"""The streamed final write of COCO jobs equals the in-memory one, byte for byte."""

import json

import numpy as np

from seg_suite.io.files import atomic_write_json
from seg_suite.pseudo.jobs import CocoMaskJob


class Coco(CocoMaskJob):
    def params(self):
        return {}

    def prepare(self, item):
        return item

    def process(self, batch):
        return batch


class CocoWithOwnFinalize(Coco):
    def finalize(self, records, info):
        out = super().finalize(records, info)
        out["extra"] = len(records)
        return out


def records():
    mask = np.zeros((6, 9), bool)
    mask[1:4, 2:7] = True
    ann = CocoMaskJob.mask_annotation(mask, 0.75)
    return [
        {"images": [{"file_name": "a/ä ü.png", "width": 9, "height": 6}], "annotations": [[ann, dict(ann, score=0.5)]]},
        {"images": [{"file_name": "b.png", "width": 9, "height": 6}], "annotations": [[]]},
        {"images": [{"file_name": "v/0.jpg", "width": 9, "height": 6}, {"file_name": "v/1.jpg", "width": 9, "height": 6}],
         "annotations": [[dict(ann, category_id=3, iscrowd=1)], [ann]]},
    ]


def test_streamed_coco_file_is_the_in_memory_one(tmp_path):
    info = {"job": "x", "params": {"name": "ünïcode", "nan": float("nan")}}
    for job in (Coco(), CocoWithOwnFinalize()):
        for recs in (records(), []):
            calls = []

            def again(recs=recs):
                calls.append(1)
                return iter(json.loads(json.dumps(recs)))

            atomic_write_json(tmp_path / "memory.json", job.finalize(json.loads(json.dumps(recs)), info))
            job.write_records(tmp_path / "streamed.json", again, info)
            assert (tmp_path / "streamed.json").read_bytes() == (tmp_path / "memory.json").read_bytes()
            # Two passes for a plain COCO job (images, then annotations); one list otherwise.
            assert len(calls) == (2 if type(job) is Coco else 1)
    coco = json.loads((tmp_path / "streamed.json").read_text())
    assert coco["extra"] == 0 and coco["images"] == [] and coco["annotations"] == []
