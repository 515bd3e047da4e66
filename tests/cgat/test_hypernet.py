"""Tests of screener.cgat.hypernet: the low-rank per-node weights equal their explicit matrices."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from screener.cgat.hypernet import HyperLinear, NodeHyperNetwork, low_rank_hyper_linear


def test_low_rank_equals_materialised_per_node_weights():
    torch.manual_seed(0)
    n, d_in, d_out, r = 5, 6, 4, 3
    x = torch.randn(n, d_in)
    gen = torch.randn(n, r * (d_out + d_in))
    w0, b0 = torch.randn(d_out, d_in), torch.randn(d_out)
    got = low_rank_hyper_linear(x, gen, w0, b0, r, 0.5)
    u = gen[:, : d_out * r].reshape(n, d_out, r)
    v = gen[:, d_out * r :].reshape(n, d_in, r)
    for i in range(n):
        w_i = w0 + 0.5 * u[i] @ v[i].T
        torch.testing.assert_close(got[i], w_i @ x[i] + b0, rtol=1e-5, atol=1e-5)


def test_weights_depend_on_context():
    torch.manual_seed(0)
    layer = HyperLinear(8, 8, context_features=4, rank=2)
    x = torch.randn(1, 8).expand(2, 8)
    ctx = torch.randn(2, 4)
    y = layer(x, ctx)
    assert not torch.allclose(y[0], y[1])  # same input, different node context -> different weights


def test_rank_zero_is_plain_linear():
    layer = HyperLinear(8, 5, context_features=4, rank=0)
    x = torch.randn(3, 8)
    torch.testing.assert_close(layer(x, torch.randn(3, 4)), F.linear(x, layer.weight, layer.bias))
    assert layer.generator is None


def test_node_hypernetwork_shapes_and_gradients():
    torch.manual_seed(0)
    net = NodeHyperNetwork(16, [12, 10], rank=3)
    agg, h0 = torch.randn(7, 16), torch.randn(7, 16)
    out = net(agg, h0)
    assert out.shape == (7, 16)
    out.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert "rank=3" in repr(net)
