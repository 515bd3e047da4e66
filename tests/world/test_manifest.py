from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from screener.world.manifest import label_statistics


def test_label_statistics_on_known_numbers():
    pbe = np.array([0.0, 0.0, 0.1, 0.2, 0.5])
    scan = np.array([0.0, 0.05, 0.1, 0.3, 0.6])
    form = {"pbe": -pbe, "scan": -scan - 0.1}
    stats = label_statistics({"pbe": pbe, "scan": scan}, form)
    assert stats["e_above_hull"]["pbe"]["median"] == pytest.approx(0.1)
    assert stats["e_above_hull"]["pbe"]["fraction_stable"] == pytest.approx(0.4)
    assert stats["e_above_hull"]["scan"]["fraction_stable"] == pytest.approx(0.2)
    cmp = stats["pbe_vs_scan"]
    assert cmp["e_above_hull_pearson"] == pytest.approx(np.corrcoef(pbe, scan)[0, 1])
    assert cmp["e_above_hull_spearman"] == pytest.approx(spearmanr(pbe, scan).statistic)  # ties: < 1
    assert cmp["e_above_hull_mae_ev_per_atom"] == pytest.approx(np.mean(np.abs(pbe - scan)))
    assert cmp["e_form_mean_scan_minus_pbe_ev_per_atom"] == pytest.approx(-0.1 - np.mean(scan - pbe))
    assert cmp["n_stable_pbe_only"] == 1 and cmp["n_stable_both"] == 1
    assert cmp["stability_agreement"] == pytest.approx(0.8)
