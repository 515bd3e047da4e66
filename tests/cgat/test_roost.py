"""Tests of screener.cgat.roost and screener.cgat.pooling: composition vectors and attention pooling."""

from __future__ import annotations

import torch

from screener.cgat.pooling import AttentionPool
from screener.cgat.roost import RoostEncoder


def test_roost_single_element_and_batching():
    torch.manual_seed(0)
    enc = RoostEncoder(8, n_heads=2, n_steps=2, hidden=6)
    feats = torch.randn(4, 8)
    fractions = torch.tensor([1.0, 0.25, 0.75, 1.0])
    crystal = torch.tensor([0, 1, 1, 2])
    out = enc(feats, fractions, crystal, 3)
    assert out.shape == (3, 8) and torch.isfinite(out).all()
    alone = enc(feats[1:3], fractions[1:3], torch.tensor([0, 0]), 1)
    torch.testing.assert_close(out[1:2], alone)
    # crystals 0 and 2 hold the same single element with different features -> different vectors
    assert not torch.allclose(out[0], out[2])


def test_roost_depends_on_fractions():
    torch.manual_seed(0)
    enc = RoostEncoder(8, n_heads=2, n_steps=1, hidden=6)
    feats = torch.randn(2, 8)
    crystal = torch.tensor([0, 0])
    a = enc(feats, torch.tensor([0.5, 0.5]), crystal, 1)
    b = enc(feats, torch.tensor([0.9, 0.1]), crystal, 1)
    assert not torch.allclose(a, b)


def test_pool_weight_power_zero_ignores_weights():
    torch.manual_seed(0)
    pool = AttentionPool(4, 3, n_heads=2, hidden=5, concat=True)
    x = torch.randn(5, 4)
    index = torch.tensor([0, 0, 0, 1, 1])
    plain = pool(x, index, 2)
    assert plain.shape == (2, 6)
    torch.testing.assert_close(pool(x, index, 2, log_weight=torch.zeros(5)), plain)
    # an overwhelming weight on one row makes the pool return that row's message
    heavy = pool(x, index, 2, log_weight=torch.tensor([50.0, 0, 0, 0, 0]))
    only_first = pool(x[:1], torch.tensor([0]), 1)
    torch.testing.assert_close(heavy[0], only_first[0])
    assert "concat=True" in repr(pool)
