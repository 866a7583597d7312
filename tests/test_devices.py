"""One device rule for every command: a CUDA device on a machine without CUDA is one line, exit 2.

CUDA is hidden with a monkeypatch, so the rule is checked the same way on machines with and
without a GPU; each command gets inputs valid enough to reach the point where it needs its device.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from seg_suite.cli import main as cli_main
from seg_suite.devices import local_device, resolve_device
from seg_suite.errors import UserError
from seg_suite.io.masks import mask_to_rle


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def inputs(tmp_path, write_image):
    image = np.full((32, 48, 3), 30, np.uint8)
    image[8:20, 10:30] = 200
    write_image(tmp_path / "images" / "a.png", image)
    mask = np.zeros((32, 48), bool)
    mask[8:20, 10:30] = True
    coco = {"images": [{"id": 1, "file_name": "a.png", "height": 32, "width": 48}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": mask_to_rle(mask),
                             "bbox": [10, 8, 20, 12], "area": 240, "iscrowd": 0, "score": 1.0}],
            "categories": [{"id": 1, "name": "object"}]}
    (tmp_path / "masks.json").write_text(json.dumps(coco))
    videos = tmp_path / "videos" / "seq"
    for i in range(3):
        write_image(videos / f"{i:05d}.png", np.roll(image, 2 * i, axis=1))
    return tmp_path


COMMANDS = {
    "maskcut": lambda d: ["maskcut", "--input", f"{d}/images", "--output", f"{d}/out/m.json",
                          "--backbone", "handcrafted"],
    "cluster": lambda d: ["cluster", "--input", f"{d}/masks.json", "--images", f"{d}/images",
                          "--output", f"{d}/out/c.json", "--backbone", "handcrafted"],
    "semantic-pseudo": lambda d: ["semantic-pseudo", "--input", f"{d}/images", "--output", f"{d}/out/s",
                                  "--backbone", "handcrafted"],
    "sam-masks": lambda d: ["sam-masks", "--input", f"{d}/images", "--output", f"{d}/out/sam.json", "--random-init"],
    "refine": lambda d: ["refine", "--input", f"{d}/masks.json", "--images", f"{d}/images",
                         "--output", f"{d}/out/r.json", "--random-init"],
    "motion-masks": lambda d: ["motion-masks", "--input", f"{d}/videos", "--output", f"{d}/out/v.json"],
    "train-motion": lambda d: ["train-motion", "--input", f"{d}/videos", "--output", f"{d}/out/rcf.pth"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_cuda_without_cuda_is_one_line_everywhere(command, inputs, no_cuda, capsys):
    code = cli_main(COMMANDS[command](inputs) + ["--device", "cuda"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: --device 'cuda' requested but CUDA is not available here"), err
    assert "Traceback" not in "\n".join(err)
    assert not (inputs / "out" / "m.json").exists()


def test_pipeline_refuses_cuda_before_any_stage(tmp_path, no_cuda, capsys):
    code = cli_main(["pipeline", "--output", str(tmp_path / "run"), "--device", "cuda", "--no-progress"])
    assert code == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not any((tmp_path / "run").glob("*/stage.json"))  # no stage ran


def test_resolve_device_rules(no_cuda, monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    for bad, fragment in [("gpu", "not a device"), ("meta", "unsupported"), ("cuda:0", "CUDA is not available")]:
        with pytest.raises(UserError, match=fragment):
            resolve_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(UserError, match="has 2 CUDA device"):
        resolve_device("cuda:2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert local_device("cuda") == "cuda:1" and local_device("cuda:0") == "cuda:0" and local_device("cpu") == "cpu"
