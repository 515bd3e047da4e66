"""Message-passing layers of CGAT: multi-head vector-attention node update and the edge updates.

Edges carry only their neighbour-shell rank, so edge features start as a ``(n_neighbors + 1, width)`` table. With
``edge_update="table"`` (the reference's behaviour) the update ``e <- e + MLP(e)`` is computed on that table, and
edges just gather their row; with ``"attention"`` edges get a real per-edge update from ``[h_src, e, h_dst]`` and
become an ``(E, width)`` tensor; with ``"none"`` the table stays fixed.

The first linear layer acting on ``m = [h_src, e, h_dst]`` is split into three blocks, ``W m = W_s h_src + W_e e +
W_d h_dst``: node blocks are computed once per atom, the edge block once per table row, and the three rows of every
edge are gathered and summed in one ``embedding_bag(mode="sum")`` call. All heads of the attention and message MLPs
are evaluated together (one linear layer to ``2 * n_heads * hidden``, then one head-wise batched matmul).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
import torch.nn.functional as F

from screener.cgat.hypernet import NodeHyperNetwork
from screener.cgat.segment import segment_weighted_sum

__all__ = [
    "EdgeIndex",
    "EdgeState",
    "HeadwiseLinear",
    "EdgeMLPInput",
    "NodeUpdate",
    "EdgeTableUpdate",
    "EdgeAttentionUpdate",
]


@dataclass
class EdgeIndex:
    """Connectivity of a batch graph, with the gather indices the layers share.

    Edges are reordered by receiver (a stable sort, once per forward): every result is a sum over edges, so the order
    does not matter, and scatters into receivers then touch memory in order.

    The first layers gather from a stacked table whose row ``2 i`` is atom ``i``'s sender block, row ``2 i + 1`` its
    receiver block (the ``(N, 2, out)`` output of one linear layer, viewed as ``(2N, out)`` without a copy) and row
    ``2N + r`` the edge block of rank ``r``.

    Shape:
        - src, dst, rank: (E,) long
        - ``bag_nodes``: (E, 2) = [2 src, 2 dst + 1]; ``bag``: (E, 3) = [2 src, 2 dst + 1, 2N + rank]
    """

    src: Tensor
    dst: Tensor
    rank: Tensor
    n_nodes: int
    bag_nodes: Tensor = field(init=False, repr=False)
    bag: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        order = torch.argsort(self.dst, stable=True)
        self.src, self.dst, self.rank = self.src[order], self.dst[order], self.rank[order]
        self.bag_nodes = torch.stack([2 * self.src, 2 * self.dst + 1], dim=1)
        self.bag = torch.cat([self.bag_nodes, (self.rank + 2 * self.n_nodes).unsqueeze(1)], dim=1)


class EdgeState:
    """Edge features either as a per-rank table (gathered by rank) or as one row per edge.

    Parameters
    ----------
    features : Tensor
        (n_ranks, width) table if ``per_edge`` is False, else (E, width).
    per_edge : bool
        Whether ``features`` already has one row per edge.
    """

    __slots__ = ("features", "per_edge")

    def __init__(self, features: Tensor, per_edge: bool = False) -> None:
        self.features, self.per_edge = features, per_edge

    def per_edge_features(self, index: EdgeIndex) -> Tensor:
        """Shape: (E, width)."""
        return self.features if self.per_edge else self.features.index_select(0, index.rank)


class HeadwiseLinear(nn.Module):
    """Independent linear maps for ``n_groups`` groups of features, as one batched matmul.

    The output is *group-major*: ``(n_groups, n, out)``, so slices over groups are contiguous and no transpose copy
    of the (large, per-edge) input or output is made.

    Shape:
        - input: (n, n_groups, in_features) -> output: (n_groups, n, out_features)
    """

    def __init__(self, n_groups: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.n_groups, self.in_features, self.out_features = n_groups, in_features, out_features
        self.weight = nn.Parameter(torch.empty(n_groups, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(n_groups, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        # (g, n, in) @ (g, in, out) -> (g, n, out); a contiguous copy of the input is cheaper than strided bmm
        return torch.baddbmm(self.bias.unsqueeze(1), x.transpose(0, 1).contiguous(), self.weight)

    def extra_repr(self) -> str:
        return f"n_groups={self.n_groups}, {self.in_features}, {self.out_features}"


class EdgeMLPInput(nn.Module):
    """First layer of an MLP on ``[h_src, e, h_dst]``, split into per-node and per-table-row blocks.

    Shape:
        - h: (N, width), edges: EdgeState, index: EdgeIndex -> (E, out_features) pre-activation
    """

    def __init__(self, width: int, out_features: int) -> None:
        super().__init__()
        self.width, self.out_features = width, out_features
        self.nodes = nn.Linear(width, 2 * out_features, bias=False)  # [W_src; W_dst]
        self.edge = nn.Linear(width, out_features)  # W_edge and the layer's bias
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # fan-in of the concatenated input is 3 * width, as for one Linear(3 * width, out)
        bound = 1.0 / math.sqrt(3 * self.width)
        nn.init.uniform_(self.nodes.weight, -bound, bound)
        nn.init.uniform_(self.edge.weight, -bound, bound)
        nn.init.uniform_(self.edge.bias, -bound, bound)

    def weight_blocks(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(W_src, W_edge, W_dst, bias)`` of the equivalent ``Linear(3 * width, out)`` on ``[h_src, e, h_dst]``."""
        w_src, w_dst = self.nodes.weight.split(self.out_features)
        return w_src, self.edge.weight, w_dst, self.edge.bias

    def forward(self, h: Tensor, edges: EdgeState, index: EdgeIndex) -> Tensor:
        nodes = self.nodes(h).view(2 * h.shape[0], self.out_features)  # row 2i: sender block, 2i+1: receiver block
        edge = self.edge(edges.features)
        if edges.per_edge:
            return F.embedding_bag(index.bag_nodes, nodes, mode="sum") + edge
        return F.embedding_bag(index.bag, torch.cat([nodes, edge.to(nodes.dtype)], dim=0), mode="sum")

    def extra_repr(self) -> str:
        return f"3 x {self.width} -> {self.out_features}"


