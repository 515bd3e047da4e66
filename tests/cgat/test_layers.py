"""Tests of screener.cgat.layers: head-wise linear maps, split first layers, node and edge updates."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from screener.cgat.layers import (
    EdgeAttentionUpdate,
    EdgeIndex,
    EdgeMLPInput,
    EdgeState,
    EdgeTableUpdate,
    HeadwiseLinear,
    NodeUpdate,
)


def _toy_graph(n=6, k=4, width=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.arange(n).repeat_interleave(k)
    dst = torch.randint(0, n, (n * k,), generator=g)
    rank = torch.randint(1, k + 1, (n * k,), generator=g)
    h = torch.randn(n, width, generator=g)
    table = torch.randn(k + 1, width, generator=g)
    return h, table, EdgeIndex(src, dst, rank, n)


def test_headwise_linear_equals_loop():
    torch.manual_seed(0)
    lin = HeadwiseLinear(3, 5, 4)
    x = torch.randn(7, 3, 5)
    y = lin(x)
    assert y.shape == (3, 7, 4)  # group-major
    for k in range(3):
        torch.testing.assert_close(y[k], x[:, k] @ lin.weight[k] + lin.bias[k])


def test_split_first_layer_equals_linear_on_concatenation():
    torch.manual_seed(0)
    h, table, index = _toy_graph()
    layer = EdgeMLPInput(8, 10)
    got = layer(h, EdgeState(table), index)
    m = torch.cat([h[index.src], table[index.rank], h[index.dst]], dim=-1)
    w_src, w_edge, w_dst, bias = layer.weight_blocks()
    torch.testing.assert_close(got, F.linear(m, torch.cat([w_src, w_edge, w_dst], dim=1), bias))
    # table and per-edge layouts agree
    torch.testing.assert_close(got, layer(h, EdgeState(table[index.rank], per_edge=True), index))


def test_node_update_is_permutation_equivariant():
    torch.manual_seed(0)
    h, table, index = _toy_graph()
    layer = NodeUpdate(8, n_heads=2, hidden=6, hyper_hidden=[5], hyper_rank=2)
    out = layer(h, h, EdgeState(table), index)
    perm = torch.randperm(h.shape[0])
    inv = torch.argsort(perm)  # new index of old atom i is inv[i]
    index_p = EdgeIndex(inv[index.src], inv[index.dst], index.rank, index.n_nodes)
    out_p = layer(h[perm], h[perm], EdgeState(table), index_p)
    torch.testing.assert_close(out_p, out[perm], rtol=1e-5, atol=1e-5)


def test_node_update_uses_incoming_edges_only():
    """An atom without incoming edges gets a zero aggregate; changing an edge into atom 0 changes only atom 0."""
    torch.manual_seed(0)
    layer = NodeUpdate(8, n_heads=2, hidden=6, hyper_hidden=[5], hyper_rank=2)
    h = torch.randn(3, 8)
    table = torch.randn(3, 8)
    src, dst = torch.tensor([1, 2, 1]), torch.tensor([0, 0, 2])
    rank = torch.tensor([1, 1, 2])
    agg = layer.aggregate(h, EdgeState(table), EdgeIndex(src, dst, rank, 3))
    assert torch.equal(agg[1], torch.zeros(8))
    agg2 = layer.aggregate(h, EdgeState(table), EdgeIndex(src, dst, torch.tensor([1, 2, 2]), 3))
    assert not torch.allclose(agg[0], agg2[0])
    torch.testing.assert_close(agg[2], agg2[2])


def test_edge_table_update_equals_per_edge_computation():
    torch.manual_seed(0)
    h, table, index = _toy_graph()
    upd = EdgeTableUpdate(8, 8)
    new = upd(h, EdgeState(table), index)
    assert not new.per_edge and new.features.shape == table.shape
    per_edge = table[index.rank]
    torch.testing.assert_close(new.per_edge_features(index), per_edge + upd.lin2(F.silu(upd.lin1(per_edge))))


def test_edge_attention_update_is_per_edge():
    torch.manual_seed(0)
    h, table, index = _toy_graph()
    new = EdgeAttentionUpdate(8, 6)(h, EdgeState(table), index)
    assert new.per_edge and new.features.shape == (index.src.shape[0], 8)
    # two edges with the same rank but different endpoints get different features
    same_rank = (index.rank == index.rank[0]).nonzero().flatten()
    assert len(same_rank) > 1 and not torch.allclose(new.features[same_rank[0]], new.features[same_rank[1]])
