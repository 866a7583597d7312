"""Building blocks of the masked-attention decoder: attention, cross-attention, FFN and MLP.

Parameter names equal those of Mask2Former's ``SelfAttentionLayer``, ``CrossAttentionLayer``,
``FFNLayer`` and ``MLP`` (which wrap ``nn.MultiheadAttention``), so official checkpoints load.
Tensors are batch-first, (B, L, C), and attention runs through
``F.scaled_dot_product_attention``; the reference uses sequence-first tensors and
``nn.MultiheadAttention`` with explicit attention weights. The maths is the same.
"""

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from seg_suite.modeling.linear import Linear, linear


class MultiheadAttention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameter layout.

    Parameters: ``in_proj_weight`` (3C, C) stacking q, k, v projections, ``in_proj_bias`` (3C,),
    ``out_proj`` Linear(C, C).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.constant_(self.out_proj.bias, 0.0)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            query: (B, Lq, C).  key, value: (B, Lk, C).
            attn_mask: bool, broadcastable to (B, heads, Lq, Lk), True where attention is ALLOWED
                (``scaled_dot_product_attention``'s convention, the opposite of
                ``nn.MultiheadAttention``'s).
        Returns:
            (B, Lq, C).
        """
        c = self.embed_dim
        w_q, w_k, w_v = self.in_proj_weight.split(c)
        b_q, b_k, b_v = self.in_proj_bias.split(c)
        b, lq, _ = query.shape
        heads, dh = self.num_heads, c // self.num_heads
        q = linear(query, w_q, b_q).view(b, lq, heads, dh).transpose(1, 2)
        k = linear(key, w_k, b_k).view(b, -1, heads, dh).transpose(1, 2)
        v = linear(value, w_v, b_v).view(b, -1, heads, dh).transpose(1, 2)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(b, lq, c))


def _with_pos(x: torch.Tensor, pos: Optional[torch.Tensor]) -> torch.Tensor:
    return x if pos is None else x + pos


class SelfAttentionLayer(nn.Module):
    """Residual self-attention with LayerNorm after (default) or before (``normalize_before``)."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        _xavier_all_matrices(self)

    def forward(self, tgt: torch.Tensor, query_pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        """tgt, query_pos: (B, Q, C) -> (B, Q, C)."""
        x = self.norm(tgt) if self.normalize_before else tgt
        qk = _with_pos(x, query_pos)
        tgt = tgt + self.dropout(self.self_attn(qk, qk, x))
        return tgt if self.normalize_before else self.norm(tgt)


class CrossAttentionLayer(nn.Module):
    """Residual cross-attention from queries to image features, optionally masked."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False):
        super().__init__()
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        _xavier_all_matrices(self)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                pos: Optional[torch.Tensor] = None, query_pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            tgt: (B, Q, C) queries.  memory: (B, HW, C) features.  pos: (B, HW, C).
            attn_mask: bool (B, 1 or heads, Q, HW), True where attention is allowed.
        Returns:
            (B, Q, C).
        """
        x = self.norm(tgt) if self.normalize_before else tgt
        attended = self.multihead_attn(_with_pos(x, query_pos), _with_pos(memory, pos), memory, attn_mask)
        tgt = tgt + self.dropout(attended)
        return tgt if self.normalize_before else self.norm(tgt)


class FFNLayer(nn.Module):
    """Residual two-layer ReLU MLP."""

    def __init__(self, d_model: int, dim_feedforward: int = 2048, dropout: float = 0.0,
                 normalize_before: bool = False):
        super().__init__()
        self.linear1 = Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before
        _xavier_all_matrices(self)

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        """(B, Q, C) -> (B, Q, C)."""
        x = self.norm(tgt) if self.normalize_before else tgt
        tgt = tgt + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x)))))
        return tgt if self.normalize_before else self.norm(tgt)


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (``layers.0`` ... ``layers.{n-1}``)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def _xavier_all_matrices(module: nn.Module) -> None:
    # The reference re-initialises every matrix of these layers with Xavier-uniform.
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
