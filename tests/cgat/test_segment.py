"""Tests of screener.cgat.segment: segment softmax/sum against dense references, complete graphs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from screener.cgat.segment import complete_graph_pairs, segment_softmax, segment_sum, segment_weighted_sum


def _dense_softmax(scores, index, n):
    out = torch.empty_like(scores)
    for s in range(n):
        rows = index == s
        if rows.any():
            out[rows] = torch.softmax(scores[rows], dim=0)
    return out


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=30), st.integers(0, 2**16))
def test_segment_softmax_matches_dense(index_list, seed):
    g = torch.Generator().manual_seed(seed)
    index = torch.tensor(index_list)
    scores = 10 * torch.randn(len(index_list), 3, 2, generator=g)
    got = segment_softmax(scores, index, 5)
    torch.testing.assert_close(got, _dense_softmax(scores, index, 5))
    sums = segment_sum(got, index, 5)
    present = torch.bincount(index, minlength=5) > 0
    torch.testing.assert_close(sums[present], torch.ones_like(sums[present]))
    assert (sums[~present] == 0).all()


def test_segment_softmax_is_stable_for_large_scores():
    scores = torch.tensor([1000.0, 1001.0, -1000.0, -1001.0])
    got = segment_softmax(scores, torch.tensor([0, 0, 1, 1]), 2)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, torch.tensor([0.2689414, 0.7310586, 0.7310586, 0.2689414]))


def test_segment_softmax_gradient_matches_dense():
    scores = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([0, 2, 0, 2, 2, 1, 0])
    w = torch.randn(7, 4, dtype=torch.float64)
    (segment_softmax(scores, index, 3).double() * w).sum().backward()
    grad = scores.grad.clone()
    scores.grad = None
    (_dense_softmax(scores, index, 3) * w).sum().backward()
    torch.testing.assert_close(grad, scores.grad, rtol=1e-5, atol=1e-6)


def test_segment_weighted_sum():
    scores = torch.tensor([[0.0], [0.0], [5.0]])
    values = torch.tensor([[1.0, 2.0], [3.0, 4.0], [7.0, 8.0]])
    out = segment_weighted_sum(scores, values, torch.tensor([0, 0, 1]), 2)
    torch.testing.assert_close(out, torch.tensor([[2.0, 3.0], [7.0, 8.0]]))


def test_segment_sum_accumulates_low_precision_in_float32():
    values = torch.full((4096, 1), 1.0, dtype=torch.bfloat16)
    out = segment_sum(values, torch.zeros(4096, dtype=torch.long), 1)
    assert out.dtype == torch.float32 and float(out) == 4096.0  # bf16 accumulation would stall at 256


def test_complete_graph_pairs():
    src, dst = complete_graph_pairs(torch.tensor([0, 0, 0, 1, 2, 2]))
    pairs = set(zip(src.tolist(), dst.tolist()))
    expected = {(a, b) for a in range(3) for b in range(3)} | {(3, 3)} | {(a, b) for a in (4, 5) for b in (4, 5)}
    assert pairs == expected and len(src) == len(expected)


def test_complete_graph_pairs_rejects_unsorted_and_handles_empty():
    with pytest.raises(ValueError, match="sorted"):
        complete_graph_pairs(torch.tensor([1, 0]))
    src, dst = complete_graph_pairs(torch.zeros(0, dtype=torch.long))
    assert src.numel() == dst.numel() == 0
