"""Relaxed-common-fate losses (RCF, ``models/flow_aggregation_head_with_residual.py`` and
``models/rcf_model.py`` of github.com/TonyLianLong/RCF-UnsupVideoSeg).

Flow reconstruction: every segment k gets one parametric flow, painted back into its soft mask,
plus a per-segment residual bounded by ``scale * tanh(r / div)``::

    F_hat = sum_k m_k * (A theta_k)  +  sum_k m_k * scale * tanh(r_k / div)

``theta_k`` is the closed-form mask-weighted least-squares fit of the flow (differentiable in the
masks). ``segment_model="affine"`` fits [1, x, y] per flow component (RCF's
``free_residual_with_affine`` form, where the affine part is the exact weighted fit);
``"translation"`` fits the weighted mean flow only. (RCF's stage-1 default instead aggregates
learned flow features per segment with a small MLP; a closed-form fit has no parameters to learn
and converges faster on CPU - a deliberate difference.) The loss is the L1 distance between the
clamped flow (``clamp_flow_t: 20``) and its reconstruction, forward flow with the masks of frame t
and backward flow with the masks of frame t+1, summed. Defaults (residual scale 10, div 10, clamp
20, entropy weight 0.05, CRF weight 10 with positive/negative weights 2/1) are
``configs/rcf/rcf_stage1.yaml`` and ``rcf_stage2.1.yaml``.
"""

from __future__ import annotations

import torch


def _basis(h: int, w: int, model: str, device, dtype) -> torch.Tensor:
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w * 2 - 1
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    cols = [torch.ones_like(x)]
    if model == "affine":
        cols += [x, y]
    return torch.stack(cols, dim=-1).reshape(h * w, -1)  # [N, P]


def segment_flow(masks: torch.Tensor, flow: torch.Tensor, model: str = "affine", ridge: float = 1e-3) -> torch.Tensor:
    """Per-segment parametric fit painted into the masks.

    masks [B, K, h, w] (sum to 1 over K); flow [B, 2, h, w] -> [B, 2, h, w].
    """
    if model not in ("affine", "translation"):
        raise ValueError(f"segment model must be affine or translation, not {model!r}")
    B, K, h, w = masks.shape
    A = _basis(h, w, model, masks.device, masks.dtype)  # N, P
    m = masks.flatten(2)  # B, K, N
    Y = flow.flatten(2).transpose(1, 2)  # B, N, 2
    mn = m / (m.sum(dim=2, keepdim=True) + 1e-6)  # weights normalised per segment
    G = torch.einsum("bkn,np,nq->bkpq", mn, A, A)
    G = G + ridge * torch.eye(A.shape[1], device=A.device, dtype=A.dtype)
    rhs = torch.einsum("bkn,np,bnd->bkpd", mn, A, Y)
    theta = torch.linalg.solve(G, rhs)  # B, K, P, 2
    fitted = torch.einsum("np,bkpd->bknd", A, theta)  # B, K, N, 2
    out = (m.unsqueeze(-1) * fitted).sum(dim=1)  # B, N, 2
    return out.transpose(1, 2).reshape(B, 2, h, w)


def reconstruct_flow(masks, flow, residual, scale: float = 10.0, div: float = 10.0, model: str = "affine"):
    """masks [B,K,h,w], flow [B,2,h,w], residual [B,2,K,h,w] -> reconstructed flow [B,2,h,w]."""
    seg = segment_flow(masks, flow, model)
    if scale <= 0:
        return seg
    res = (torch.tanh(residual / div) * masks.unsqueeze(1)).sum(dim=2) * scale
    return seg + res


def flow_loss(out: dict, masks1, masks2, flow_fw, flow_bw, clamp: float = 20.0, scale: float = 10.0,
              div: float = 10.0, model: str = "affine") -> torch.Tensor:
    """L1 reconstruction loss in both directions (sum of the forward and backward means)."""
    fw = flow_fw.clamp(-clamp, clamp)
    bw = flow_bw.clamp(-clamp, clamp)
    rec_fw = reconstruct_flow(masks1, fw, out["residual_fw"], scale, div, model)
    rec_bw = reconstruct_flow(masks2, bw, out["residual_bw"], scale, div, model)
    return (fw - rec_fw).abs().mean() + (bw - rec_bw).abs().mean()


def entropy_loss(masks: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel entropy of the soft masks [B, K, h, w] (pushes towards hard assignments).

    The reference takes log_softmax of already-softmaxed masks; we use the true entropy."""
    return -(masks * torch.log(masks.clamp_min(1e-8))).sum(dim=1).mean()


def crf_loss(object_prob: torch.Tensor, target: torch.Tensor, pos_weight: float = 2.0, neg_weight: float = 1.0):
    """RCF's appearance loss: squared error to the CRF pseudo-label, missed foreground weighted
    ``pos_weight`` and spurious foreground ``neg_weight``. object_prob, target: [B, h, w]."""
    diff = target - object_prob
    return (diff.clamp(min=0) ** 2).mean() * pos_weight + (diff.clamp(max=0) ** 2).mean() * neg_weight
