"""bench/pbe_depth_vs_scan.py: P(SCAN-stable | PBE-stable) per class of cell size, on hand-made labels."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from pbe_depth_vs_scan import by_cell_size  # noqa: E402


def test_by_cell_size_counts_only_pbe_stable_structures_in_each_class():
    # PBE E_hull (0: on the hull, negative: below the others), SCAN-stable or not, and n_sites
    x = np.array([0.0, -0.02, 0.0, 0.05, 0.0, 0.0, -0.1, 0.2])
    y = np.array([True, False, False, True, True, True, True, False])
    sites = np.array([4, 6, 8, 4, 14, 16, 20, 24])
    out = by_cell_size(x, y, sites, [8, 16])
    assert out == {"1-8": {"n_pbe_stable": 3, "p_scan_stable_if_pbe_stable": 0.333},  # the 0.05 one is left out
                   "9-16": {"n_pbe_stable": 2, "p_scan_stable_if_pbe_stable": 1.0},
                   "17+": {"n_pbe_stable": 1, "p_scan_stable_if_pbe_stable": 1.0}}
    assert by_cell_size(x[:1], y[:1], sites[:1], [2])["1-2"] == {"n_pbe_stable": 0, "p_scan_stable_if_pbe_stable": None}
