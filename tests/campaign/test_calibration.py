"""The campaign refits the spread scale on its prospective errors and ranks with it; the expected-value planner
records its numbers in every decision (fast fakes: tests/campaign/campaign_fakes.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from campaign_fakes import FakeCalculator, FakeExecutor, FakeHulls, FakeModel, GreedyPlanner, make_structures

from screener.campaign import Campaign, CampaignConfig, Components
from screener.campaign.components import PolicyPlanner
from screener.policies import load_policy


class NarrowModel(FakeModel):
    """Errors of +-0.05 eV/atom with a spread of 0.01: overconfident by ~3x."""

    def predict_formation_energy(self, structures, fidelity):
        mean, _ = super().predict_formation_energy(structures, fidelity)
        return mean, np.full(len(mean), 0.01)

    def fine_tune(self, *args, **kwargs):  # keep the errors: the spread must be recalibrated, not learned away
        return []


def _factory(store, planner=None):
    def factory(config, campaign_dir, ledger):
        plan = planner(config, ledger) if planner else GreedyPlanner()
        return Components(FakeCalculator(), FakeExecutor(store), NarrowModel(), FakeHulls(), plan)

    return factory


def test_spread_scale_refitted_on_prospective_errors(tmp_path):
    camp = Campaign.create(tmp_path / "c", CampaignConfig(budget_total=40, batch_size=6), make_structures(24),
                           _factory(tmp_path / "s"))
    camp.run(max_rounds=3)
    rounds = camp.ledger.rounds()
    decisions = {r["round"]: r for r in rounds}
    preds2 = {(p["structure_id"], p["fidelity"]): p for p in camp.ledger.predictions(2)}
    p = next(iter(preds2.values()))
    scale = p["e_hull_std_ev_per_atom"] / p["e_form_std_ev_per_atom"]
    assert scale > 1.5  # widened after round 1's errors (|error| up to 5 std)
    info1 = decisions[1]["info"]
    assert info1["within_1_sigma_raw_pbe"] < 0.5
    # later rounds rank with the refitted scale: more of their new errors fall within 1 sigma
    info3 = decisions[3]["info"]
    assert info3["within_1_sigma_calibrated_pbe"] > info3["within_1_sigma_raw_pbe"]
    camp.close()


def test_expected_value_planner_records_numbers_per_decision(tmp_path):
    policy = load_policy("expected-value")

    def planner(config, ledger):
        return PolicyPlanner(policy, config, ledger=ledger, hulls=None)

    camp = Campaign.create(tmp_path / "c", CampaignConfig(budget_total=30, batch_size=4), make_structures(16),
                           _factory(tmp_path / "s", planner))
    camp.run(max_rounds=2)
    decisions = camp.ledger.decisions()
    assert decisions
    for d in decisions:
        numbers = json.loads(d["numbers_json"])
        assert numbers["p_scan_stable"] == pytest.approx(numbers["p_scan_stable"])  # a number, not None
        assert "rate_scan_per_cpu_hour" in numbers and "learning_value_pbe" in numbers
    camp.close()


def test_the_spread_scale_is_fitted_on_the_latest_rounds_that_hold_enough_errors():
    """Older rounds' errors came from a model the fine-tunes have since changed: only the latest rounds that together
    hold CALIBRATION_MIN_ERRORS computed structures count (all rounds while they hold fewer)."""
    import types

    from screener.campaign.ranking import calibration_rounds

    per_round = {1: 12, 2: 8, 3: 9, 4: 7}
    done = [(r, f"s{r}-{k}", "pbe") for r, n in per_round.items() for k in range(n)]
    ledger = types.SimpleNamespace(done_calculations=lambda fidelity=None: [d for d in done
                                                                           if fidelity in (None, d[2])])
    targets = {"pbe": {sid: -1.0 for _, sid, _ in done}}
    assert calibration_rounds(ledger, targets, "pbe", 5, min_errors=20) == range(2, 5)  # 7 + 9 + 8 = 24 >= 20
    assert calibration_rounds(ledger, targets, "pbe", 5, min_errors=5) == range(4, 5)
    assert calibration_rounds(ledger, targets, "pbe", 3, min_errors=100) == range(1, 3)  # too few: every round
    assert calibration_rounds(ledger, targets, "pbe", 1) == range(1, 1)
    assert calibration_rounds(ledger, {"pbe": {}}, "pbe", 5) == range(1, 5)


class StdBlindModel(NarrowModel):
    """Errors of +-0.05 eV/atom whatever the std, which spans 0.002-0.5 eV/atom: the std says nothing about them."""

    def predict_formation_energy(self, structures, fidelity):
        mean, _ = super().predict_formation_energy(structures, fidelity)
        return mean, np.geomspace(0.002, 0.5, len(mean))


def test_spread_exponent_refitted_and_ranked_with(tmp_path):
    """The campaign fits the power-law exponent on its prospective errors (prior 0.35): errors blind to the std
    pull it towards 0, and the round ranks with sigma = scale 0.1 (std / 0.1)^exponent; the default is recorded in
    the plan's numbers. ``spread_exponent_prior: null`` keeps one plain scale."""

    def factory(config, campaign_dir, ledger):
        return Components(FakeCalculator(), FakeExecutor(tmp_path / "s"), StdBlindModel(), FakeHulls(),
                          GreedyPlanner())

    camp = Campaign.create(tmp_path / "c", CampaignConfig(budget_total=60, batch_size=8), make_structures(30),
                           factory)
    camp.run(max_rounds=3)
    assert camp.config.spread_exponent_prior == 0.35
    cal = camp._spread_calibration(3)
    assert cal["pbe"].n_errors > 0 and cal["pbe"].exponent < 0.3  # pulled from the prior toward 0
    preds = [p for p in camp.ledger.predictions(3) if p["fidelity"] == "pbe"]
    raw = np.array([p["e_form_std_ev_per_atom"] for p in preds])
    used = np.array([p["e_hull_std_ev_per_atom"] for p in preds])
    np.testing.assert_allclose(used, cal["pbe"].scale * 0.1 * (raw / 0.1) ** cal["pbe"].exponent, rtol=1e-6)
    camp.close()

    plain = Campaign.create(tmp_path / "p", CampaignConfig(budget_total=60, batch_size=8, spread_exponent_prior=None),
                            make_structures(30), factory)
    plain.run(max_rounds=2)
    cal = plain._spread_calibration(2)
    assert cal["pbe"].exponent == 1.0 and cal["pbe"].exponent_prior is None
    plain.close()


