"""bench/scan_hull_from_ledgers.py: SCAN follow-ups by where their PBE result lies on the campaign's SCAN hull."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import pytest  # noqa: E402
from scan_hull_from_ledgers import main, summarise  # noqa: E402


def test_follow_ups_below_the_scan_hull_count_as_stable_and_the_map_finds_the_slope():
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 0.1, 600)
    rows = [{"x_pbe": 0.0, "x_s": float(v), "p": 0.75, "stable": bool(rng.random() < (0.9 if v < 0 else 0.1))}
            for v in x]
    out = summarise(rows)
    assert out["n"] == 600 and out["truly_stable"] == sum(r["stable"] for r in rows)
    below, above = out["bins"][0], out["bins"][-1]
    assert below["truly_stable"] > 0.7 * below["n"] and above["truly_stable"] < 0.3 * above["n"]
    assert sum(b["n"] for b in out["bins"]) == 600
    assert out["auc_minus_x_s"] > 0.8 and out["auc_p_at_purchase"] == pytest.approx(0.5)
    assert out["map_on_truth"]["scan_hull_map_k_per_ev_per_atom"] > 5


def test_a_folder_that_is_not_a_finished_campaign_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "camp").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "camp"), "--world", str(tmp_path / "no-world")])
    assert exit_info.value.code == 2 and "not a finished campaign folder" in capsys.readouterr().err
