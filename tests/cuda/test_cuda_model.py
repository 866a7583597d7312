"""The Mask2Former train step with AMP, inference, and ``predict`` on CUDA (tiny synthetic config)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.engine import AMPTrainer
from detectron2.structures import Instances
from detectron2.utils.events import EventStorage

from seg_suite.engine.api import build_config
from seg_suite.engine.trainer import Trainer
from seg_suite.modeling import MaskFormerCheckpointer
from seg_suite.workflows.predict import PanopticPredictor, predict_folder

pytestmark = pytest.mark.cuda

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "synthetic" / "maskformer2_R50_tiny_cpu.yaml"


def cfg_on(device: str, amp: bool = False):
    return build_config(str(CONFIG), ["MODEL.DEVICE", device, "SOLVER.AMP.ENABLED", str(amp), "SOLVER.IMS_PER_BATCH",
                                      "2", "DATASETS.TRAIN", "()", "DATASETS.TEST", "()"])


def batch(device: str, size: int = 128) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(2):
        inst = Instances((size, size))
        masks = torch.zeros(2, size, size, dtype=torch.bool)
        masks[0, 10 + i:60, 10:70] = True
        masks[1, 70:120, 50 + i:110] = True
        inst.gt_masks, inst.gt_classes = masks.to(device), torch.tensor([0, 3], device=device)
        items.append({"image": (torch.rand(3, size, size, generator=g) * 255).to(device), "height": size,
                      "width": size, "instances": inst})
    return items


def test_amp_train_step_on_cuda():
    cfg = cfg_on("cuda", amp=True)
    torch.manual_seed(0)
    model = Trainer.build_model(cfg)
    assert next(model.parameters()).is_cuda
    optimizer = Trainer.build_optimizer(cfg, model)
    data = batch("cuda")
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainer = AMPTrainer(model, iter(lambda: data, None), optimizer)
    with EventStorage(0) as storage:
        for step in range(3):
            trainer.iter = step
            trainer.run_step()
        losses = storage.latest()
    assert np.isfinite(losses["total_loss"][0]) and losses["total_loss"][0] > 0
    assert np.isfinite(trainer.grad_scaler.get_scale())
    changed = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert len(changed) > 0.9 * len(before)
    assert all(torch.isfinite(v).all() for v in model.parameters())


def test_inference_on_cuda_equals_the_cpu(tmp_path):
    torch.manual_seed(0)
    cpu_model = Trainer.build_model(cfg_on("cpu")).eval()
    gpu_model = Trainer.build_model(cfg_on("cuda")).eval()
    gpu_model.load_state_dict(cpu_model.state_dict())
    image = batch("cpu")[0]["image"]
    with torch.no_grad():
        cpu_out = cpu_model([{"image": image, "height": 96, "width": 112}])[0]["instances"]
        gpu_out = gpu_model([{"image": image.cuda(), "height": 96, "width": 112}])[0]["instances"].to("cpu")
    assert gpu_out.pred_masks.shape == cpu_out.pred_masks.shape and gpu_out.image_size == (96, 112)
    torch.testing.assert_close(gpu_out.scores, cpu_out.scores, rtol=1e-3, atol=1e-4)
    assert torch.equal(gpu_out.pred_classes, cpu_out.pred_classes)
    agree = (gpu_out.pred_masks == cpu_out.pred_masks).float().mean()
    assert agree > 0.999


def test_predict_on_cuda_writes_the_cpu_instances(tmp_path, write_image):
    torch.manual_seed(0)
    weights = tmp_path / "model.pth"
    MaskFormerCheckpointer(Trainer.build_model(cfg_on("cpu")), str(tmp_path)).save("model")
    rng = np.random.default_rng(0)
    for i in range(2):
        write_image(tmp_path / "images" / f"{i}.png", rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    categories = [{"id": i + 1, "name": f"c{i}", "isthing": 1} for i in range(4)]
    found = {}
    for device in ("cpu", "cuda"):
        predictor = PanopticPredictor(cfg_on(device), weights)
        counts = predict_folder(predictor, tmp_path / "images", tmp_path / device, categories, progress=False)
        assert counts["images"] == 2
        found[device] = json.loads((tmp_path / device / "instances.json").read_text())["annotations"]
    assert len(found["cuda"]) == len(found["cpu"]) > 0
    for g, c in zip(found["cuda"], found["cpu"]):
        assert g["category_id"] == c["category_id"] and g["score"] == pytest.approx(c["score"], abs=1e-3)
