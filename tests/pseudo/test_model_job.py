"""ModelJob: the weights' record is the file's name and real SHA-256, hashed once; heavy state stays home."""
import hashlib
import pickle

from seg_suite.pseudo import model_job
from seg_suite.pseudo.model_job import ModelJob


class _TinyJob(ModelJob):
    heavy_attrs = ("model",)

    def __init__(self, weights):
        self.weights = weights
        self.model = None

    def params(self):
        return {"weights": self.weights_file_record(self.weights)}

    def prepare(self, item):
        return item

    def process(self, batch):
        return batch

    def finalize(self, records, info):
        return records


def test_weights_record_is_name_and_sha256(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"some weights")
    record = _TinyJob(path).params()["weights"]
    assert record == {"file": "w.pth", "sha256": hashlib.sha256(b"some weights").hexdigest()}


def test_weights_hashed_once(tmp_path, monkeypatch):
    path = tmp_path / "w.pth"
    path.write_bytes(b"x")
    calls = []
    real = model_job.file_sha256
    monkeypatch.setattr(model_job, "file_sha256", lambda p: calls.append(p) or real(p))
    job = _TinyJob(path)
    first = job.params()
    path.write_bytes(b"changed")  # a cached record does not read the file again
    assert job.params() == first
    assert calls == [path]


def test_pickled_job_keeps_record_but_not_model(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"y")
    job = _TinyJob(path)
    job.params()
    job.model = object()
    copy = pickle.loads(pickle.dumps(job))
    assert copy.model is None
    assert copy._weights_record == {"file": "w.pth", "sha256": hashlib.sha256(b"y").hexdigest()}


def test_model_device_resolves_and_refuses_missing_cuda(tmp_path, monkeypatch):
    import pytest
    import torch

    from seg_suite.errors import UserError

    job = _TinyJob(tmp_path / "w.pth")
    assert job.model_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    job.device = "cuda"
    with pytest.raises(UserError, match="CUDA is not available"):
        job.model_device()


def test_read_named_coco_indexes_by_file_name(tmp_path):
    import json

    import pytest

    from seg_suite.errors import UserError
    from seg_suite.io.coco import images_by_name, read_named_coco

    seg = {"size": [2, 2], "counts": "04"}
    coco = {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
            "annotations": [{"id": 5, "image_id": 2, "segmentation": seg}, {"id": 6, "image_id": 2, "segmentation": seg}]}
    path = tmp_path / "in.json"
    path.write_text(json.dumps(coco))
    index = images_by_name(read_named_coco(path, "input file"))
    assert list(index) == ["a.png", "b.png"]
    assert index["a.png"] == (coco["images"][0], [])
    assert [a["id"] for a in index["b.png"][1]] == [5, 6]
    coco["images"][1]["file_name"] = "a.png"
    path.write_text(json.dumps(coco))
    with pytest.raises(UserError, match="appears twice"):
        read_named_coco(path, "input file")
