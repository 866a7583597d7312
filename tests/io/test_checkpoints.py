"""seg_suite.io.checkpoints: safe loading of .pth and detectron2-style .pkl weight files."""

from __future__ import annotations

import collections
import os
import pickle

import numpy as np
import pytest
import torch

from seg_suite.errors import MissingWeightsError, UserError
from seg_suite.io.checkpoints import (
    RestrictedUnpickler,
    load_checkpoint,
    load_state_dict,
    strip_prefixes,
    unwrap_state_dict,
)


class _SystemCall:
    """Unpickling this runs os.system(command): what a malicious checkpoint would do."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, suffix):
    marker = tmp_path / "pwned"
    payload = {"model": {"w": [0.0, 1.0]}, "evil": _SystemCall(f"touch {marker}")}
    path = tmp_path / f"evil{suffix}"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(UserError) as err:
        load_checkpoint(path)
    assert "system" in str(err.value)  # the refused global is named (posix.system / nt.system)
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_restricted_unpickler_names_refused_global(tmp_path):
    data = pickle.dumps(collections.Counter("aab"))
    with pytest.raises(pickle.UnpicklingError, match="collections.Counter"):
        RestrictedUnpickler(__import__("io").BytesIO(data)).load()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_detectron2_style_pkl_loads(tmp_path, protocol):
    weights = collections.OrderedDict(
        [("stem.conv1.weight", np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)),
         ("res2.0.bn.num_batches", np.int64(7)),
         ("res2.0.conv.bias", np.array([1.5, -2.0], dtype=np.float64))]
    )
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps({"model": weights, "__author__": "Detectron", "matching_heuristics": True},
                                  protocol=protocol))
    raw = load_checkpoint(path)
    assert raw["__author__"] == "Detectron"
    sd = load_state_dict(path)
    assert list(sd) == list(weights)
    for k, v in weights.items():
        assert isinstance(sd[k], torch.Tensor)
        np.testing.assert_array_equal(sd[k].numpy(), np.asarray(v))
        assert sd[k].dtype == torch.from_numpy(np.asarray(v)).dtype


def test_pth_roundtrip_and_nesting(tmp_path):
    sd = {"a.weight": torch.randn(3, 4), "a.bias": torch.arange(3)}
    path = tmp_path / "plain.pth"
    torch.save(sd, path)
    loaded = load_state_dict(path)
    assert loaded.keys() == sd.keys()
    for k in sd:
        assert torch.equal(loaded[k], sd[k])

    # A DINO training checkpoint: the teacher is chosen by default, the student when asked.
    teacher = {"backbone.x": torch.ones(2)}
    student = {"module.backbone.x": torch.zeros(2)}
    full = tmp_path / "full.pth"
    torch.save({"student": student, "teacher": teacher, "epoch": 100, "optimizer": {"state": {}}}, full)
    assert torch.equal(load_state_dict(full)["backbone.x"], torch.ones(2))
    assert torch.equal(load_state_dict(full, nesting=("student",))["module.backbone.x"], torch.zeros(2))


def test_unwrap_and_strip_helpers():
    nested = {"state_dict": {"model": {"w": torch.ones(1), "note": "text"}}}
    assert list(unwrap_state_dict(nested)) == ["w"]
    with pytest.raises(UserError, match="no weights"):
        unwrap_state_dict({"epoch": 3})
    out = strip_prefixes({"module.backbone.blocks.0.w": 1, "norm.w": 2}, ("module.", "backbone."))
    assert out == {"blocks.0.w": 1, "norm.w": 2}


def test_missing_corrupt_and_unknown_files(tmp_path):
    with pytest.raises(MissingWeightsError, match="nope.pth"):
        load_state_dict(tmp_path / "nope.pth")
    bad = tmp_path / "truncated.pth"
    good = tmp_path / "good.pth"
    torch.save({"w": torch.randn(64, 64)}, good)
    bad.write_bytes(good.read_bytes()[:100])
    with pytest.raises(UserError, match="truncated.pth"):
        load_state_dict(bad)
    badpkl = tmp_path / "cut.pkl"
    badpkl.write_bytes(pickle.dumps({"w": np.zeros(10)})[:20])
    with pytest.raises(UserError, match="cut.pkl"):
        load_state_dict(badpkl)
    odd = tmp_path / "weights.npz"
    odd.write_bytes(b"x")
    with pytest.raises(UserError, match="unknown checkpoint suffix"):
        load_state_dict(odd)
