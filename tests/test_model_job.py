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
