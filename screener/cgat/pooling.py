"""Multi-head soft-attention pooling of rows into segments (atoms -> crystal, elements -> composition)."""

from __future__ import annotations

from torch import Tensor, nn
import torch.nn.functional as F

from screener.cgat.layers import HeadwiseLinear
from screener.cgat.segment import segment_weighted_sum

__all__ = ["AttentionPool"]


class AttentionPool(nn.Module):
    """Per head: a scalar gate and a message from each row; gates softmax-normalised within a segment.

    ``out_s = reduce_k sum_{r in s} softmax_s(g_k(x_r) + log_weight_r) * m_k(x_r)`` with ``reduce`` = concatenation
    over heads (``concat=True``, output ``n_heads * out_features``) or mean.

    Parameters
    ----------
    in_features : int
        Width of the rows (for CGAT: ``[h_i, composition vector]``).
    out_features : int
        Width of each head's message.
    n_heads : int
        Heads.
    hidden : int
        Hidden width of each head's gate and message MLP.
    concat : bool
        Concatenate heads (True) or average them.

    Shape:
        - x: (n, in_features), index: (n,) long, log_weight: (n,) or None
        - output: (n_segments, n_heads * out_features) if concat else (n_segments, out_features)
    """

    def __init__(self, in_features: int, out_features: int, n_heads: int, hidden: int, concat: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.n_heads, self.hidden, self.concat = n_heads, hidden, concat
        self.inp = nn.Linear(in_features, 2 * n_heads * hidden)
        self.gate = HeadwiseLinear(n_heads, hidden, 1)
        self.message = HeadwiseLinear(n_heads, hidden, out_features)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.inp.reset_parameters()
        self.gate.reset_parameters()
        self.message.reset_parameters()

    @property
    def output_features(self) -> int:
        return self.n_heads * self.out_features if self.concat else self.out_features

    def forward(self, x: Tensor, index: Tensor, n_segments: int, log_weight: Tensor | None = None) -> Tensor:
        z = F.silu(self.inp(x)).view(-1, 2, self.n_heads, self.hidden)
        scores = self.gate(z[:, 0]).transpose(0, 1)  # (n, H, 1)
        if log_weight is not None:
            scores = scores.float() + log_weight.view(-1, 1, 1)
        messages = self.message(z[:, 1]).transpose(0, 1)  # (n, H, out)
        pooled = segment_weighted_sum(scores, messages, index, n_segments)  # (S, H, out)
        return pooled.flatten(1) if self.concat else pooled.mean(dim=1)

    def extra_repr(self) -> str:
        return (
            f"{self.in_features} -> {self.out_features}, n_heads={self.n_heads}, hidden={self.hidden}, "
            f"concat={self.concat}"
        )
