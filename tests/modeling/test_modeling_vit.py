"""Plain-ViT backbone (seg_suite.features) with a simple feature pyramid, alone and in MaskFormer."""

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Instances

import seg_suite.modeling  # noqa: F401
from seg_suite.config import add_seg_suite_config
from seg_suite.features import build_extractor
from seg_suite.modeling.backbone.vit import ViTSimpleFeaturePyramid


def _pyramid(name, freeze=False):
    ext = build_extractor(name, random_init=True, depth=2)
    return ViTSimpleFeaturePyramid(ext, out_channels=32, freeze=freeze)


@pytest.mark.parametrize("name,patch", [("dino_vits16", 16), ("dino_vits8", 8), ("dinov2_vits14", 14)])
def test_pyramid_shapes_and_strides(name, patch):
    backbone = _pyramid(name)
    shapes = backbone.output_shape()
    assert {k: v.stride for k, v in shapes.items()} == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    div = backbone.size_divisibility
    assert div % 32 == 0 and div % patch == 0
    x = torch.randn(1, 3, div, 2 * div)
    out = backbone(x)
    for k, v in out.items():
        s = shapes[k].stride
        assert v.shape == (1, 32, div // s, 2 * div // s), k


def test_pyramid_stride8_level_is_the_token_map_for_patch8():
    # For a patch-8 ViT the stride-8 level is conv(conv(tokens)): checked against the block output.
    backbone = _pyramid("dino_vits8").eval()
    x = torch.randn(1, 3, 64, 64)
    tokens = backbone.vit.forward_layers(x, [-1])[0]
    expected = backbone.stages["res3"](tokens)
    torch.testing.assert_close(backbone(x)["res3"], expected)


@pytest.mark.parametrize("freeze", [False, True])
def test_gradients_reach_the_vit_unless_frozen(freeze):
    backbone = _pyramid("dino_vits16", freeze=freeze)
    out = backbone(torch.randn(1, 3, 64, 64))
    sum(v.sum() for v in out.values()).backward()
    vit_grad = backbone.vit.patch_embed.proj.weight.grad
    if freeze:
        assert vit_grad is None
    else:
        assert vit_grad is not None and vit_grad.abs().sum() > 0
    assert backbone.stages["res5"][-1].weight.grad.abs().sum() > 0


def _vit_cfg(weights=""):
    cfg = get_cfg()
    add_seg_suite_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "build_vit_sfp_backbone"
    cfg.MODEL.VIT.NAME = "dino_vits16"
    cfg.MODEL.VIT.DEPTH = 2
    cfg.MODEL.VIT.RANDOM_INIT = not weights
    cfg.MODEL.VIT.WEIGHTS = weights
    cfg.MODEL.VIT.OUT_CHANNELS = 32
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 1  # class-agnostic pseudo-mask training
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 32
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 32
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 1
    cfg.MODEL.MASK_FORMER.HIDDEN_DIM = 32
    cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 64
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 5
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 2
    cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS = 64
    cfg.DATASETS.TRAIN = ()
    return cfg


def test_maskformer_with_dino_checkpoint(tmp_path):
    # A DINO-format checkpoint (official key names, saved by torch) initialises the backbone.
    source = build_extractor("dino_vits16", random_init=True, depth=2, seed=7)
    path = tmp_path / "dino_small_depth2.pth"
    torch.save(source.state_dict(), path)
    model = build_model(_vit_cfg(str(path)))
    for key, value in source.state_dict().items():
        assert torch.equal(model.backbone.vit.state_dict()[key], value), key
    assert model.size_divisibility == 32
    model.train()
    inst = Instances((64, 64))
    inst.gt_masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    inst.gt_masks[0, 10:40, 20:50] = True
    inst.gt_classes = torch.tensor([0])
    losses = model([{"image": torch.rand(3, 64, 64) * 255, "instances": inst}])
    sum(losses.values()).backward()
    assert model.backbone.vit.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 60, 70) * 255}])[0]
    assert out["sem_seg"].shape == (1, 60, 70)
