"""Training of the RCF segmenter (``seg-suite train-motion``); its config, checkpoints and inference
live in :mod:`seg_suite.pseudo.motion.rcf_segmenter` and are importable from here too.

Schedule (RCF ``configs/rcf/rcf_stage1.yaml`` then ``rcf_stage2.1.yaml``):

1. motion stage: Adam (lr 1e-4, weight decay 1e-4, poly decay power 0.9 to 1e-6), batch 8 frame
   pairs, flow-reconstruction loss in both directions + 0.05 x mask entropy;
2. object channel chosen without labels by motion-appearance alignment (:mod:`.maa`);
3. appearance stage: lr 1e-5, plus 10 x the CRF loss against dense-CRF refinements
   (:func:`seg_suite.pseudo.crf.densecrf`) of an EMA teacher's object channel (momentum 0.999).

RCF trains for 200 + 20 epochs on DAVIS with a GPU; here the numbers of steps are arguments, and
the CPU defaults are small. Frames are resized to ``size`` (RCF crops 384x384; we resize whole
frames, a simplification) and flows are area-resized to the mask grid (stride 4), their values kept
in the original frame's pixels, as RCF does before clamping at 20. The training pairs of a
dataset are held in memory at the training size (a few hundred MB for all of DAVIS-2016).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from seg_suite.errors import UserError
from seg_suite.pseudo.motion.flow import build_flow
from seg_suite.pseudo.motion.flow_cache import FlowCache, stream_motion
from seg_suite.pseudo.motion.maa import select_object_channel
from seg_suite.pseudo.motion.rcf_loss import crf_loss, entropy_loss, flow_loss
from seg_suite.pseudo.motion.rcf_model import RCFNet
from seg_suite.pseudo.motion.rcf_segmenter import (  # noqa: F401 - checkpoints are part of this module's API
    RCFConfig, load_checkpoint, predict_sequence, resize_frame, save_checkpoint,
)
from seg_suite.pseudo.motion.video import Sequence, VideoReadError


@dataclass
class PairData:
    """All training pairs in memory. frames [N, 3, H, W] uint8; pairs: (i, j, fw [2,h,w], bw [2,h,w])."""

    frames: torch.Tensor
    pairs: list[tuple[int, int, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)


def _resize_flow_values_kept(flow: np.ndarray, hw) -> torch.Tensor:
    small = cv2.resize(flow, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(small.transpose(2, 0, 1)))


def load_pairs(sequences: list[Sequence], cfg: RCFConfig, flow_cache: str | None = None,
               flow_weights=None, device: str = "cpu", progress: bool = True) -> PairData:
    """Decode every sequence once, compute (or read cached) forward/backward flows at ``cfg.gaps``."""
    from tqdm import tqdm

    flow_fn = build_flow(cfg.flow_backend, cfg.flow_preset, flow_weights, device)
    cache = FlowCache(flow_cache) if flow_cache else None
    mask_hw = (cfg.size[0] // 4, cfg.size[1] // 4)
    frames, pairs, failures = [], [], []
    for seq in tqdm(sequences, desc="flows", unit="video", disable=not progress):
        base = len(frames)
        local_frames, fws, bws = [], {}, {}
        try:
            for fm in stream_motion(seq.frames(), flow_fn, cfg.gaps, True, cache, seq.key):
                local_frames.append(torch.from_numpy(resize_frame(fm.frame, cfg.size)).permute(2, 0, 1))
                for g, fw in fm.forward.items():
                    fws[(fm.index, fm.index + g)] = _resize_flow_values_kept(fw, mask_hw)
                for g, bw in fm.backward.items():  # flow t -> t-g is the backward flow of pair (t-g, t)
                    bws[(fm.index - g, fm.index)] = _resize_flow_values_kept(bw, mask_hw)
        except VideoReadError as err:
            failures.append((seq.key, str(err)))
            continue
        frames.extend(local_frames)
        pairs.extend((base + i, base + j, fws[(i, j)], bws[(i, j)]) for i, j in sorted(fws))
    if not pairs:
        raise UserError("no usable training pairs: every sequence failed or has fewer than 2 frames")
    return PairData(torch.stack(frames), pairs, failures)


def _batch(data: PairData, idx: list[int], rng: np.random.Generator):
    f1 = torch.stack([data.frames[data.pairs[k][0]] for k in idx])
    f2 = torch.stack([data.frames[data.pairs[k][1]] for k in idx])
    fw = torch.stack([data.pairs[k][2] for k in idx]).clone()
    bw = torch.stack([data.pairs[k][3] for k in idx]).clone()
    flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
    if flip.any():  # horizontal flip: mirror images and flows, negate dx
        for t in (f1, f2, fw, bw):
            t[flip] = t[flip].flip(-1)
        fw[flip, 0] *= -1
        bw[flip, 0] *= -1
    return f1, f2, fw, bw


def _poly_lr(step: int, total: int, base: float, min_lr: float, power: float = 0.9) -> float:
    return (base - min_lr) * (1 - step / max(total, 1)) ** power + min_lr


@torch.no_grad()
def _ema_update(teacher: torch.nn.Module, student: torch.nn.Module, m: float) -> None:
    for pt, ps in zip(teacher.parameters(), student.parameters()):
        pt.mul_(m).add_(ps.detach(), alpha=1 - m)
    for bt, bs in zip(teacher.buffers(), student.buffers()):
        bt.copy_(bs)


@torch.no_grad()
def predict_channel_masks(model: RCFNet, frames_uint8: torch.Tensor, device, batch: int = 16) -> np.ndarray:
    """[N, 3, H, W] uint8 -> soft masks [N, K, H/4, W/4] (eval mode)."""
    model.eval()
    out = []
    for i in range(0, len(frames_uint8), batch):
        x = model.normalize(frames_uint8[i : i + batch].to(device))
        out.append(model.predict_masks(x).cpu())
    return torch.cat(out).numpy()


def choose_channel(model: RCFNet, data: PairData, device, max_frames: int = 32, extractor=None):
    """Motion-appearance alignment over (up to ``max_frames`` evenly spaced) training frames."""
    idx = np.unique(np.linspace(0, len(data.frames) - 1, min(max_frames, len(data.frames))).astype(int))
    masks = predict_channel_masks(model, data.frames[idx], device)
    images = [data.frames[i].permute(1, 2, 0).numpy() for i in idx]
    return select_object_channel(images, list(masks), extractor)


def train_rcf(data: PairData, cfg: RCFConfig, device: str = "cpu", weights=None, progress: bool = True,
              log=None) -> tuple[RCFNet, dict]:
    """Run both stages on ``data``; returns (model, info with history and the object channel)."""
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    dev = torch.device(device)
    model = RCFNet(cfg.backbone, cfg.num_masks, cfg.head_channels, weights).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history = {"flow": [], "entropy": [], "crf": []}
    n = len(data.pairs)

    def step_batch():
        idx = list(rng.integers(0, n, size=min(cfg.batch_size, n)))
        f1, f2, fw, bw = (t.to(dev) for t in _batch(data, idx, rng))
        out = model(model.normalize(f1), model.normalize(f2))
        m1, m2 = out["logits1"].softmax(1), out["logits2"].softmax(1)
        lf = flow_loss(out, m1, m2, fw, bw, cfg.clamp_flow, cfg.residual_scale, cfg.residual_div, cfg.segment_model)
        le = entropy_loss(torch.cat([m1, m2]))
        return f1, f2, m1, m2, lf, le

    model.train()
    for step in tqdm(range(cfg.steps), desc="rcf motion stage", disable=not progress):
        for g in opt.param_groups:
            g["lr"] = _poly_lr(step, cfg.steps, cfg.lr, cfg.min_lr)
        _, _, _, _, lf, le = step_batch()
        loss = lf + cfg.w_entropy * le
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history["flow"].append(lf.item())
        history["entropy"].append(le.item())

    channel, costs, border = choose_channel(model, data, dev)
    info = {"object_channel": channel, "maa_ncut": costs.tolist(), "border_share": border.tolist()}

    if cfg.stage2_steps > 0:
        from seg_suite.pseudo.crf import densecrf

        teacher = copy.deepcopy(model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.stage2_lr, weight_decay=cfg.weight_decay)
        model.train()
        for step in tqdm(range(cfg.stage2_steps), desc="rcf appearance stage", disable=not progress):
            for g in opt.param_groups:
                g["lr"] = _poly_lr(step, cfg.stage2_steps, cfg.stage2_lr, cfg.min_lr)
            f1, f2, m1, m2, lf, le = step_batch()
            with torch.no_grad():
                frames = torch.cat([f1, f2])
                t_prob = teacher.predict_masks(teacher.normalize(frames))[:, channel].cpu().numpy()
                targets = []
                for img, p in zip(frames.cpu().permute(0, 2, 3, 1).numpy(), t_prob):
                    crf_mask = densecrf(np.ascontiguousarray(img), p).astype(np.float32)
                    targets.append(cv2.resize(crf_mask, (p.shape[1], p.shape[0]), interpolation=cv2.INTER_AREA))
                target = torch.from_numpy(np.stack(targets)).to(dev)
            lc = crf_loss(torch.cat([m1, m2])[:, channel], target, cfg.crf_pos_weight, cfg.crf_neg_weight)
            loss = lf + cfg.w_crf * lc  # RCF stage 2.1 sets the entropy weight to 0
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            _ema_update(teacher, model, cfg.ema)
            history["flow"].append(lf.item())
            history["crf"].append(lc.item())
    model.eval()
    info["history"] = history
    if log is not None:
        print(f"object channel {channel} (NCut per channel {np.round(costs, 3).tolist()})", file=log)
    return model, info


def describe(info: dict) -> str:
    h = info["history"]
    first = np.mean(h["flow"][:10]) if h["flow"] else math.nan
    last = np.mean(h["flow"][-10:]) if h["flow"] else math.nan
    return f"flow loss {first:.3f} -> {last:.3f}; object channel {info['object_channel']}"

