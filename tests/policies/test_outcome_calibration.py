"""Outcome calibration: P(stable) recalibrated on purchases (P at purchase, came out stable)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import ndtr, ndtri

from screener.policies import decide
from screener.policies.config import load_policy
from screener.policies.outcome_calibration import (
    OutcomeCalibration,
    cost_class,
    cost_class_edges,
    fit_outcome_calibration,
    fit_outcome_calibration_by_fidelity,
)


def _overrated(n: int, factor: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Purchases whose true stable rate is the stated P divided by ``factor``."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.2, 0.9, n)
    return p, rng.random(n) < p / factor


def test_no_purchases_is_identity() -> None:
    cal = fit_outcome_calibration([], [])
    assert (cal.a, cal.b, cal.n_purchases) == (0.0, 1.0, 0)
    np.testing.assert_allclose(cal.calibrate_p([0.1, 0.5, 0.9]), [0.1, 0.5, 0.9], rtol=1e-9)


def test_overrated_probabilities_are_brought_down_to_the_observed_rate() -> None:
    p, y = _overrated(400, 3.0)
    cal = fit_outcome_calibration(p, y)
    assert cal.a < -0.3
    assert cal.mean_p_calibrated == pytest.approx(y.mean(), abs=0.04)
    assert cal.mean_p_at_purchase > 2 * cal.mean_p_calibrated
    # well-calibrated purchases keep (about) the identity
    p2, y2 = _overrated(400, 1.0, seed=1)
    cal2 = fit_outcome_calibration(p2, y2)
    assert abs(cal2.a) < 0.2 and abs(np.log(cal2.b)) < 0.3


def test_prior_holds_with_few_purchases() -> None:
    few = fit_outcome_calibration([0.8, 0.7, 0.9], [False, False, False], prior_weight=10.0)
    many = fit_outcome_calibration([0.8, 0.7, 0.9] * 30, [False, False, False] * 30, prior_weight=10.0)
    assert 0 > few.a > many.a


def test_calibrated_gaussian_gives_the_calibrated_probability() -> None:
    cal = OutcomeCalibration(a=-0.7, b=0.6)
    mu, sd = np.array([-0.05, 0.0, 0.1]), np.array([0.05, 0.1, 0.2])
    m2, s2 = cal.calibrate_gaussian(mu, sd)
    for t in (0.0, 0.05):
        np.testing.assert_allclose(ndtr((t - m2) / s2), ndtr(cal.a + cal.b * (t - mu) / sd), rtol=1e-12)


def _state(outcomes: list[tuple[str, float, bool]]) -> dict:
    # the budget reaches 10 of the 40 SCAN runs (a screen can save one only then), and the spread (0.1 eV/atom, the
    # PBE -> SCAN relation's residual scale) leaves a PBE result something to say about the SCAN one
    n = 40
    mean = np.linspace(-0.05, 0.3, n)
    return {"candidate_ids": [f"c{i}" for i in range(n)], "chemsys": [f"A-B{i}" for i in range(n)],
            "scan_mean_ev_per_atom": list(mean), "scan_std_ev_per_atom": [0.1] * n,
            "pbe_mean_ev_per_atom": list(mean), "pbe_std_ev_per_atom": [0.1] * n,
            "cost_scan_cpu_hours": [5.0] * n, "cost_pbe_cpu_hours": [1.0] * n, "budget_cpu_hours": 50.0,
            "round_index": 3, "purchase_outcomes": outcomes}


def test_expected_value_policy_screens_more_with_pbe_when_its_purchases_came_out_unstable() -> None:
    base = load_policy("expected-value")
    # (SCAN now valued on the SCAN model's own P: the cap at the PBE view would put the PBE map's P there)
    policy = base.model_copy(update={"batch_size": 10, "expected_value": base.expected_value.model_copy(
        update={"learning_value": False, "scan_now_at_most_pbe_view": False})})
    trusted = decide(policy, _state([]))
    flops = [("scan", 0.7, False)] * 25 + [("pbe", 0.6, False)] * 25 + [("scan", 0.7, True)] * 5
    humbled = decide(policy, _state(flops))
    n_pbe = [sum(i.fidelity == "pbe" for i in plan.items) for plan in (trusted, humbled)]
    assert n_pbe[1] > n_pbe[0]
    assert humbled.numbers["outcome_calibration_a"] < 0
    assert humbled.numbers["outcome_calibration_n_purchases"] == 55
    item = humbled.items[0]
    assert item.numbers["p_scan_stable"] < item.numbers["p_scan_model_raw"] or item.numbers["p_scan_source"] != "model"


def test_cost_class_offsets_learn_a_size_pattern_no_slope_follows_and_are_inert_at_equal_costs() -> None:
    rng = np.random.default_rng(3)
    n = 800
    p = rng.uniform(0.2, 0.8, n)
    log_cost = rng.uniform(-2.0, 2.0, n)
    # middle-sized cells came out stable far less often than their P, the dearest more often
    shift = np.where((log_cost > -1.0) & (log_cost < 1.0), -1.0, np.where(log_cost >= 1.0, 0.8, 0.0))
    rate = ndtr(ndtri(p) + shift)
    stable = rng.random(n) < rate
    edges = cost_class_edges(log_cost, 4)
    assert len(edges) == 3 and np.allclose(edges, [-1.0, 0.0, 1.0], atol=0.02)
    cal = fit_outcome_calibration(p, stable, log_cost=log_cost, edges=edges)
    d = cal.cost_class_offsets
    assert len(d) == 4 and sum(cal.cost_class_purchases) == n
    assert d[1] < d[0] and d[2] < d[0] and d[3] > d[0]  # not monotone in cost
    mid, dear = cal.calibrate_p([0.5], [0.0])[0], cal.calibrate_p([0.5], [1.5])[0]
    assert mid < 0.25 < 0.5 < dear
    k = cost_class(log_cost, edges)
    for c in range(4):  # each class's recalibrated P meets its observed rate
        inside = k == c
        assert cal.calibrate_p(p[inside], log_cost[inside]).mean() == pytest.approx(stable[inside].mean(), abs=0.04)
    # equal costs: no classes, the two-parameter fit bit for bit
    assert cost_class_edges(np.zeros(n)) == []
    flat = fit_outcome_calibration(p, stable, log_cost=np.zeros(n), edges=cost_class_edges(np.zeros(n)))
    same = fit_outcome_calibration(p, stable)
    assert flat.cost_class_offsets == [] and (flat.a, flat.b) == (same.a, same.b)


def test_cost_classes_are_equal_cost_ratios_over_the_candidates() -> None:
    sites = np.array([2] * 10 + [8] * 300 + [16] * 10)
    log_cost = np.log(sites ** 2 / np.median(sites ** 2))
    edges = cost_class_edges(log_cost, 3)
    np.testing.assert_allclose(np.diff([log_cost.min(), *edges, log_cost.max()]), np.log(64.0) / 3)
    np.testing.assert_array_equal(cost_class(log_cost, edges), [0] * 10 + [1] * 300 + [2] * 10)
    assert cost_class_edges(log_cost, 1) == [] and cost_class_edges(np.zeros(5), 4) == []


def test_each_fidelity_gets_its_own_map_shrunk_towards_the_pooled_one() -> None:
    p_pbe, y_pbe = _overrated(300, 6.0, seed=4)  # PBE screens: a sixth of their P came out stable
    p_scan, y_scan = _overrated(300, 1.0, seed=5)  # SCAN purchases: as predicted
    purchases = ([("pbe", float(p), bool(y)) for p, y in zip(p_pbe, y_pbe)]
                 + [("scan", float(p), bool(y)) for p, y in zip(p_scan, y_scan)])
    maps = fit_outcome_calibration_by_fidelity(purchases)
    pooled, pbe, scan = maps["pooled"], maps["pbe"], maps["scan"]
    assert (pooled.n_purchases, pbe.n_purchases, scan.n_purchases) == (600, 300, 300)
    assert pbe.prior == scan.prior == "pooled" and pooled.prior == "identity"
    # each map meets its own fidelity's observed rate; the pooled one sits in between and fits neither
    assert pbe.mean_p_calibrated == pytest.approx(y_pbe.mean(), abs=0.04)
    assert scan.mean_p_calibrated == pytest.approx(y_scan.mean(), abs=0.05)
    assert pbe.calibrate_p([0.6])[0] < pooled.calibrate_p([0.6])[0] < scan.calibrate_p([0.6])[0]
    assert abs(scan.a) < 0.25


def test_a_fidelity_with_few_or_no_purchases_keeps_the_pooled_map() -> None:
    p, y = _overrated(200, 4.0, seed=6)
    purchases = [("scan", float(a), bool(b)) for a, b in zip(p, y)]
    maps = fit_outcome_calibration_by_fidelity(purchases + [("pbe", 0.5, True)])
    pooled, pbe = maps["pooled"], maps["pbe"]
    assert pbe.n_purchases == 1
    assert 0 < pbe.a - pooled.a < 0.2 and abs(np.log(pbe.b / pooled.b)) < 0.1  # one success: a small step up
    alone = fit_outcome_calibration_by_fidelity(purchases)
    assert alone["pbe"].n_purchases == 0
    assert (alone["pbe"].a, alone["pbe"].b) == (alone["pooled"].a, alone["pooled"].b)


def test_expected_value_policy_calibrates_each_fidelity_on_its_own_purchases() -> None:
    base = load_policy("expected-value")
    # (SCAN now valued on the SCAN model's own P: the cap at the PBE view would put the PBE map's P there)
    policy = base.model_copy(update={"batch_size": 10, "expected_value": base.expected_value.model_copy(
        update={"learning_value": False, "scan_now_at_most_pbe_view": False})})
    # PBE screens flopped, SCAN purchases came out as predicted
    outcomes = [("pbe", 0.6, False)] * 30 + [("scan", 0.6, True)] * 18 + [("scan", 0.6, False)] * 12
    per = decide(policy, _state(outcomes))
    pooled_policy = policy.model_copy(update={"expected_value": policy.expected_value.model_copy(
        update={"outcome_calibration_per_fidelity": False})})
    pooled = decide(pooled_policy, _state(outcomes))
    assert per.numbers["outcome_calibration_pbe_a"] < per.numbers["outcome_calibration_a"] \
        < per.numbers["outcome_calibration_scan_a"]
    assert per.numbers["outcome_calibration_pbe_n_purchases"] == 30
    assert "outcome_calibration_pbe_a" not in pooled.numbers
    # the PBE model's P is the one brought down: a screen less likely to lead to SCAN, and SCAN candidates rated
    # higher than pooled
    first = {i.job_id: i.numbers for i in pooled.items}
    both = [i for i in per.items if i.job_id in first and i.numbers.get("p_scan_source") == "model"]
    assert both and all(i.numbers["p_scan_stable"] > first[i.job_id]["p_scan_stable"] for i in both)
    assert all(i.numbers["p_go_scan_after_pbe"] < first[i.job_id]["p_go_scan_after_pbe"] for i in both)


def test_min_slope_keeps_a_narrow_purchase_range_from_lifting_low_probabilities() -> None:
    """Purchases at P 0.4-0.9 of which 45 % came out stable, whatever their P (as in the campaigns' SCAN maps): the
    free fit flattens the map (b < 1), which lifts a P of 0.05, far below the purchases' range, several-fold; with
    min_slope 1 the map is an offset only, which lowers every P."""
    rng = np.random.default_rng(7)
    p = rng.uniform(0.4, 0.9, 300)
    y = rng.random(300) < 0.45
    free = fit_outcome_calibration(p, y)
    offset = fit_outcome_calibration(p, y, min_slope=1.0)
    assert free.b < 0.7 and offset.b >= 1.0 and offset.a < 0
    assert free.calibrate_p([0.05])[0] > 0.1 > 0.05 > offset.calibrate_p([0.05])[0]
    assert offset.mean_p_calibrated == pytest.approx(y.mean(), abs=0.05)
    maps = fit_outcome_calibration_by_fidelity([("scan", float(a), bool(b)) for a, b in zip(p, y)], min_slope=1.0)
    assert maps["pooled"].b >= 1.0 and maps["scan"].b >= 1.0


def _crowded(n: int, slope: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Purchases whose true probit is ``Phi^-1(P) + slope ln S`` (S: competitor survival at purchase)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.6, n)
    log_s = np.log(rng.uniform(0.05, 1.0, n))
    return p, rng.random(n) < ndtr(ndtri(p) + slope * log_s), log_s


def test_survival_slope_is_learned_where_crowded_purchases_fail_and_stays_near_0_where_they_do_not() -> None:
    p, y, log_s = _crowded(1500, 1.0)
    cal = fit_outcome_calibration(p, y, log_survival=log_s, fit_survival_slope=True)
    assert 0.7 < cal.survival_slope < 1.3
    # a crowded purchase is rated lower than a lone one of the same P; the Gaussian form says the same
    lone, crowded = cal.calibrate_p([0.3, 0.3], 0.0, [0.0, np.log(0.1)])
    assert crowded < 0.5 * lone
    mu, sd = cal.calibrate_gaussian(np.array([0.05, 0.05]), np.array([0.1, 0.1]), 0.0, np.array([0.0, np.log(0.1)]))
    np.testing.assert_allclose(ndtr(-mu / sd), cal.calibrate_p([ndtr(-0.5)] * 2, 0.0, [0.0, np.log(0.1)]), rtol=1e-9)
    # no effect: the slope stays near its prior 0; not asked for: exactly 0 and the map as before
    p0, y0, log_s0 = _crowded(1500, 0.0, seed=1)
    assert fit_outcome_calibration(p0, y0, log_survival=log_s0, fit_survival_slope=True).survival_slope < 0.2
    plain = fit_outcome_calibration(p, y)
    assert plain.survival_slope == 0.0
    assert fit_outcome_calibration(p, y, log_survival=log_s).model_dump() == plain.model_dump()
    # both fidelities' maps keep the slope fitted on all purchases together
    purchases = [("pbe" if i % 2 else "scan", float(a), bool(b)) for i, (a, b) in enumerate(zip(p, y))]
    maps = fit_outcome_calibration_by_fidelity(purchases, log_survival=log_s, fit_survival_slope=True)
    assert maps["pooled"].survival_slope > 0.5
    assert maps["pbe"].survival_slope == maps["scan"].survival_slope == maps["pooled"].survival_slope
    assert maps["pooled"].numbers()["outcome_calibration_survival_slope"] == maps["pooled"].survival_slope


def test_expected_value_policy_fits_the_survival_into_the_map_instead_of_multiplying_by_it() -> None:
    base = load_policy("expected-value")
    policy = base.model_copy(update={"batch_size": 10, "expected_value": base.expected_value.model_copy(
        update={"competitor_survival_fitted": True, "competitor_samples": 64, "scan_now_at_most_pbe_view": False})})
    survival = [0.1 if i % 2 else 1.0 for i in range(40)]
    # no purchases yet: g = 0, so the survival is recorded but moves nothing
    plain = {i.job_id: i.numbers for i in decide(policy, _state([])).items if i.kind == "candidate"}
    fresh = {i.job_id: i.numbers for i in decide(policy, {**_state([]), "competitor_survival_scan": survival}).items
             if i.kind == "candidate"}
    assert fresh.keys() == plain.keys()
    for k, numbers in fresh.items():
        assert numbers["p_scan_stable"] == pytest.approx(plain[k]["p_scan_stable"], rel=1e-9)
        assert numbers["competitor_survival"] == survival[int(k[1:])]
    # purchases in crowded chemistry came out unstable, lone ones as predicted: g > 0 and the crowded candidates drop
    p, y, log_s = _crowded(300, 1.5, seed=2)
    outcomes = [("scan", float(a), bool(b)) for a, b in zip(p, y)]
    learned = decide(policy, {**_state(outcomes), "competitor_survival_scan": survival,
                              "purchase_log_survival": list(log_s)})
    assert learned.numbers["outcome_calibration_survival_slope"] > 0.5
    blind = decide(policy, {**_state(outcomes), "competitor_survival_scan": survival,
                            "purchase_log_survival": [0.0] * len(outcomes)})  # S not recorded at purchase: g = 0
    assert blind.numbers["outcome_calibration_survival_slope"] == 0.0

    def crowded_share(plan) -> float:
        picked = [int(i.job_id[1:]) % 2 for i in plan.items if i.kind == "candidate"]
        return sum(picked) / len(picked)

    assert crowded_share(blind) > 0.4 and crowded_share(learned) < 0.2  # the lone candidates (S = 1) fill the round
    unfitted = decide(policy.model_copy(update={"expected_value": policy.expected_value.model_copy(
        update={"competitor_survival_fitted": False})}), {**_state(outcomes), "competitor_survival_scan": survival,
                                                          "purchase_log_survival": list(log_s)})
    assert unfitted.numbers["outcome_calibration_survival_slope"] == 0.0


def test_planner_reads_each_purchases_survival_from_the_decision_that_bought_it() -> None:
    import json
    import math

    from screener.campaign import CampaignConfig
    from screener.campaign.components import PolicyPlanner

    planner = PolicyPlanner(load_policy("expected-value"),
                            CampaignConfig(budget_total=100.0, batch_size=2, unit_cpu_hours=1.0))

    def decision(sid, fid, accepted=1, **numbers):
        return {"structure_id": sid, "fidelity": fid, "accepted": accepted, "numbers_json": json.dumps(numbers)}

    decisions = [decision("c0", "pbe", competitor_survival=0.25),
                 decision("c1", "scan", accepted=0, competitor_survival=0.9),  # planned, not bought
                 decision("c1", "scan", competitor_survival=0.5),
                 decision("c2", "pbe", competitor_survival=None),  # survival off when it was bought
                 decision("c3", "pbe", competitor_survival="0.5")]  # not a number: read as none
    purchases = [("pbe", 0.3, True, "c0"), ("scan", 0.2, False, "c1"), ("pbe", 0.4, False, "c2"),
                 ("pbe", 0.4, False, "c3"), ("scan", 0.1, False, "c9")]
    got = planner._log_survival_at_purchase(purchases, decisions)
    assert got == pytest.approx([math.log(0.25), math.log(0.5), 0.0, 0.0, 0.0])


def _by_system(n: int, n_systems: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, float]]:
    """Purchases whose true probit offset depends on their chemical system (a shared error of related structures)."""
    rng = np.random.default_rng(seed)
    effect = {f"A-B{i}": float(rng.normal(0.0, 0.8)) for i in range(n_systems)}
    systems = [f"B{rng.integers(n_systems)}-A" for _ in range(n)]  # unsorted keys: the map normalises them
    p = rng.uniform(0.02, 0.6, n)
    true = ndtr(-0.4 + ndtri(p) + np.array([effect["A-" + s.split("-")[0]] for s in systems]))
    return p, rng.random(n) < true, systems, effect


def test_chemsys_offsets_learn_each_systems_shared_error_and_are_off_unless_asked() -> None:
    p, y, systems, effect = _by_system(600, 30)
    cal = fit_outcome_calibration(p, y, chemsys=systems, chemsys_sd=0.5)
    keys = sorted(effect)
    assert sorted(cal.chemsys_offsets) == keys and cal.chemsys_sd == 0.5
    fitted = np.array([cal.chemsys_offsets[k] for k in keys])
    assert np.corrcoef(fitted, [effect[k] for k in keys])[0, 1] > 0.7
    assert 0.2 < np.std(fitted) < np.std([effect[k] for k in keys])  # shrunk towards 0, not blown up
    # a system without purchases gets no offset; the Gaussian form agrees with the probability
    worst = min(cal.chemsys_offsets, key=cal.chemsys_offsets.get)
    lone, bad = cal.calibrate_p([0.3, 0.3], 0.0, 0.0, ["C-D", worst])
    assert lone == pytest.approx(float(cal.calibrate_p([0.3])[0]), rel=1e-12) and bad < lone
    mu, sd = cal.calibrate_gaussian(np.array([0.0, 0.0]), np.array([0.1, 0.1]), 0.0, 0.0, ["C-D", worst])
    np.testing.assert_allclose(ndtr(-mu / sd), cal.calibrate_p([0.5, 0.5], 0.0, 0.0, ["C-D", worst]), rtol=1e-9)
    # the term is off without chemsys_sd (the map exactly as before), and a strong prior holds the offsets near 0
    plain = fit_outcome_calibration(p, y)
    assert fit_outcome_calibration(p, y, chemsys=systems).model_dump() == plain.model_dump()
    assert plain.chemsys_offsets == {} and plain.calibrate_p([0.3], 0.0, 0.0, [worst]) == plain.calibrate_p([0.3])
    tight = fit_outcome_calibration(p, y, chemsys=systems, chemsys_sd=0.01)
    assert max(abs(v) for v in tight.chemsys_offsets.values()) < 0.02
    # both fidelities' maps keep the pooled offsets; the ledger gets scalars only
    purchases = [("pbe" if i % 2 else "scan", float(a), bool(b)) for i, (a, b) in enumerate(zip(p, y))]
    maps = fit_outcome_calibration_by_fidelity(purchases, chemsys=systems, chemsys_sd=0.5)
    assert maps["pbe"].chemsys_offsets == maps["scan"].chemsys_offsets == maps["pooled"].chemsys_offsets
    assert maps["pbe"].a != maps["scan"].a
    numbers = maps["scan"].numbers("x_")
    assert numbers["x_chemsys_offsets_n"] == 30
    assert numbers["x_chemsys_offsets_min"] == pytest.approx(min(maps["pooled"].chemsys_offsets.values()))
    assert all(not isinstance(v, (list, dict)) for v in numbers.values())


def test_expected_value_policy_moves_away_from_systems_whose_purchases_failed() -> None:
    base = load_policy("expected-value")
    policy = base.model_copy(update={"batch_size": 10, "expected_value": base.expected_value.model_copy(
        update={"scan_now_at_most_pbe_view": False, "outcome_calibration_chemsys_sd": 0.5})})
    state = _state([])
    systems = [f"A-{'E' if i % 2 == 0 else 'O'}{i // 2 % 5}" for i in range(40)]  # 10 systems, 4 candidates each
    state["chemsys"] = systems
    # purchases made before in the same systems: the E systems' all failed, the O systems' all paid
    bought = [s for s in sorted(set(systems)) for _ in range(6)]
    outcomes = [("pbe", 0.3, "O" in s) for s in bought]

    def odd_share(plan) -> float:
        picked = [int(i.job_id[1:]) % 2 for i in plan.items if i.kind == "candidate"]
        return sum(picked) / len(picked)

    learned = decide(policy, {**state, "purchase_outcomes": outcomes, "purchase_chemsys": bought})
    assert learned.numbers["outcome_calibration_chemsys_offsets_n"] == 10
    assert learned.numbers["outcome_calibration_chemsys_offsets_min"] < 0 < learned.numbers[
        "outcome_calibration_chemsys_offsets_max"]
    assert odd_share(learned) > 0.8
    for item in learned.items:  # each decision records its system's offsets
        if item.kind == "candidate":
            odd = int(item.job_id[1:]) % 2
            assert (item.numbers["outcome_chemsys_offset_pbe"] > 0) == bool(odd)
            assert item.numbers["outcome_chemsys_offset_scan"] == item.numbers["outcome_chemsys_offset_pbe"]
    # not read (no purchase_chemsys) or not asked for: no offsets, and the round mixes both kinds
    for plan in (decide(policy, {**state, "purchase_outcomes": outcomes}),
                 decide(base.model_copy(update={"batch_size": 10, "expected_value": policy.expected_value.model_copy(
                     update={"outcome_calibration_chemsys_sd": None})}),
                     {**state, "purchase_outcomes": outcomes, "purchase_chemsys": bought})):
        assert "outcome_calibration_chemsys_offsets_n" not in plan.numbers
        assert all("outcome_chemsys_offset_pbe" not in i.numbers for i in plan.items if i.kind == "candidate")
        assert 0.3 < odd_share(plan) < 0.7


def test_planner_reads_each_purchases_chemical_system_from_the_request_or_the_ledger() -> None:
    from types import SimpleNamespace

    from screener.campaign import CampaignConfig
    from screener.campaign.components import PolicyPlanner

    planner = PolicyPlanner(load_policy("expected-value"),
                            CampaignConfig(budget_total=100.0, batch_size=2, unit_cpu_hours=1.0))
    asked: list[list[str]] = []

    class Ledger:
        def candidates(self, role, *, with_structures, structure_ids):
            asked.append(list(structure_ids))
            return [{"structure_id": "c9", "chemsys": "Li-O"}]

    planner.ledger = Ledger()
    request = SimpleNamespace(structure_ids=["c0", "c1"], chemsys=["Fe-O", "Mn-O"])
    purchases = [("pbe", 0.3, True, "c1"), ("scan", 0.2, False, "c9"), ("pbe", 0.4, False, "c0"),
                 ("pbe", 0.4, False, "c7")]  # c7: in neither (read as no system)
    assert planner._chemsys_of_purchases(request, purchases) == ["Mn-O", "Li-O", "Fe-O", ""]
    assert asked == [["c7", "c9"]]


def test_chemsys_offsets_per_fidelity_follow_each_fidelitys_own_purchases() -> None:
    # in system A-B the PBE screens paid and the SCAN runs failed; in C-D the other way round
    purchases = ([("pbe", 0.3, True)] * 8 + [("scan", 0.3, False)] * 8 + [("pbe", 0.3, False)] * 8
                 + [("scan", 0.3, True)] * 8)
    systems = ["A-B"] * 16 + ["C-D"] * 16
    apart = fit_outcome_calibration_by_fidelity(purchases, chemsys=systems, chemsys_sd=0.5, chemsys_per_fidelity=True)
    assert apart["pooled"].chemsys_offsets == {}
    assert apart["pbe"].chemsys_offsets["A-B"] > 0.2 > -0.2 > apart["pbe"].chemsys_offsets["C-D"]
    assert apart["scan"].chemsys_offsets["A-B"] < -0.2 < 0.2 < apart["scan"].chemsys_offsets["C-D"]
    # pooled, the two fidelities' outcomes cancel in each system
    together = fit_outcome_calibration_by_fidelity(purchases, chemsys=systems, chemsys_sd=0.5)
    assert max(abs(v) for v in together["pbe"].chemsys_offsets.values()) < 0.05
