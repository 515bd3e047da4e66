"""Tests of screener/graphs/build.py: neighbour lists, shell ranks, radius growth, validation."""

from __future__ import annotations

import csv
import itertools
import logging
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymatgen.core import DummySpecies, Lattice, Structure

from screener.errors import InvalidStructureError
from screener.graphs import build as build_module
from screener.graphs import build_graph
from screener.graphs.build import (
    TIE_ATOL_ANGSTROM,
    TIE_RTOL,
    initial_radius_angstrom,
    neighbor_shells,
)

CU_A = 3.61
NACL_A = 5.64


def fcc_cu_primitive() -> Structure:
    half = CU_A / 2
    return Structure(Lattice([[0, half, half], [half, 0, half], [half, half, 0]]), ["Cu"], [[0, 0, 0]])


def nacl_primitive() -> Structure:
    a = NACL_A
    lattice = Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])
    return Structure(lattice, ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def mp20_structure(material_id: str, data_dir: Path) -> Structure:
    with open(data_dir / "mp_20_subset" / "test.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["material_id"] == material_id:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return Structure.from_str(row["cif"], fmt="cif")
    raise KeyError(material_id)


def brute_force(structure: Structure, n_neighbors: int, reach_angstrom: float = 12.0):
    """Per site: the n smallest distances over explicit periodic images and their shell ranks (independent code)."""
    matrix = structure.lattice.matrix
    recip = np.linalg.inv(matrix).T  # rows: reciprocal vectors without 2 pi
    m = [math.ceil(reach_angstrom * np.linalg.norm(recip[k])) + 1 for k in range(3)]
    images = np.array(list(itertools.product(*(range(-mk, mk + 1) for mk in m))), dtype=float)
    frac = structure.frac_coords
    out_d, out_r = [], []
    for i in range(len(structure)):
        dists = []
        for j in range(len(structure)):
            cart = (frac[j] + images - frac[i]) @ matrix
            d = np.linalg.norm(cart, axis=1)
            if i == j:
                d = d[np.any(images != 0, axis=1)]
            dists.extend(d.tolist())
        dists = sorted(dists)[:n_neighbors]
        assert dists[-1] < reach_angstrom - 1.0, "reference reach too small"
        ranks, rank = [], 1
        for k, d in enumerate(dists):
            if k and d - dists[k - 1] > TIE_RTOL * d + TIE_ATOL_ANGSTROM:
                rank += 1
            ranks.append(rank)
        out_d.append(dists)
        out_r.append(ranks)
    return np.array(out_d), np.array(out_r)


def test_fcc_cu_shells():
    structure = fcc_cu_primitive()
    neighbors, images, ranks, dists, _ = neighbor_shells(structure)
    g = build_graph(structure, structure_id="Cu")
    assert g.n_atoms == 1 and g.n_edges == 24 and g.structure_id == "Cu"
    np.testing.assert_array_equal(g.edge_rank, ranks[0])
    assert ranks[0].tolist() == [1] * 12 + [2] * 6 + [3] * 6
    np.testing.assert_allclose(dists[0, :12], CU_A / math.sqrt(2), rtol=1e-12)
    np.testing.assert_allclose(dists[0, 12:18], CU_A, rtol=1e-12)
    np.testing.assert_allclose(dists[0, 18:], CU_A * math.sqrt(1.5), rtol=1e-12)
    # 12 distinct images in the first shell, all of site 0
    assert len({tuple(im) for im in images[0]}) == 24
    assert (neighbors == 0).all()


def test_fcc_cu_conventional_cell_counts():
    structure = Structure.from_spacegroup("Fm-3m", Lattice.cubic(CU_A), ["Cu"], [[0, 0, 0]])
    g = build_graph(structure)
    assert g.n_atoms == 4 and g.n_edges == 96
    ranks = g.edge_rank.reshape(4, 24)
    for row in ranks:
        assert np.bincount(row).tolist() == [0, 12, 6, 6]


def test_rocksalt_nacl_shells():
    structure = nacl_primitive()
    neighbors, _, ranks, dists, _ = neighbor_shells(structure)
    g = build_graph(structure)
    assert g.comp_numbers.tolist() == [11, 17]
    np.testing.assert_allclose(g.comp_fractions, [0.5, 0.5])
    for site, other in ((0, 1), (1, 0)):
        assert ranks[site].tolist() == [1] * 6 + [2] * 12 + [3] * 6
        np.testing.assert_allclose(dists[site, :6], NACL_A / 2, rtol=1e-12)
        np.testing.assert_allclose(dists[site, 6:18], NACL_A / math.sqrt(2), rtol=1e-12)
        np.testing.assert_allclose(dists[site, 18:], NACL_A * math.sqrt(3) / 2, rtol=1e-12)
        assert (neighbors[site, :6] == other).all()  # 6 Cl around Na (and 6 Na around Cl)
        assert (neighbors[site, 6:18] == site).all()  # 12 like ions
        assert (neighbors[site, 18:] == other).all()
    np.testing.assert_array_equal(g.edge_rank, ranks.reshape(-1))
    np.testing.assert_array_equal(g.edge_dst, neighbors.reshape(-1))
    np.testing.assert_array_equal(g.edge_src, np.repeat([0, 1], 24))


@pytest.mark.parametrize("material_id", ["mp-1206085", "mp-849335"])  # MnCuF6 (P-1), Ti3N2O3 (C2/m)
def test_low_symmetry_ternary_matches_brute_force(material_id, data_dir):
    structure = mp20_structure(material_id, data_dir)
    assert len(structure.composition.elements) == 3
    neighbors, images, ranks, dists, _ = neighbor_shells(structure)
    ref_d, ref_r = brute_force(structure, 24)
    # tied distances (within 1e-8 relative) are ordered by (index, image), not by their last bits
    np.testing.assert_allclose(np.sort(dists, axis=1), ref_d, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(ranks, ref_r)
    # the stored (neighbour, image) really is at the stored distance
    frac = structure.frac_coords
    vec = (frac[neighbors] + images - frac[:, None, :]) @ structure.lattice.matrix
    np.testing.assert_allclose(np.linalg.norm(vec, axis=-1), dists, atol=1e-9)
    g = build_graph(structure)
    assert g.n_edges == 24 * len(structure)
    assert np.bincount(g.edge_src).tolist() == [24] * len(structure)  # out-degree fixed
    assert np.bincount(g.edge_dst, minlength=len(structure)).sum() == g.n_edges


def test_in_degree_varies(data_dir):
    g = build_graph(mp20_structure("mp-758558", data_dir))  # SbNO
    assert np.bincount(g.edge_src).tolist() == [24] * 6
    assert np.bincount(g.edge_dst).tolist() == [24, 24, 21, 21, 27, 27]


def test_single_atom_cell_edges_are_periodic_images_of_itself():
    g = build_graph(Structure(Lattice.cubic(3.0), ["Po"], [[0, 0, 0]]))
    assert g.n_edges == 24
    assert (g.edge_src == 0).all() and (g.edge_dst == 0).all()
    assert g.comp_numbers.tolist() == [84] and g.comp_fractions.tolist() == [1.0]
    assert np.bincount(g.edge_rank).tolist() == [0, 6, 12, 6]


def test_ties_broken_by_neighbour_index_then_image():
    # simple cubic: third shell has 8 images (+-1, +-1, +-1); 6 are kept, the lexicographically smallest images.
    _, images, ranks, _, _ = neighbor_shells(Structure(Lattice.cubic(2.0), ["Cu"], [[0, 0, 0]]))
    third = [tuple(im) for im in images[0, ranks[0] == 3]]
    expected = sorted(itertools.product((-1, 1), repeat=3))[:6]
    assert third == expected
    # within a shell: (index, image) ascending
    keys = [(r, tuple(im)) for r, im in zip(ranks[0], images[0])]
    assert keys == sorted(keys)


def test_ties_break_by_neighbour_index_in_supercell():
    structure = Structure(Lattice.cubic(2.0), ["Cu"], [[0, 0, 0]]) * (2, 1, 1)
    neighbors, images, ranks, _, _ = neighbor_shells(structure)
    for site in range(2):
        keys = [(r, n, tuple(im)) for r, n, im in zip(ranks[site], neighbors[site], images[site])]
        assert keys == sorted(keys)


def test_graph_is_deterministic_and_permutation_consistent(data_dir):
    structure = mp20_structure("mp-1206085", data_dir)
    a, b = build_graph(structure), build_graph(structure.copy())
    for name in ("edge_src", "edge_dst", "edge_rank", "atomic_numbers"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    perm = np.random.default_rng(0).permutation(len(structure))
    permuted = Structure(structure.lattice, [structure[i].specie for i in perm], structure.frac_coords[perm])
    c = build_graph(permuted)
    # each site keeps its rank profile (which neighbours are chosen among ties may differ, ranks may not)
    np.testing.assert_array_equal(c.edge_rank.reshape(-1, 24), a.edge_rank.reshape(-1, 24)[perm])


def test_tie_tolerance():
    # 2 atoms along x at +-d: distances differing by less than the tolerance share a rank, larger gaps do not
    def ranks_for(shift: float) -> list[int]:
        lattice = Lattice.orthorhombic(20.0, 30.0, 40.0)
        s = Structure(lattice, ["Cu"] * 3, [[0.5, 0.5, 0.5], [0.55, 0.5, 0.5], [0.45 - shift, 0.5, 0.5]])
        _, _, ranks, _, _ = neighbor_shells(s, n_neighbors=2)
        return ranks[0].tolist()

    assert ranks_for(0.0) == [1, 1]
    assert ranks_for(1e-12) == [1, 1]  # 2e-11 A apart: same shell
    assert ranks_for(1e-6) == [1, 2]  # 2e-5 A apart: different shells


def test_rank_increments_by_one_per_distinct_distance(data_dir):
    structure = mp20_structure("mp-849335", data_dir)
    _, _, ranks, dists, _ = neighbor_shells(structure)
    assert (ranks[:, 0] == 1).all()
    step = np.diff(ranks, axis=1)
    assert set(np.unique(step).tolist()) <= {0, 1}
    # within a shell neighbours are in (index, image) order, so look at distances sorted within each shell
    order = np.array([np.lexsort((d, r)) for d, r in zip(dists, ranks)])
    d_sorted = np.take_along_axis(dists, order, axis=1)
    assert (np.diff(d_sorted, axis=1) >= 0).all()
    gap = np.diff(d_sorted, axis=1)
    np.testing.assert_array_equal(step == 1, gap > TIE_RTOL * d_sorted[:, 1:] + TIE_ATOL_ANGSTROM)


@pytest.mark.parametrize(
    "structure",
    [
        Structure(Lattice.cubic(10.0), ["Cu"], [[0, 0, 0]]),  # very sparse cell
        Structure(Lattice.orthorhombic(3.0, 3.2, 45.0), ["Cu", "Cu"], [[0, 0, 0], [0.5, 0.5, 0.05]]),  # slab-like
        Structure(Lattice.orthorhombic(2.5, 40.0, 40.0), ["Fe"], [[0, 0, 0]]),  # chain
    ],
    ids=["sparse", "slab", "chain"],
)
def test_radius_grows_until_every_site_has_enough_neighbours(structure):
    neighbors, _, ranks, dists, radius = neighbor_shells(structure)
    assert neighbors.shape == (len(structure), 24)
    ref_d, ref_r = brute_force(structure, 24, reach_angstrom=2 * radius + 5)
    np.testing.assert_allclose(dists, ref_d, atol=1e-9)
    np.testing.assert_array_equal(ranks, ref_r)


def test_radius_growth_gives_the_same_graph(monkeypatch, data_dir, caplog):
    structure = mp20_structure("mp-849335", data_dir)
    expected = neighbor_shells(structure)
    monkeypatch.setattr(build_module, "RADIUS_SAFETY", 0.2)  # start far too small: must grow 4 times
    with caplog.at_level(logging.DEBUG, logger="screener.graphs.build"):
        got = neighbor_shells(structure, structure_id="Ti3N2O3")
    assert got[4] > initial_radius_angstrom(structure.volume, len(structure), 24) * 1.5**3
    assert "growing" in caplog.text
    for e, g in zip(expected[:4], got[:4]):
        np.testing.assert_array_equal(e, g)


def test_n_neighbors_other_than_24():
    g = build_graph(fcc_cu_primitive(), n_neighbors=12)
    assert g.n_edges == 12 and (g.edge_rank == 1).all()
    with pytest.raises(ValueError):
        build_graph(fcc_cu_primitive(), n_neighbors=0)


def test_element_without_embedding_raises():
    s = Structure(Lattice.cubic(4.0), ["Rf", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(InvalidStructureError) as info:
        build_graph(s, structure_id="bad-1")
    assert info.value.structure_id == "bad-1"
    assert "Rf" in info.value.reason


def test_disordered_and_dummy_sites_raise():
    disordered = Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Ni": 0.5}], [[0, 0, 0]])
    with pytest.raises(InvalidStructureError, match="disordered"):
        build_graph(disordered, structure_id="dis")
    dummy = Structure(Lattice.cubic(4.0), [DummySpecies("X")], [[0, 0, 0]])
    with pytest.raises(InvalidStructureError):
        build_graph(dummy, structure_id="dummy")


def test_coincident_sites_raise():
    s = Structure(Lattice.cubic(4.0), ["Cu", "Cu"], [[0, 0, 0], [0, 0, 1e-6]])
    with pytest.raises(InvalidStructureError, match="coincide"):
        build_graph(s, structure_id="dup")


@settings(max_examples=25, deadline=None)
@given(
    abc=st.tuples(*[st.floats(2.5, 9.0)] * 3),
    angles=st.tuples(*[st.floats(70.0, 110.0)] * 3),
    frac=st.lists(st.tuples(*[st.floats(0, 1, exclude_max=True)] * 3), min_size=1, max_size=4),
)
def test_random_cells_match_brute_force(abc, angles, frac):
    lattice = Lattice.from_parameters(*abc, *angles)
    if lattice.volume < 5.0:
        return
    s = Structure(lattice, ["Si"] * len(frac), frac)
    if len(s) > 1 and np.min(s.distance_matrix[np.triu_indices(len(s), 1)]) < 0.5:
        return
    _, _, ranks, dists, radius = neighbor_shells(s, n_neighbors=8)
    ref_d, ref_r = brute_force(s, 8, reach_angstrom=max(12.0, radius + 2))
    np.testing.assert_allclose(dists, ref_d, atol=1e-8)
    # ranks agree wherever the reference does not have a near-tie within 1e-7 (floating-point noise)
    near_tie = np.abs(np.diff(ref_d, axis=1)) < 1e-7
    if not near_tie.any():
        np.testing.assert_array_equal(ranks, ref_r)


def test_two_dimensional_periodicity_and_molecules():
    slab = Structure(Lattice(np.diag([3.0, 3.0, 10.0]), pbc=(True, True, False)), ["Cu"], [[0, 0, 0]])
    _, images, ranks, dists, _ = neighbor_shells(slab)
    assert (images[0, :, 2] == 0).all()  # no images along the non-periodic axis
    assert np.bincount(ranks[0]).tolist() == [0, 4, 4, 4, 8, 4]  # square net: 3, 3*sqrt2, 6, 3*sqrt5, 6*sqrt2
    np.testing.assert_allclose(dists[0, -1], 6 * math.sqrt(2))
    box = Lattice(np.diag([9.0, 9.0, 9.0]), pbc=(False, False, False))
    molecule = Structure(box, ["C", "O"], [[0, 0, 0], [0.1, 0, 0]])
    with pytest.raises(InvalidStructureError, match="not periodic"):
        build_graph(molecule, structure_id="CO")
