"""The RCF segmenter: loss pieces against hand-computed values, MAA selection, training, export."""

import json
import math

import numpy as np
import pytest
import torch

from seg_suite.pseudo.motion.rcf_loss import crf_loss, entropy_loss, flow_loss, reconstruct_flow, segment_flow
from seg_suite.pseudo.motion.rcf_model import RCFNet


def piecewise_affine(h=16, w=20):
    ys = (torch.arange(h) + 0.5) / h * 2 - 1
    xs = (torch.arange(w) + 0.5) / w * 2 - 1
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    obj = torch.zeros(h, w, dtype=torch.bool)
    obj[4:10, 5:12] = True
    bg_flow = torch.stack([0.5 + 0.3 * x, -0.2 + 0.1 * y])
    ob_flow = torch.stack([3.0 - 1.0 * y, 1.0 + 0.5 * x])
    flow = torch.where(obj, ob_flow, bg_flow)[None]
    masks = torch.stack([(~obj).float(), obj.float()])[None]
    return flow, masks


def test_affine_segments_reconstruct_piecewise_affine_flow_exactly():
    flow, masks = piecewise_affine()
    rec = segment_flow(masks, flow, "affine", ridge=1e-9)
    assert torch.allclose(rec, flow, atol=1e-4)
    # One segment for everything cannot: the affine fit of the whole field leaves an error.
    assert (segment_flow(torch.ones_like(masks[:, :1]), flow) - flow).abs().mean() > 0.3
    # Translation per segment = the masked mean flow.
    rec_t = segment_flow(masks, flow, "translation", ridge=0)
    obj = masks[0, 1].bool()
    assert torch.allclose(rec_t[0, :, obj], flow[0, :, obj].mean(dim=1, keepdim=True).expand(-1, int(obj.sum())), atol=1e-4)


def test_residual_is_tanh_bounded_and_loss_uses_both_directions():
    flow, masks = piecewise_affine()
    residual = torch.full((1, 2, 2, 16, 20), 1e6)  # saturates tanh: +scale everywhere
    rec = reconstruct_flow(masks, flow, residual, scale=10.0, div=10.0)
    assert torch.allclose(rec - segment_flow(masks, flow), torch.full_like(rec, 10.0), atol=1e-3)
    out = {"residual_fw": torch.zeros(1, 2, 2, 16, 20), "residual_bw": torch.zeros(1, 2, 2, 16, 20)}
    assert flow_loss(out, masks, masks, flow, -flow).item() < 5e-3  # measured 1.6e-3: the 1e-3 ridge bias
    # Clamp at 20 (RCF clamp_flow_t): a 100 px flow is scored as 20 px.
    big = torch.full((1, 2, 16, 20), 100.0)
    uniform = torch.ones(1, 1, 16, 20)
    out1 = {"residual_fw": torch.zeros(1, 2, 1, 16, 20), "residual_bw": torch.zeros(1, 2, 1, 16, 20)}
    twenty = torch.full((1, 2, 16, 20), 20.0)
    assert flow_loss(out1, uniform, uniform, big, big).item() == flow_loss(out1, uniform, uniform, twenty, twenty).item()


def test_entropy_and_crf_loss_hand_values():
    assert entropy_loss(torch.full((2, 4, 3, 3), 0.25)).item() == pytest.approx(math.log(4))
    prob = torch.tensor([[[0.2, 0.9]]])
    target = torch.tensor([[[1.0, 0.0]]])
    # missed foreground (1-0.2)^2 = 0.64 averaged over 2 px * pos 2 + spurious 0.81 / 2 * neg 1
    assert crf_loss(prob, target, 2.0, 1.0).item() == pytest.approx(0.64 / 2 * 2 + 0.81 / 2)


def test_network_shapes():
    net = RCFNet("resnet18", num_masks=4, head_channels=16)
    x = torch.randn(2, 3, 64, 96)
    out = net(x, x)
    assert out["logits1"].shape == (2, 4, 16, 24) and out["residual_bw"].shape == (2, 2, 4, 16, 24)
    assert torch.allclose(net.predict_masks(x).sum(1), torch.ones(2, 16, 24))


def test_maa_picks_the_object_not_its_complement():
    from seg_suite.data.synthetic import generate_video
    from seg_suite.pseudo.motion.maa import select_object_channel

    v = generate_video(np.random.default_rng(3), num_frames=3, height=128, width=160, num_objects=1)
    images, masks = [], []
    for img, inst in zip(v["frames"], v["instance_masks"]):
        obj = (inst > 0).astype(np.float32)
        blob = np.zeros_like(obj)
        blob[0:40, 100:160] = 1  # a corner patch that ignores appearance
        bg = np.clip(1 - obj - blob, 0, 1)
        images.append(img)
        masks.append(np.stack([bg, blob, obj, np.zeros_like(obj)]))
    channel, costs, border = select_object_channel(images, masks)
    assert channel == 2
    assert border[0] > 0.5  # the complement holds the border: its NCut equals the object's, its cost does not
    assert costs[2] < costs[1]