class NodeUpdate(nn.Module):
    """One CGAT node update: multi-head vector attention over incoming edges, then the node hypernetwork.

    For every edge ``src -> dst`` and head ``k``: ``a_k = MLP_a,k([h_src, e, h_dst])`` (one weight per channel),
    ``m_k = MLP_m,k([h_src, e, h_dst])``; ``a_k`` is softmax-normalised over the incoming edges of ``dst`` per
    channel; ``agg_dst = mean_k sum_edges a_k * m_k``; ``h <- h + HyperMLP(agg, h0)``.

    Parameters
    ----------
    width : int
        Node and edge feature width.
    n_heads : int
        Attention heads.
    hidden : int
        Hidden width of each head's attention and message MLP.
    hyper_hidden : list of int
        Hidden widths of the node hypernetwork.
    hyper_rank : int
        Rank of the hypernetwork's generated per-node weights.

    Shape:
        - h, h0: (N, width); edges: EdgeState; index: EdgeIndex -> (N, width)
    """

    def __init__(self, width: int, n_heads: int, hidden: int, hyper_hidden: list[int], hyper_rank: int = 8) -> None:
        super().__init__()
        self.width, self.n_heads, self.hidden = width, n_heads, hidden
        self.inp = EdgeMLPInput(width, 2 * n_heads * hidden)
        self.out = HeadwiseLinear(2 * n_heads, hidden, width)  # groups 0..H-1 attention, H..2H-1 messages
        self.hyper = NodeHyperNetwork(width, hyper_hidden, hyper_rank)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.inp.reset_parameters()
        self.out.reset_parameters()
        self.hyper.reset_parameters()

    def aggregate(self, h: Tensor, edges: EdgeState, index: EdgeIndex) -> Tensor:
        """Attention-weighted messages summed per receiver and averaged over heads. Shape: (N, width) float32."""
        z = F.leaky_relu(self.inp(h, edges, index)).view(-1, 2 * self.n_heads, self.hidden)
        # group-major (2H, E, width); chunk (backward: one cat) rather than slicing (backward: zero-fill + copy)
        scores, messages = self.out(z).chunk(2, dim=0)
        return segment_weighted_sum(scores.transpose(0, 1), messages.transpose(0, 1), index.dst, h.shape[0]).mean(1)

    def forward(self, h: Tensor, h0: Tensor, edges: EdgeState, index: EdgeIndex) -> Tensor:
        return h + self.hyper(self.aggregate(h, edges, index), h0)

    def extra_repr(self) -> str:
        return f"width={self.width}, n_heads={self.n_heads}, hidden={self.hidden}"


class EdgeTableUpdate(nn.Module):
    """``e <- e + MLP(e)`` evaluated on the rank table (edges depend only on their rank).

    Shape:
        - edges: EdgeState -> EdgeState (same layout)
    """

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.width, self.hidden = width, hidden
        self.lin1 = nn.Linear(width, hidden)
        self.lin2 = nn.Linear(hidden, width)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin1.reset_parameters()
        self.lin2.reset_parameters()

    def forward(self, h: Tensor, edges: EdgeState, index: EdgeIndex) -> EdgeState:
        e = edges.features
        return EdgeState(e + self.lin2(F.silu(self.lin1(e))), edges.per_edge)

    def extra_repr(self) -> str:
        return f"width={self.width}, hidden={self.hidden}"


class EdgeAttentionUpdate(nn.Module):
    """Per-edge gated update from ``[h_src, e, h_dst]``: ``e <- e + sigmoid(g) * m``; edges become per-edge rows.

    Shape:
        - h: (N, width), edges: EdgeState, index: EdgeIndex -> EdgeState with (E, width) features
    """

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.width, self.hidden = width, hidden
        self.inp = EdgeMLPInput(width, hidden)
        self.out = nn.Linear(hidden, 2 * width)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.inp.reset_parameters()
        self.out.reset_parameters()

    def forward(self, h: Tensor, edges: EdgeState, index: EdgeIndex) -> EdgeState:
        gate, message = self.out(F.leaky_relu(self.inp(h, edges, index))).chunk(2, dim=-1)
        e = edges.per_edge_features(index)
        return EdgeState(e + torch.sigmoid(gate) * message, per_edge=True)

    def extra_repr(self) -> str:
        return f"width={self.width}, hidden={self.hidden}"
