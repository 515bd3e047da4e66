"""The CGAT network (Schmidt et al., Sci. Adv. 7, eabi7948, 2021): graph attention + Roost + pooling + ReZero head."""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from screener.cgat.config import CGATConfig
from screener.cgat.head import OutputHead
from screener.cgat.layers import EdgeAttentionUpdate, EdgeIndex, EdgeState, EdgeTableUpdate, NodeUpdate
from screener.cgat.pooling import AttentionPool
from screener.cgat.roost import RoostEncoder
from screener.graphs.batch import GraphBatch

__all__ = ["CGAT"]

logger = logging.getLogger(__name__)


class CGAT(nn.Module):
    """Crystal graph attention network.

    ``head`` (the ReZero output MLP) is the only part trained by head-only transfer; everything else is the body.

    Parameters
    ----------
    config : CGATConfig
        Sizes and switches (presets ``paper`` and ``small`` in :mod:`screener.cgat.config`).

    Design notes: all heads of a message-passing step are one linear layer plus one batched matmul; the node
    hypernetwork generates low-rank per-node weights (:mod:`screener.cgat.hypernet`); with ``edge_update="table"``
    edge features are updated on the ``(n_neighbors + 1, width)`` rank table, never per edge; softmaxes are
    segment softmaxes over the incoming edges of each receiver (:mod:`screener.cgat.segment`).

    Shape:
        - batch: GraphBatch of B crystals, N atoms, E edges, M composition nodes
        - output: ``(prediction, log_std)``, each (B,), normalised target units; ``log_std`` is None when
          ``config.robust`` is False

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> from screener.cgat.config import get_preset
    >>> from screener.graphs import build_graph, collate_graphs
    >>> model = CGAT(get_preset("small"))
    >>> batch = collate_graphs([build_graph(Structure(Lattice.cubic(3.0), ["Po"], [[0, 0, 0]]))])
    >>> prediction, log_std = model(batch)
    >>> prediction.shape, log_std.shape, model.crystal_embedding(batch).shape
    (torch.Size([1]), torch.Size([1]), torch.Size([1, 64]))
    """

    def __init__(self, config: CGATConfig) -> None:
        super().__init__()
        self.config = config
        width, heads = config.atom_fea_len, config.n_heads
        from screener.data import element_embedding_table

        table = torch.from_numpy(element_embedding_table(config.embedding))
        if table.shape[1] != config.embedding_dim:
            raise ValueError(
                f"embedding {config.embedding!r} has width {table.shape[1]}, config says {config.embedding_dim}"
            )
        self.register_buffer("element_table", table)  # fixed, not trained; saved with checkpoints
        self.embed = nn.Linear(config.embedding_dim, width, bias=False)
        self.edge_embed = nn.Embedding(config.n_neighbors + 1, width)
        self.node_updates = nn.ModuleList(
            NodeUpdate(width, heads, config.attention_hidden, config.hyper_hidden, config.hyper_rank)
            for _ in range(config.n_steps)
        )
        # the last step's edge update would never be used: n_steps - 1 edge updates
        n_edge = max(config.n_steps - 1, 0)
        if config.edge_update == "table":
            self.edge_updates = nn.ModuleList(EdgeTableUpdate(width, width) for _ in range(n_edge))
        elif config.edge_update == "attention":
            self.edge_updates = nn.ModuleList(
                EdgeAttentionUpdate(width, config.attention_hidden) for _ in range(n_edge)
            )
        else:
            self.edge_updates = nn.ModuleList()
        self.roost = RoostEncoder(width, heads, config.roost_steps, config.attention_hidden)
        self.pool = AttentionPool(2 * width, width, heads, config.attention_hidden, concat=True)
        self.head = OutputHead(heads * width, config.out_hidden, 2 if config.robust else 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.embed.reset_parameters()
        self.edge_embed.reset_parameters()
        for module in (*self.node_updates, *self.edge_updates, self.roost, self.pool, self.head):
            module.reset_parameters()

    def crystal_embedding(self, batch: GraphBatch) -> Tensor:
        """Pooled crystal vector the head reads. Shape: (B, n_heads * atom_fea_len), float32."""
        index = EdgeIndex(batch.edge_src, batch.edge_dst, batch.edge_rank, batch.atomic_numbers.shape[0])
        h0 = self.embed(self.element_table.index_select(0, batch.atomic_numbers)).float()
        edges = EdgeState(self.edge_embed.weight, per_edge=False)
        h = h0
        for step, node_update in enumerate(self.node_updates):
            h = node_update(h, h0, edges, index)
            if step < len(self.edge_updates):
                edges = self.edge_updates[step](h, edges, index)
        comp = self.embed(self.element_table.index_select(0, batch.comp_numbers))
        composition = self.roost(comp, batch.comp_fractions, batch.comp_crystal, batch.n_crystals)
        pooled_in = torch.cat([h, composition.index_select(0, batch.atom_crystal)], dim=-1)
        return self.pool(pooled_in, batch.atom_crystal, batch.n_crystals)

    def forward(self, batch: GraphBatch) -> tuple[Tensor, Tensor | None]:
        out = self.head(self.crystal_embedding(batch)).float()
        if self.config.robust:
            return out[:, 0], out[:, 1]
        return out[:, 0], None

    def body_parameters(self) -> list[nn.Parameter]:
        """Parameters outside ``head`` (frozen by head-only transfer)."""
        head_ids = {id(p) for p in self.head.parameters()}
        return [p for p in self.parameters() if id(p) not in head_ids]

    def n_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (buffers such as the element table excluded)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"width={c.atom_fea_len}, n_heads={c.n_heads}, n_steps={c.n_steps}, roost_steps={c.roost_steps}, "
            f"edge_update={c.edge_update!r}, robust={c.robust}"
        )