@pytest.fixture(scope="module")
def six_videos(tmp_path_factory):
    from seg_suite.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("rcf_videos")
    make_synthetic_dataset(root, num_train=1, num_val=1, seed=1, num_videos=6, video_frames=8,
                           height=128, width=160, progress=False)
    return root


@pytest.mark.slow
def test_training_beats_the_untrained_network_and_exports(six_videos, tmp_path):
    from seg_suite.cli import main
    from seg_suite.evaluation.davis import evaluate_davis
    from seg_suite.pseudo.motion.rcf_train import (
        RCFConfig, choose_channel, load_checkpoint, load_pairs, save_checkpoint, train_rcf,
    )
    from seg_suite.pseudo.motion.video import discover_sequences

    seqs = discover_sequences(six_videos)
    train, held = seqs[:4], seqs[4:]
    cfg = RCFConfig(size=(64, 80), steps=STEPS, batch_size=8, head_channels=64)
    data = load_pairs(train, cfg, progress=False)
    torch.manual_seed(cfg.seed)
    untrained = RCFNet(cfg.backbone, cfg.num_masks, cfg.head_channels).eval()
    ch0 = choose_channel(untrained, data, "cpu")[0]
    model, info = train_rcf(data, cfg, progress=False)
    assert np.mean(info["history"]["flow"][-10:]) < np.mean(info["history"]["flow"][:10])

    def held_out_j(net, ch, name):
        ckpt = tmp_path / f"{name}.pth"
        save_checkpoint(ckpt, net, cfg, {"object_channel": ch})
        sub = tmp_path / f"in_{name}"
        sub.mkdir()
        for s in held:
            (sub / s.key).symlink_to(s.path)
        assert main(["motion-masks", "--method", "rcf", "--checkpoint", str(ckpt), "--input", str(sub),
                     "--output", str(tmp_path / f"{name}.json"), "--workers", "0", "--no-progress"]) == 0
        res = evaluate_davis(six_videos / "videos" / "Annotations", tmp_path / f"{name}_masks",
                             sequences=[s.key for s in held])
        return res["global"]["J-Mean"], json.loads((tmp_path / f"{name}.json").read_text())

    j0, _ = held_out_j(untrained, ch0, "untrained")
    j1, coco = held_out_j(model, info["object_channel"], "trained")
    print(f"held-out J: untrained {j0:.3f}, trained {j1:.3f}")
    assert j1 > j0 + J_MARGIN and j1 > J_MIN
    assert len(coco["images"]) == 2 * 8
    # The checkpoint loads with weights_only and predicts the same masks.
    m2, cfg2, ch2 = load_checkpoint(tmp_path / "trained.pth")
    x = torch.randint(0, 255, (1, 3, 64, 80), dtype=torch.uint8)
    assert ch2 == info["object_channel"] and cfg2 == cfg
    assert torch.allclose(m2.predict_masks(m2.normalize(x)), model.predict_masks(model.normalize(x)), atol=1e-5)


def test_appearance_stage_runs_crf_targets(six_videos):
    from seg_suite.pseudo.motion.rcf_train import RCFConfig, load_pairs, train_rcf
    from seg_suite.pseudo.motion.video import discover_sequences

    cfg = RCFConfig(size=(64, 80), steps=2, stage2_steps=2, batch_size=2, head_channels=16)
    data = load_pairs(discover_sequences(six_videos)[:1], cfg, progress=False)
    assert len(data.pairs) == 7 and data.frames.shape == (8, 3, 64, 80)
    _, info = train_rcf(data, cfg, progress=False)
    crf = info["history"]["crf"]
    # two appearance steps; the loss is a weighted squared error of probabilities: 0 <= l <= 2 + 1
    assert len(crf) == 2 and all(0 <= c <= 3 for c in crf)
    assert len(info["history"]["flow"]) == 4 and 0 <= info["object_channel"] < cfg.num_masks


# Measured (64x80, 150 steps, resnet18 from scratch, 4 training videos): held-out J-Mean 0.419 and 0.462
# (two runs; CPU thread scheduling changes float sums) trained
# vs 0.000 untrained (no channel of the untrained net follows the objects).
STEPS = 150
J_MARGIN = 0.2
J_MIN = 0.3
