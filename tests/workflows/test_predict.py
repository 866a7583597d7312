"""PredictJob (seg_suite.workflows.predict) through the one runner: files, sharding and resume."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seg_suite.pseudo.inputs import discover_inputs
from seg_suite.pseudo.runner import merge_outputs, run_job
from seg_suite.pseudo.shards import ShardSpec
from seg_suite.workflows.predict import RECORD, PredictJob, predict_folder

CATEGORIES = [{"id": 7, "name": "thing", "isthing": 1}, {"id": 9, "name": "stuff", "isthing": 0}]


class FakePredictor:
    """The output dict of a MaskFormer, computed from the image: a bright-pixel thing on stuff."""

    def __init__(self, stop_after: int | None = None):
        self.calls = 0
        self.stop_after = stop_after

    def describe(self) -> dict:
        return {"weights": "fake.pth", "config_sha256": "0" * 64}

    def __call__(self, image: np.ndarray) -> dict:
        from detectron2.structures import Instances

        if self.stop_after is not None and self.calls >= self.stop_after:
            raise KeyboardInterrupt
        self.calls += 1
        h, w = image.shape[:2]
        bright = torch.as_tensor(image[:, :, 0] > 128)
        sem = torch.stack([bright.float(), (~bright).float()])
        ids = torch.where(bright, 1, 2).to(torch.int32)
        segments = [{"id": 1, "category_id": 0, "isthing": True}, {"id": 2, "category_id": 1, "isthing": False}]
        inst = Instances((h, w), pred_masks=bright[None], scores=torch.tensor([0.5 + image.mean() / 1000.0]),
                         pred_classes=torch.tensor([0]))
        return {"sem_seg": sem, "panoptic_seg": (ids, segments), "instances": inst}


@pytest.fixture
def images(tmp_path, write_image) -> Path:
    rng = np.random.default_rng(0)
    for i in range(5):
        write_image(tmp_path / "images" / f"img_{i}.png", rng.integers(0, 256, (12 + i, 16, 3), dtype=np.uint8))
    return tmp_path / "images"


def _files(out: Path) -> dict:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and (p.suffix == ".png" or p.name in ("panoptic.json", "instances.json"))}


def test_predict_folder_writes_panoptic_semantic_and_instances(images, tmp_path):
    out = tmp_path / "pred"
    counts = predict_folder(FakePredictor(), images, out, CATEGORIES, progress=False)
    assert counts == {"images": 5, "segments": 10, "instances": 5}
    pan = json.loads((out / "panoptic.json").read_text())
    assert [img["id"] for img in pan["images"]] == [1, 2, 3, 4, 5]
    assert pan["annotations"][0]["file_name"] == "img_0.png"
    assert [s["category_id"] for s in pan["annotations"][0]["segments_info"]] == [7, 9]
    inst = json.loads((out / "instances.json").read_text())
    assert [a["id"] for a in inst["annotations"]] == [1, 2, 3, 4, 5] and inst["categories"] == CATEGORIES[:1]
    assert len(list((out / "semantic").glob("*.png"))) == 5 and len(list((out / "panoptic").glob("*.png"))) == 5
    record = json.loads((out / RECORD).read_text())
    assert record["counts"] == counts and record["info"]["params"]["model"]["weights"] == "fake.pth"


def test_two_shards_and_merge_equal_one_run(images, tmp_path):
    whole = tmp_path / "whole"
    predict_folder(FakePredictor(), images, whole, CATEGORIES, progress=False)
    sharded = tmp_path / "sharded"
    items = discover_inputs(images)
    for shard_id in range(2):
        run_job(PredictJob(sharded, CATEGORIES, FakePredictor()), items, sharded / RECORD,
                shard=ShardSpec(2, shard_id), progress=False)
    assert not (sharded / "instances.json").exists()  # only merging assembles the outputs
    merge_outputs(sorted(sharded.glob("predict.shard-*.json")), sharded / RECORD)
    assert _files(sharded) == _files(whole) and len(_files(whole)) == 12
    assert json.loads((sharded / RECORD).read_text())["counts"] == json.loads((whole / RECORD).read_text())["counts"]


def test_an_interrupted_run_resumes_from_its_journal(images, tmp_path):
    whole = tmp_path / "whole"
    predict_folder(FakePredictor(), images, whole, CATEGORIES, progress=False)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        predict_folder(FakePredictor(stop_after=3), images, out, CATEGORIES, progress=False)
    assert (out / "predict.journal.jsonl").is_file() and not (out / "instances.json").exists()
    second = FakePredictor()
    counts = predict_folder(second, images, out, CATEGORIES, progress=False, resume=True)
    assert second.calls == 2 and counts["images"] == 5
    assert _files(out) == _files(whole)
    # A finished run is left alone on resume.
    third = FakePredictor()
    assert predict_folder(third, images, out, CATEGORIES, progress=False, resume=True) == counts
    assert third.calls == 0
