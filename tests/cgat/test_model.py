"""Tests of screener.cgat.model.CGAT: shapes, invariances, batching, gradients, head/body split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from screener.cgat.config import PRESETS
from screener.cgat.model import CGAT
from screener.graphs import build_graph, collate_graphs

SMALL = PRESETS["small"]


def _model(seed: int = 0, **changes) -> CGAT:
    torch.manual_seed(seed)
    model = CGAT(SMALL.model_copy(update=changes))
    # ReZero alphas start at 0 (the head is linear at init); give them values so the tests see the whole network
    with torch.no_grad():
        for block in model.head.blocks:
            block.alpha.fill_(0.5)
    return model.eval()


def _predict(model: CGAT, graphs) -> torch.Tensor:
    with torch.no_grad():
        pred, log_std = model(collate_graphs(graphs))
    return torch.stack([pred, log_std]) if log_std is not None else pred


def test_output_shapes(graphs):
    model = _model()
    batch = collate_graphs(graphs)
    pred, log_std = model(batch)
    assert pred.shape == (len(graphs),) and log_std.shape == (len(graphs),)
    assert pred.dtype == torch.float32 and torch.isfinite(pred).all() and torch.isfinite(log_std).all()
    emb = model.crystal_embedding(batch)
    assert emb.shape == (len(graphs), SMALL.n_heads * SMALL.atom_fea_len)


def test_not_robust_returns_none(graphs):
    pred, log_std = _model(robust=False)(collate_graphs(graphs))
    assert pred.shape == (len(graphs),) and log_std is None


def test_predictions_differ_between_crystals(graphs):
    pred = _predict(_model(), graphs)[0]
    assert pred.unique().numel() == len(graphs)


@pytest.mark.parametrize("edge_update", ["table", "attention", "none"])
def test_site_permutation_invariance(make_structure, edge_update):
    s = make_structure(3, 5)
    perm = np.random.default_rng(0).permutation(len(s))
    s_perm = Structure(s.lattice, [s[i].specie for i in perm], s.frac_coords[perm])
    model = _model(edge_update=edge_update)
    a = _predict(model, [build_graph(s)])
    b = _predict(model, [build_graph(s_perm)])
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("edge_update", ["table", "attention"])
def test_supercell_invariance(make_structure, edge_update):
    s = make_structure(4, 3)
    big = s.copy()
    big.make_supercell([2, 1, 1])
    g, g_big = build_graph(s), build_graph(big)
    assert g_big.n_atoms == 2 * g.n_atoms
    model = _model(edge_update=edge_update)
    torch.testing.assert_close(_predict(model, [g]), _predict(model, [g_big]), rtol=1e-5, atol=1e-5)


def test_rigid_rotation_invariance(make_structure):
    s = make_structure(5, 4)
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    rotated = Structure(Lattice(s.lattice.matrix @ q.T), s.species, s.frac_coords)
    g, g_rot = build_graph(s), build_graph(rotated)
    np.testing.assert_array_equal(g.edge_dst, g_rot.edge_dst)
    model = _model()
    torch.testing.assert_close(_predict(model, [g]), _predict(model, [g_rot]), rtol=1e-5, atol=1e-5)


def test_volume_scaling_changes_nothing(make_structure):
    """No distances enter the model: an isotropic strain leaves the prediction unchanged (paper's design)."""
    s = make_structure(6, 3)
    strained = s.copy()
    strained.scale_lattice(s.volume * 1.2)
    model = _model()
    torch.testing.assert_close(_predict(model, [build_graph(s)]), _predict(model, [build_graph(strained)]))


@pytest.mark.parametrize("edge_update", ["table", "attention"])
def test_batching_equals_one_by_one(graphs, edge_update):
    model = _model(edge_update=edge_update)
    together = _predict(model, graphs)
    alone = torch.cat([_predict(model, [g]) for g in graphs], dim=-1)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_single_atom_and_single_element_crystals():
    one_atom = Structure(Lattice.cubic(3.0), ["Po"], [[0, 0, 0]])
    bcc = Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    graphs = [build_graph(one_atom), build_graph(bcc)]
    model = _model()
    out = _predict(model, graphs)
    assert torch.isfinite(out).all()
    # trained through, too
    model.train()
    pred, log_std = model(collate_graphs(graphs))
    (pred.sum() + log_std.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("edge_update", ["table", "attention", "none"])
def test_every_parameter_gets_a_gradient(graphs, edge_update):
    torch.manual_seed(0)
    model = CGAT(SMALL.model_copy(update={"edge_update": edge_update}))
    batch = collate_graphs(graphs)
    target = torch.randn(len(graphs))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):  # one step moves the ReZero alphas off 0; the second backward reaches every weight
        opt.zero_grad()
        pred, log_std = model(batch)
        loss = (2**0.5 * (pred - target).abs() * torch.exp(-log_std) + log_std).mean()
        loss.backward()
        opt.step()
    dead = [name for name, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert dead == []


def test_rezero_head_starts_linear(graphs):
    torch.manual_seed(0)
    model = CGAT(SMALL)
    assert all(float(b.alpha.detach()) == 0.0 for b in model.head.blocks)
    x = torch.randn(3, SMALL.n_heads * SMALL.atom_fea_len)
    y = model.head(x)
    # linear at init: head(a x) - head(0) = a (head(x) - head(0))
    zero = model.head(torch.zeros_like(x))
    torch.testing.assert_close(model.head(2 * x) - zero, 2 * (y - zero), rtol=1e-4, atol=1e-5)


def test_head_body_split(graphs):
    model = _model()
    head = {id(p) for p in model.head.parameters()}
    body = {id(p) for p in model.body_parameters()}
    assert head and body and not head & body
    assert head | body == {id(p) for p in model.parameters()}
    assert model.n_parameters() == sum(p.numel() for p in model.parameters())
    # element table: a buffer, not a parameter, saved with the state dict
    assert "element_table" in dict(model.named_buffers())
    assert "element_table" in model.state_dict()
    assert not any(p is model.element_table for p in model.parameters())
    # head-only transfer: freeze the body, only head weights get gradients
    for p in model.body_parameters():
        p.requires_grad_(False)
    model.train()
    pred, _ = model(collate_graphs(graphs))
    pred.sum().backward()
    assert all(p.grad is None for p in model.body_parameters())
    assert all(p.grad is not None for p in model.head.parameters())
    assert model.n_parameters(trainable_only=True) == sum(p.numel() for p in model.head.parameters())


def test_state_dict_round_trip(graphs):
    a, b = _model(seed=0), _model(seed=1)
    assert not torch.allclose(_predict(a, graphs), _predict(b, graphs))
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(_predict(a, graphs), _predict(b, graphs))


def test_paper_preset_size():
    model = CGAT(PRESETS["paper"])
    assert model.head.blocks[0].in_features == 640
    assert [b.out_features for b in model.head.blocks] == [1024, 1024, 512, 512, 256, 256, 128]
    assert 5e6 < model.n_parameters() < 30e6  # reference: 62.3 M (70% in full-rank hypernetworks)


def test_bf16_autocast_close_to_fp32(graphs):
    model = _model()
    batch = collate_graphs(graphs)
    with torch.no_grad():
        ref, _ = model(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low, log_std = model(batch)
    assert low.dtype == torch.float32 and log_std.dtype == torch.float32
    torch.testing.assert_close(low, ref, rtol=0.05, atol=0.05)


def test_repr_shows_hyperparameters():
    text = repr(_model())
    assert "n_heads=2" in text and "rank=4" in text and "edge_update='table'" in text
