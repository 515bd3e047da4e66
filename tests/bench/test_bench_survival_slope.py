"""bench/survival_slope_from_ledgers.py: the slope of ln(competitor survival) in the probit of purchase outcomes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy.special import ndtr, ndtri

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import pytest  # noqa: E402
from survival_slope_from_ledgers import fit_slope, main  # noqa: E402


def _rows(slope: float, n: int = 1200, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.6, n)
    s = rng.uniform(0.05, 1.0, n)
    stable = rng.random(n) < ndtr(ndtri(p) + slope * np.log(s))
    fidelity = np.where(rng.random(n) < 0.8, "pbe", "scan")
    # "campaign" follows the survival, "truth" does not: one fit each
    return [{"fidelity": f, "p": float(a), "s": float(b), "campaign": bool(y), "truth": bool(t)}
            for f, a, b, y, t in zip(fidelity, p, s, stable, rng.random(n) < p)]


def test_the_slope_is_found_where_outcomes_follow_the_survival_and_not_where_they_do_not():
    rows = _rows(1.0)
    followed, ignored = fit_slope(rows, "campaign"), fit_slope(rows, "truth")
    assert 0.7 < followed["g"] < 1.3 and followed["lr_chi2"] > 10
    assert abs(ignored["g"]) < 0.3 and ignored["lr_chi2"] < 6
    assert followed["n_stable"] == sum(r["campaign"] for r in rows)


def test_a_folder_that_is_not_a_finished_campaign_is_a_usage_error_before_any_world_is_read(tmp_path, capsys):
    (tmp_path / "camp").mkdir()
    (tmp_path / "camp.score.json").write_text("{}")  # a glob's score file beside it is passed over
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "camp"), str(tmp_path / "camp.score.json"), "--world", str(tmp_path / "no-world")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "not a finished campaign folder" in err and "camp.score.json" not in err
