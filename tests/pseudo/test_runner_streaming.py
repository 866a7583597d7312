"""The streamed final write of COCO jobs (runs, resumes, merges) equals the in-memory one, byte for byte."""

import json

import numpy as np
import pytest
from runner_jobs import BrightObjectsJob

from seg_suite.errors import UserError
from seg_suite.io.files import atomic_write_json
from seg_suite.pseudo.inputs import discover_inputs
from seg_suite.pseudo.jobs import CocoMaskJob, Job
from seg_suite.pseudo.runner import ShardSpec, merge_outputs, run_job


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


class StreamedBright(BrightObjectsJob):
    """The runner tests' job with the default write_output, so that its COCO file is streamed."""

    write_output = Job.write_output
    stop_at_write = False

    def write_records(self, path, records, info):
        if self.stop_at_write:
            raise KeyboardInterrupt
        super().write_records(path, records, info)


def test_streamed_runs_resume_and_merge_equal_one_run(bright_images, tmp_path):
    root, _ = bright_images
    items = discover_inputs(root)
    whole = tmp_path / "whole.json"
    run_job(StreamedBright(), items, whole, batch_size=2, progress=False)

    stopping = StreamedBright()
    stopping.stop_at_write = True
    stopped = tmp_path / "resumed.json"
    with pytest.raises(KeyboardInterrupt):  # every item journaled, the final write not done
        run_job(stopping, items, stopped, batch_size=2, progress=False)
    summary = run_job(StreamedBright(), items, stopped, batch_size=2, resume=True, progress=False)
    assert summary.num_processed == 0 and stopped.read_bytes() == whole.read_bytes()

    sharded = tmp_path / "out" / "sharded.json"
    for sid in range(3):
        run_job(StreamedBright(), items, sharded, shard=ShardSpec(3, sid), batch_size=2, progress=False)
    shards = sorted(sharded.parent.glob("sharded.shard-*.json"))
    merged = tmp_path / "out" / "merged.json"
    with pytest.raises(UserError, match="missing shard"):
        merge_outputs(shards[:2], merged, resolver=lambda _: StreamedBright)
    merge_outputs(shards[::-1], merged, resolver=lambda _: StreamedBright)
    assert merged.read_bytes() == whole.read_bytes()
    # the records' temporary file is gone, after a refusal and after success
    assert sorted(p.name for p in merged.parent.iterdir()) == sorted(
        [p.name for p in shards] + ["merged.json", "merged.failures.jsonl"]
        + [p.name for p in sharded.parent.glob("sharded.*.jsonl")])
