"""MaskFormer end to end: config keys, official state-dict layout, task outputs, checkpoints."""

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Instances

import seg_suite.modeling  # noqa: F401  (registers the components)
from seg_suite.config import add_seg_suite_config
from seg_suite.errors import MissingWeightsError, UserError
from seg_suite.modeling import MaskFormerCheckpointer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _cfg():
    cfg = get_cfg()
    add_seg_suite_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def tiny_cfg(num_classes=4, queries=6, dec_layers=3):
    cfg = _cfg()
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = num_classes
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 32
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 32
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 1
    cfg.MODEL.MASK_FORMER.HIDDEN_DIM = 32
    cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 64
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = queries
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = dec_layers
    cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS = 64
    cfg.DATASETS.TRAIN = ()
    return cfg


def _input(h=64, w=96, train=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    item = {"image": torch.rand(3, h, w, generator=g) * 255, "height": h // 2, "width": w // 2}
    if train:
        inst = Instances((h, w))
        masks = torch.zeros(2, h, w, dtype=torch.bool)
        masks[0, 5:30, 10:40] = True
        masks[1, 30:60, 50:90] = True
        inst.gt_masks = masks
        inst.gt_classes = torch.tensor([0, 3])
        item["instances"] = inst
    return item


def test_every_official_config_key_exists():
    keys = json.loads((FIXTURES / "mask2former_official_config_keys.json").read_text())["keys"]
    cfg = _cfg()
    missing = []
    for key in keys:
        node = cfg
        for part in key.split("."):
            if part not in node:
                missing.append(key)
                break
            node = node[part]
    assert missing == []


def test_defaults_are_the_official_yaml_values():
    mf = _cfg().MODEL.MASK_FORMER
    cfg = _cfg()
    assert (mf.NUM_OBJECT_QUERIES, mf.DIM_FEEDFORWARD, mf.DEC_LAYERS, mf.DROPOUT) == (100, 2048, 10, 0.0)
    assert (mf.CLASS_WEIGHT, mf.MASK_WEIGHT, mf.DICE_WEIGHT, mf.NO_OBJECT_WEIGHT) == (2.0, 5.0, 5.0, 0.1)
    assert (mf.TRAIN_NUM_POINTS, mf.OVERSAMPLE_RATIO, mf.IMPORTANCE_SAMPLE_RATIO) == (12544, 3.0, 0.75)
    assert (mf.TEST.OBJECT_MASK_THRESHOLD, mf.TEST.OVERLAP_THRESHOLD) == (0.8, 0.8)
    s = cfg.SOLVER
    assert (s.OPTIMIZER, s.BASE_LR, s.WEIGHT_DECAY, s.BACKBONE_MULTIPLIER) == ("ADAMW", 1e-4, 0.05, 0.1)
    assert (s.CLIP_GRADIENTS.ENABLED, s.CLIP_GRADIENTS.CLIP_TYPE, s.CLIP_GRADIENTS.CLIP_VALUE) == (
        True, "full_model", 0.01)
    assert cfg.SOLVER.POLY_LR_POWER == 0.9 and cfg.MODEL.MASK_FORMER.DROPLOSS_IOU == 0.0


def test_state_dict_equals_official_r50_panoptic_layout():
    official = json.loads((FIXTURES / "mask2former_r50_panoptic_keys.json").read_text())["keys"]
    model = build_model(_cfg())
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == official
    # An official-format state dict (same names and shapes, other values) loads strictly.
    g = torch.Generator().manual_seed(0)
    foreign = {k: torch.randn(shape, generator=g) if shape else torch.tensor(1.0) for k, shape in official.items()}
    foreign = {k: v.to(model.state_dict()[k].dtype) for k, v in foreign.items()}
    result = model.load_state_dict(foreign, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    key = "sem_seg_head.predictor.query_feat.weight"
    assert torch.equal(model.state_dict()[key], foreign[key])


def test_training_losses_and_gradients():
    torch.manual_seed(0)
    model = build_model(tiny_cfg()).train()
    losses = model([_input(seed=0), _input(seed=1)])
    names = {f"loss_{n}" for n in ("ce", "mask", "dice")}
    names |= {f"{n}_{i}" for n in names for i in range(2)}
    assert set(losses) == names
    total = sum(losses.values())
    total.backward()
    for name in ("sem_seg_head.predictor.query_feat.weight", "sem_seg_head.pixel_decoder.mask_features.weight",
                 "backbone.res4.0.conv1.weight",
                 # zero-initialised (Deformable DETR), so only its gradient can move it
                 "sem_seg_head.pixel_decoder.transformer.encoder.layers.0.self_attn.sampling_offsets.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_inference_outputs_for_all_three_tasks():
    torch.manual_seed(0)
    model = build_model(tiny_cfg()).eval()
    with torch.no_grad():
        out = model([_input(train=False), _input(h=50, w=70, train=False, seed=3)])
    assert len(out) == 2
    first = out[0]
    assert set(first) == {"sem_seg", "panoptic_seg", "instances"}
    assert first["sem_seg"].shape == (4, 32, 48)  # resized to the requested height/width
    seg, info = first["panoptic_seg"]
    assert seg.shape == (32, 48) and seg.dtype == torch.int32
    assert set(torch.unique(seg).tolist()) <= {0} | {s["id"] for s in info}
    inst = first["instances"]
    assert inst.image_size == (32, 48)
    assert len(inst) == 6 * 4  # min(TEST.DETECTIONS_PER_IMAGE = 100, queries x classes)
    assert inst.pred_boxes.tensor.shape == (24, 4) and inst.scores.shape == (24,)
    assert inst.pred_masks.shape == (len(inst), 32, 48)
    assert out[1]["sem_seg"].shape == (4, 25, 35)


def test_checkpointer_loads_model_zoo_pickle_and_refuses_code(tmp_path):
    model = build_model(tiny_cfg())
    state = {k: v.numpy().copy() + 1.0 if v.is_floating_point() else v.numpy().copy()
             for k, v in model.state_dict().items()}
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"model": state, "__author__": "test"}, fh)
    fresh = build_model(tiny_cfg())
    MaskFormerCheckpointer(fresh).load(str(path))
    key = "sem_seg_head.predictor.class_embed.weight"
    np.testing.assert_array_equal(fresh.state_dict()[key].numpy(), state[key])

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pkl"
    with open(evil, "wb") as fh:
        pickle.dump({"model": {"x": Evil()}, "__author__": "x"}, fh)
    with pytest.raises(UserError, match="refused global"):
        MaskFormerCheckpointer(fresh).load(str(evil))
    with pytest.raises(MissingWeightsError, match="R-50.pkl"):
        MaskFormerCheckpointer(fresh).load("detectron2://ImageNetPretrained/torchvision/R-50.pkl")
    with pytest.raises(MissingWeightsError, match="not found"):
        MaskFormerCheckpointer(fresh).load(str(tmp_path / "absent.pth"))


def test_checkpointer_keeps_backbone_name_matching(tmp_path):
    # ImageNet backbone files name weights without the "backbone.bottom_up." style prefix;
    # detectron2's matching heuristics map them onto the model, and must still do so.
    model = build_model(tiny_cfg())
    weight = model.state_dict()["backbone.res2.0.conv1.weight"]
    bare = {"res2.0.conv1.weight": (weight.numpy() * 0 + 0.5)}
    path = tmp_path / "backbone.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"model": bare, "__author__": "torchvision", "matching_heuristics": True}, fh)
    MaskFormerCheckpointer(model).load(str(path))
    assert torch.all(model.state_dict()["backbone.res2.0.conv1.weight"] == 0.5)


def test_checkpointer_resume_roundtrip(tmp_path):
    model = build_model(tiny_cfg())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    sum(model([_input()]).values()).backward()
    opt.step()
    ckpt = MaskFormerCheckpointer(model, str(tmp_path), optimizer=opt)
    ckpt.save("model_0000001", iteration=1)
    fresh = build_model(tiny_cfg())
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-4)
    extra = MaskFormerCheckpointer(fresh, str(tmp_path), optimizer=fresh_opt).resume_or_load("", resume=True)
    assert extra["iteration"] == 1
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
    assert fresh_opt.state_dict()["state"].keys() == opt.state_dict()["state"].keys()
