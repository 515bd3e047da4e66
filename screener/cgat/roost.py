"""Roost composition branch: weighted soft attention on the complete graph of a compound's elements.

Goodall & Lee, Nat. Commun. 11, 6280 (2020), as used in CGAT. Each distinct element of a crystal is a node
(its projected element embedding and its atomic fraction); nodes of one crystal form a complete graph *with
self-loops*, so a single-element compound has one edge (the reference crashed on those). Attention weights are
``fraction_j^p * exp(gate_ij)`` normalised over the senders ``j`` of receiver ``i`` (learned ``p`` per layer),
computed as a softmax of ``gate_ij + p * log(fraction_j)``. A weighted attention pool gives one vector per crystal.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
import torch.nn.functional as F

from screener.cgat.layers import HeadwiseLinear
from screener.cgat.pooling import AttentionPool
from screener.cgat.segment import complete_graph_pairs, segment_weighted_sum

__all__ = ["RoostLayer", "RoostEncoder"]


class RoostLayer(nn.Module):
    """One step of weighted multi-head soft attention between the elements of each compound.

    Shape:
        - x: (M, width), log_fraction: (M,), src, dst: (P,) pairs within a compound -> (M, width)
    """

    def __init__(self, width: int, n_heads: int, hidden: int) -> None:
        super().__init__()
        self.width, self.n_heads, self.hidden = width, n_heads, hidden
        self.recv = nn.Linear(width, 2 * n_heads * hidden)
        self.send = nn.Linear(width, 2 * n_heads * hidden, bias=False)
        self.gate = HeadwiseLinear(n_heads, hidden, 1)
        self.message = HeadwiseLinear(n_heads, hidden, width)
        self.power = nn.Parameter(torch.empty(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.recv.reset_parameters()
        self.send.reset_parameters()
        self.gate.reset_parameters()
        self.message.reset_parameters()
        nn.init.ones_(self.power)

    def forward(self, x: Tensor, log_fraction: Tensor, src: Tensor, dst: Tensor) -> Tensor:
        z = self.recv(x).index_select(0, dst) + self.send(x).index_select(0, src)
        z = F.silu(z).view(-1, 2, self.n_heads, self.hidden)
        scores = self.gate(z[:, 0]).transpose(0, 1).float()  # (P, H, 1)
        scores = scores + (self.power * log_fraction.index_select(0, src)).view(-1, 1, 1)
        messages = self.message(z[:, 1]).transpose(0, 1)  # (P, H, width)
        agg = segment_weighted_sum(scores, messages, dst, x.shape[0]).mean(dim=1)
        return x + agg

    def extra_repr(self) -> str:
        return f"width={self.width}, n_heads={self.n_heads}, hidden={self.hidden}"


class RoostEncoder(nn.Module):
    """Composition vector of each crystal from its element embeddings and fractions.

    Parameters
    ----------
    width : int
        Width of the (already projected) element features and of the output.
    n_heads : int
        Heads of attention layers and pool.
    n_steps : int
        Message-passing steps.
    hidden : int
        Hidden width of gate and message MLPs.

    Shape:
        - element_features: (M, width), fractions: (M,), crystal: (M,) long sorted -> (n_crystals, width)
    """

    def __init__(self, width: int, n_heads: int, n_steps: int, hidden: int) -> None:
        super().__init__()
        self.width, self.n_heads, self.n_steps, self.hidden = width, n_heads, n_steps, hidden
        self.inp = nn.Linear(width + 1, width)
        self.layers = nn.ModuleList(RoostLayer(width, n_heads, hidden) for _ in range(n_steps))
        self.pool = AttentionPool(width, width, n_heads, hidden, concat=False)
        self.pool_power = nn.Parameter(torch.empty(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.inp.reset_parameters()
        for layer in self.layers:
            layer.reset_parameters()
        self.pool.reset_parameters()
        nn.init.ones_(self.pool_power)

    def forward(self, element_features: Tensor, fractions: Tensor, crystal: Tensor, n_crystals: int) -> Tensor:
        fractions = fractions.float()
        x = self.inp(torch.cat([element_features, fractions.unsqueeze(-1).to(element_features.dtype)], dim=-1))
        x = x.float()
        log_fraction = torch.log(fractions.clamp_min(1e-12))
        src, dst = complete_graph_pairs(crystal)
        for layer in self.layers:
            x = layer(x, log_fraction, src, dst)
        return self.pool(x, crystal, n_crystals, log_weight=self.pool_power * log_fraction)

    def extra_repr(self) -> str:
        return f"width={self.width}, n_heads={self.n_heads}, n_steps={self.n_steps}, hidden={self.hidden}"