class CardModel(NarrowModel):
    """A model whose calibration.json records a held-out power-law fit (scale 2, exponent 0.6)."""

    def spread_scales(self):
        return {"pbe": 2.0, "scan": 2.0}

    def spread_exponents(self):
        return {"pbe": 0.6}


def test_round_one_ranks_with_the_initial_models_recorded_scale_and_exponent(tmp_path):
    def factory(config, campaign_dir, ledger):
        return Components(FakeCalculator(), FakeExecutor(tmp_path / "s"), CardModel(), FakeHulls(), GreedyPlanner())

    camp = Campaign.create(tmp_path / "c", CampaignConfig(budget_total=20, batch_size=4), make_structures(12),
                           factory)
    cal = camp._spread_calibration(1)
    assert cal["pbe"].scale == 2.0 and cal["pbe"].exponent == 0.6 and cal["pbe"].n_errors == 0
    camp.run(max_rounds=1)
    preds = [p for p in camp.ledger.predictions(1) if p["fidelity"] == "pbe"]
    raw = np.array([p["e_form_std_ev_per_atom"] for p in preds])
    used = np.array([p["e_hull_std_ev_per_atom"] for p in preds])
    np.testing.assert_allclose(used, 2.0 * 0.1 * (raw / 0.1) ** 0.6, rtol=1e-6)
    camp.close()
    # one plain scale asked for: the recorded exponent is not used (exponent 1)
    plain = Campaign.create(tmp_path / "p", CampaignConfig(budget_total=20, batch_size=4, spread_exponent_prior=None),
                            make_structures(12), factory)
    assert plain._spread_calibration(1)["pbe"].exponent == 1.0
    plain.close()


class ScanCardModel(CardModel):
    """Started from a SCAN ensemble whose calibration.json records its own held-out SCAN fit (scale 1.3, 0.8)."""

    def own_scan_calibration(self):
        from screener.policies.calibration import SpreadCalibration

        return SpreadCalibration(scale=1.3, exponent=0.8)

    def borrows_model(self, fidelity):
        return False


def test_an_initial_scan_models_own_fit_is_the_scan_prior_in_place_of_the_pbe_fit(tmp_path):
    def factory_for(model):
        def factory(config, campaign_dir, ledger):
            return Components(FakeCalculator(), FakeExecutor(tmp_path / "s"), model, FakeHulls(), GreedyPlanner())
        return factory

    camp = Campaign.create(tmp_path / "c", CampaignConfig(budget_total=20, batch_size=4), make_structures(12),
                           factory_for(ScanCardModel()))
    cal = camp._spread_calibration(1)
    assert (cal["pbe"].scale, cal["pbe"].exponent) == (2.0, 0.6)
    assert (cal["scan"].scale, cal["scan"].exponent, cal["scan"].n_errors) == (1.3, 0.8, 0)
    camp.close()
    borrowed = Campaign.create(tmp_path / "b", CampaignConfig(budget_total=20, batch_size=4), make_structures(12),
                               factory_for(CardModel()))  # no SCAN model of its own: the PBE fit stands in
    cal = borrowed._spread_calibration(1)
    assert (cal["scan"].scale, cal["scan"].exponent) == (2.0, 0.6)
    borrowed.close()


def test_recorded_calibration_is_read_as_plain_numbers(tmp_path):
    from screener.campaign.ensemble_model import (
        model_spread_calibration,
        read_spread_calibration,
        read_spread_exponents,
        write_spread_calibration,
    )
    from screener.policies.calibration import SpreadCalibration

    write_spread_calibration(tmp_path, {"model": SpreadCalibration(scale=1.7, exponent=0.4)})
    assert read_spread_calibration(tmp_path) == {"model": 1.7, "pbe": 1.7, "scan": 1.7}
    assert read_spread_exponents(tmp_path) == {"model": 0.4, "pbe": 0.4, "scan": 0.4}
    fit = model_spread_calibration(tmp_path, "pbe")
    assert (fit.scale, fit.exponent) == (1.7, 0.4)
    # a named fidelity wins over "model"; an exponent out of [0, 1] or not a number is ignored (a plain scale)
    (tmp_path / "calibration.json").write_text(json.dumps({"fidelities": {
        "model": {"scale": 1.7, "exponent": 0.4}, "pbe": {"scale": 1.2, "exponent": "0.3"},
        "scan": {"scale": 3.0, "exponent": 7}}}))
    assert read_spread_calibration(tmp_path) == {"model": 1.7, "pbe": 1.2, "scan": 3.0}
    assert read_spread_exponents(tmp_path) == {"model": 0.4}
    assert model_spread_calibration(tmp_path, "pbe").exponent == 1.0
