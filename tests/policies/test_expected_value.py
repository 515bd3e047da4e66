"""The expected-value policy (screener/policies/expected_value.py): per-candidate skip / PBE / SCAN by finds per
unit cost, with its numbers on every planned item."""

from __future__ import annotations

import numpy as np
import pytest

from screener.policies import decide, load_policy
from screener.policies.expected_value import fit_pbe_scan_relation


def _state(n=40, seed=0, **kw):
    rng = np.random.default_rng(seed)
    mean = rng.normal(0.2, 0.3, n)
    state = {
        "candidate_ids": [f"c{i}" for i in range(n)], "chemsys": [f"Li-X{i}" for i in range(n)],
        "scan_mean_ev_per_atom": list(mean), "scan_std_ev_per_atom": [0.1] * n,
        "pbe_mean_ev_per_atom": list(mean - 0.02), "pbe_std_ev_per_atom": [0.1] * n,
        "cost_scan_cpu_hours": [5.0] * n, "cost_pbe_cpu_hours": [1.0] * n,
        "n_scan": 0, "n_pbe": 20000, "budget_cpu_hours": 200.0,
    }
    state.update(kw)
    return state


def test_every_planned_candidate_carries_its_numbers():
    plan = decide("expected-value", _state())
    cands = [i for i in plan.items if i.kind == "candidate"]
    assert cands
    for item in cands:
        assert {"p_scan_stable", "rate_scan_per_cpu_hour", "rate_pbe_per_cpu_hour", "learning_value_scan",
                "learning_value_pbe", "lambda_per_cpu_hour"} <= set(item.numbers)
    assert plan.total_cost_cpu_hours <= plan.budget_cpu_hours + 1e-9
    assert "pbe_scan_c0" in plan.numbers
    assert plan.numbers["pbe_scan_p_stable_if_pbe_stable"] > plan.numbers["pbe_scan_p_stable_just_above_hull"]


def test_cheaper_of_two_equally_likely_candidates_goes_first():
    state = _state(n=2, scan_mean_ev_per_atom=[-0.1, -0.1], cost_scan_cpu_hours=[9.0, 3.0],
                   budget_cpu_hours=100.0)
    policy = load_policy("expected-value").model_copy(update={"round_budget_cpu_hours": 12.5})
    plan = decide(policy, state)
    assert [i.job_id for i in plan.items] == ["c1", "c0"]
    assert plan.items[0].numbers["rate_scan_per_cpu_hour"] > plan.items[1].numbers["rate_scan_per_cpu_hour"]


def test_pbe_result_drives_the_scan_probability():
    # c0 and c1 look alike to the model; only c0's PBE result puts it on the hull
    state = _state(n=3, scan_mean_ev_per_atom=[0.3, 0.3, 0.3], pbe_mean_ev_per_atom=[0.3, 0.3, 0.3],
                   pbe_done=["c0", "c1"], pbe_result_e_hull_ev_per_atom={"c0": -0.05, "c1": 0.6})
    plan = decide("expected-value", state)
    first = plan.items[0]
    assert first.job_id == "c0" and first.fidelity == "scan"
    assert first.numbers["p_scan_source"] == "pbe result"
    assert first.numbers["p_scan_stable"] > 0.6


def test_large_pretraining_set_makes_pbe_learning_value_negligible():
    small = decide("expected-value", _state(n_pbe=50, budget_cpu_hours=2000.0)).numbers
    large = decide("expected-value", _state(n_pbe=2_000_000, budget_cpu_hours=2000.0)).numbers
    assert large["ev_learning_value_pbe"] < 0.05 * small["ev_learning_value_pbe"]
    assert small["ev_learning_value_pbe"] > 0


def test_uncertain_candidate_is_screened_with_pbe_when_scan_is_dear():
    # one sure candidate and many coin flips; SCAN costs 20x PBE: screening the coin flips is worth it. c0 sits 3
    # sigma below both hulls: a screen would only add its cost (at 1.5 sigma, P(X > 0) = 7 % makes screening it first
    # a near tie under the PBE view's cap)
    n = 30
    mean = [-0.6] + [0.05] * (n - 1)
    state = _state(n=n, scan_mean_ev_per_atom=mean, pbe_mean_ev_per_atom=mean, scan_std_ev_per_atom=[0.2] * n,
                   pbe_std_ev_per_atom=[0.2] * n, cost_scan_cpu_hours=[20.0] * n, cost_pbe_cpu_hours=[1.0] * n,
                   budget_cpu_hours=100.0)
    policy = load_policy("expected-value").model_copy(update={"round_budget_cpu_hours": 40.0})
    plan = decide(policy, state)
    fids = {i.job_id: i.fidelity for i in plan.items}
    assert fids["c0"] == "scan"
    assert sum(f == "pbe" for f in fids.values()) >= 5


def test_pbe_scan_relation_follows_pairs_and_keeps_the_prior_without_them():
    prior = fit_pbe_scan_relation([])
    assert prior.p_scan_stable(0.0) == pytest.approx(0.86)
    assert prior.p_scan_stable(-0.3) == pytest.approx(0.86)  # E_hull is censored at 0
    rng = np.random.default_rng(1)
    x = np.maximum(rng.uniform(-0.1, 0.4, 600), 0.0)
    y = np.where(x + rng.normal(0, 0.03, 600) <= 0.02, 0.0, 0.1)  # SCAN-stable mostly where PBE E_hull < 0.02
    rel = fit_pbe_scan_relation(np.c_[x, y])
    assert rel.p_scan_stable(0.0) > 0.7
    assert rel.p_scan_stable(0.15) < 0.05
    assert rel.n_pairs == 600


def test_hull_step_fits_the_on_hull_group_apart_from_those_just_above():
    """E_hull is censored at 0: the on-hull group stands for every depth below the hull. Pairs drawn as in the
    stand-in worlds (70 % SCAN-stable on the PBE hull, about 10 % just above it): the step recovers both, while one
    probit through both rates a result 10 meV/atom above the hull near the on-hull share (what it did in campaigns)."""
    rng = np.random.default_rng(3)
    depth = rng.uniform(-0.3, 0.3, 4000)  # uncensored PBE distance to the hull
    x = np.maximum(depth, 0.0)
    stable = np.where(depth <= 0, rng.random(4000) < 0.7, rng.random(4000) < 0.12 * np.exp(-depth / 0.04))
    pairs = np.c_[x, np.where(stable, 0.0, 0.05)]
    step = fit_pbe_scan_relation(pairs, prior_p_just_above=0.3)
    one = fit_pbe_scan_relation(pairs)
    assert step.p_on_hull == pytest.approx(0.7, abs=0.03)
    assert step.p_scan_stable(0.0) == pytest.approx(step.p_on_hull)
    assert 0.03 < step.p_scan_stable(0.01) < 0.15
    assert step.p_scan_stable(0.1) < 0.03
    assert one.p_scan_stable(0.01) > 0.3  # the single probit: 3x too high just above the hull
    numbers = step.numbers()
    assert numbers["pbe_scan_p_stable_if_pbe_stable"] == pytest.approx(step.p_on_hull)
    assert numbers["pbe_scan_p_stable_just_above_hull"] < 0.2
    prior = fit_pbe_scan_relation([], prior_p_just_above=0.3)
    assert prior.p_scan_stable(0.0) == pytest.approx(0.86)
    assert prior.p_scan_stable(1e-4) == pytest.approx(0.3, abs=0.01)
    # a stability threshold of 50 meV/atom: "just above" is at the threshold, and below it the prior is higher
    within = fit_pbe_scan_relation([], prior_p_just_above=0.3, tol=0.05 + 1e-6)
    assert within.p_scan_stable(0.05) == pytest.approx(0.3, abs=0.01)
    assert within.p_on_hull >= within.p_scan_stable(0.01) > within.p_scan_stable(0.05)


def test_hull_step_never_lets_q_rise_above_the_hull():
    from screener.policies.expected_value import PbeScanRelation

    relation = PbeScanRelation(0.5, 10.0, 0, "test", c_hull=-0.2)  # an on-hull share below the share just above
    assert relation.c_hull == 0.5
    assert relation.p_scan_stable(0.0) >= relation.p_scan_stable(1e-3)


def test_preset_relation_has_the_hull_step():
    from screener.policies.expected_value import relation_from_config

    cfg = load_policy("expected-value").expected_value
    assert cfg.pbe_scan_hull_step
    relation = relation_from_config(cfg, [], 0.0)
    assert relation.p_on_hull > relation.p_scan_stable(1e-3) + 0.3
    off = relation_from_config(cfg.model_copy(update={"pbe_scan_hull_step": False}), [], 0.0)
    assert off.p_on_hull == pytest.approx(float(off.p_scan_stable(1e-3)), abs=0.02)


def test_cheap_pbe_screen_when_the_preferred_scan_no_longer_fits_in_the_round():
    # c0 is best as SCAN now, but only a PBE run fits in what is left of the round: the round is not left unspent
    state = _state(n=1, scan_mean_ev_per_atom=[-0.3], pbe_mean_ev_per_atom=[-0.3], budget_cpu_hours=100.0)
    policy = load_policy("expected-value").model_copy(update={"round_budget_cpu_hours": 2.0})
    plan = decide(policy, state)
    assert [(i.job_id, i.fidelity) for i in plan.items] == [("c0", "pbe")]
    assert plan.items[0].numbers["rate_scan_per_cpu_hour"] > plan.items[0].numbers["rate_pbe_per_cpu_hour"]


def test_a_screen_blocked_by_the_chemsys_cap_leaves_its_scan_option_in_line_at_its_own_rate():
    # five coin flips, a screen worth more per unit than SCAN now for each; c0-c3 share a chemical system whose PBE
    # cap (3 per round) stops c3's screen. Its SCAN option (0.020 finds per CPU-h against the screens' 0.036) must
    # wait behind c4's screen, not take the round's 20 CPU-h at once (bought that way, c4 went unscreened)
    n = 5
    state = _state(n=n, scan_mean_ev_per_atom=[0.05] * n, pbe_mean_ev_per_atom=[0.05] * n,
                   scan_std_ev_per_atom=[0.2] * n, pbe_std_ev_per_atom=[0.2] * n, cost_scan_cpu_hours=[20.0] * n,
                   cost_pbe_cpu_hours=[1.0] * n, budget_cpu_hours=90.0, chemsys=["Li-O"] * 4 + ["Na-O"])
    policy = load_policy("expected-value")
    assert policy.max_per_chemsys == 3

    def planned(round_budget):
        plan = decide(policy.model_copy(update={"round_budget_cpu_hours": round_budget}), state)
        return [(i.job_id, i.fidelity) for i in plan.items], plan

    items, plan = planned(23.0)
    assert items == [("c0", "pbe"), ("c1", "pbe"), ("c2", "pbe"), ("c4", "pbe")]
    numbers = plan.items[0].numbers
    assert numbers["rate_pbe_per_cpu_hour"] > numbers["rate_scan_per_cpu_hour"] > 0
    # with room left once the screens are planned, the blocked candidate's SCAN option is bought after them
    assert planned(30.0)[0] == items + [("c3", "scan")]


def test_no_pbe_screen_whose_scan_follow_up_the_campaign_cannot_afford():
    # the campaign's last 3 CPU-h: a PBE run (1) fits, the SCAN run it would lead to (5) does not; nothing learns
    # from it any more, so it would buy nothing: the budget is left unspent rather than wasted
    # (a spread of 0.2 eV/atom, twice the PBE -> SCAN residual, so the screen says much about the SCAN result)
    state = _state(n=3, scan_mean_ev_per_atom=[0.02] * 3, pbe_mean_ev_per_atom=[0.02] * 3, budget_cpu_hours=3.0,
                   scan_std_ev_per_atom=[0.2] * 3, pbe_std_ev_per_atom=[0.2] * 3)
    plan = decide("expected-value", state)
    assert [i.fidelity for i in plan.items] == []
    # with room for the follow-up, the same screen is bought
    assert [i.fidelity for i in decide("expected-value", {**state, "budget_cpu_hours": 6.5}).items][:1] == ["pbe"]


def _with_reserve(on: bool):
    policy = load_policy("expected-value")
    return policy.model_copy(update={"expected_value": policy.expected_value.model_copy(
        update={"reserve_follow_ups": on})})


def test_screens_at_the_end_of_a_campaign_keep_back_their_follow_ups():
    # the campaign's last 20 CPU-h: two sure candidates and many coin flips that are best screened with PBE.
    # Without the reserve, 5 screens are bought and the rest of the round spends the money their SCAN follow-ups
    # (P(go) 0.66, 5 CPU-h each) would need; with it, what is planned leaves room for them.
    n = 30
    mean = [-0.3, -0.25] + [0.05] * (n - 2)
    state = _state(n=n, scan_mean_ev_per_atom=mean, pbe_mean_ev_per_atom=mean, scan_std_ev_per_atom=[0.2] * n,
                   pbe_std_ev_per_atom=[0.2] * n, budget_cpu_hours=20.0)
    old = decide(_with_reserve(False), state)
    screens_old = [i for i in old.items if i.fidelity == "pbe"]
    follow_ups_old = sum(5.0 * i.numbers["p_go_scan_after_pbe"] for i in screens_old)
    assert len(screens_old) >= 3 and old.total_cost_cpu_hours + follow_ups_old > 20.0 + 5.0
    plan = decide(_with_reserve(True), state)
    screens = [i for i in plan.items if i.fidelity == "pbe"]
    assert screens and [i.job_id for i in plan.items if i.fidelity == "scan"] == ["c0", "c1"]
    reserved = plan.numbers["ev_follow_ups_reserved_cpu_hours"]
    assert reserved == pytest.approx(max(5.0, sum(5.0 * i.numbers["p_go_scan_after_pbe"] for i in screens)))
    assert plan.total_cost_cpu_hours + reserved <= 20.0 + 1e-9


def test_follow_up_reserve_changes_nothing_away_from_the_end_of_a_campaign():
    # a campaign budget that cannot pay SCAN for all 60 (a budget that can makes every screen pointless: lambda 0)
    state = _state(n=60, scan_std_ev_per_atom=[0.2] * 60, pbe_std_ev_per_atom=[0.2] * 60, budget_cpu_hours=200.0)
    on, off = decide(_with_reserve(True), state), decide(_with_reserve(False), state)
    assert any(i.fidelity == "pbe" for i in on.items)
    assert on.as_tuples() == off.as_tuples()
    assert on.numbers["ev_follow_ups_reserved_cpu_hours"] > 0


def test_lambda_is_the_rate_of_the_last_scan_pick_the_budget_reaches():
    from scipy.special import ndtr

    # four SCAN-now picks of 5 CPU-h, P(stable) falling; 10 CPU-h of budget pays for the first two
    mean = [-0.3, -0.1, 0.1, 0.3]
    state = _state(n=4, scan_mean_ev_per_atom=mean, pbe_mean_ev_per_atom=mean, scan_std_ev_per_atom=[0.1] * 4,
                   pbe_std_ev_per_atom=[0.1] * 4, budget_cpu_hours=10.0)
    # (SCAN now on the SCAN model's own P, without the cap at the PBE view)
    uncapped = _with(scan_now_at_most_pbe_view=False)
    lam = decide(uncapped, state).numbers["ev_lambda_per_cpu_hour"]
    assert lam == pytest.approx(float(ndtr(1.0)) / 5.0)  # the second pick's rate, not the third's
    # a budget that reaches every pick crowds nothing out
    assert decide(uncapped, {**state, "budget_cpu_hours": 100.0}).numbers["ev_lambda_per_cpu_hour"] == 0.0
    # with the cap (the default) lambda is the second pick's capped rate
    capped = decide("expected-value", state)
    assert capped.numbers["ev_lambda_per_cpu_hour"] <= lam + 1e-12 and capped.numbers["ev_lambda_per_cpu_hour"] > 0


def test_bivariate_normal_cdf_matches_scipy():
    from scipy.special import ndtr
    from scipy.stats import multivariate_normal

    from screener.policies.expected_value import bivariate_normal_cdf

    rng = np.random.default_rng(3)
    cases = [(0.0, 0.0, 0.5), (0.0, -1.0, -0.3)] + [(*rng.normal(0, 1.5, 2), rng.uniform(-0.95, 0.95))
                                                     for _ in range(20)]
    for h, k, rho in cases:
        ref = multivariate_normal([0, 0], [[1, rho], [rho, 1]]).cdf([h, k])
        assert bivariate_normal_cdf(h, k, rho) == pytest.approx(ref, abs=1e-6)
    assert bivariate_normal_cdf(np.inf, 0.3, 0.2) == pytest.approx(float(ndtr(0.3)))
    assert bivariate_normal_cdf(-np.inf, 0.3, 0.2) == 0.0


def _assert_route_matches_monte_carlo(relation, mu, sd, t, seed):
    from screener.policies.expected_value import pbe_route

    x = np.random.default_rng(seed).normal(mu, sd, 1_000_000)
    q = relation.p_scan_stable(x)
    go = q >= t
    p_go, finds = pbe_route(relation, [mu], [sd], [t])
    assert p_go[0] == pytest.approx(go.mean(), abs=2e-3)
    assert finds[0] == pytest.approx((q * go).mean(), abs=2e-3)


@pytest.mark.parametrize("c_hull", [None, 1.3])
@pytest.mark.parametrize("mu,sd,t", [(0.05, 0.1, 0.5), (0.02, 0.04, 0.7), (-0.1, 0.2, 0.85), (0.1, 0.1, 0.0),
                                     (0.3, 0.2, 0.9), (0.0, 0.1, 0.88), (0.05, 0.1, 0.95)])
def test_pbe_route_is_exact_against_monte_carlo(mu, sd, t, c_hull):
    """P(go) and expected finds of "PBE now, SCAN if q(X) >= t" in closed form against 10^6 draws of X (the old
    24-point Gauss-Hermite quadrature of the step in q was off by up to 0.07 in P(go) here), with and without the
    hull step (Phi(1.08) = 0.86 above the hull, Phi(1.3) = 0.90 on it: t = 0.88 goes ahead on the hull only)."""
    from screener.policies.expected_value import PbeScanRelation

    _assert_route_matches_monte_carlo(PbeScanRelation(1.08, 10.0, 0, "test", c_hull=c_hull), mu, sd, t, seed=4)


@pytest.mark.parametrize("mu,sd,t", [(0.05, 0.1, 0.5), (-0.03, 0.03, 0.6), (-0.1, 0.05, 0.8), (0.1, 0.1, 0.0),
                                     (0.0, 0.05, 0.35), (0.02, 0.04, 0.2), (-0.2, 0.1, 0.99)])
def test_signed_pbe_route_is_exact_against_monte_carlo(mu, sd, t):
    """The signed relation (q rises with the depth below the PBE hull): a threshold above q at the hull edge goes
    ahead only for a result deep enough below it (x* < 0), and P(go) and the finds match 10^6 draws of X."""
    from screener.policies.expected_value import PbeScanRelation

    relation = PbeScanRelation(-0.5, 8.0, 0, "test", c_below=15.0, signed=True)
    _assert_route_matches_monte_carlo(relation, mu, sd, t, seed=5)


def test_signed_relation_separates_deep_from_shallow_pbe_stable_results():
    """Pairs as in the stand-in worlds on their hulls: SCAN-stable 0.2-0.4 just below the PBE hull, 0.8-1.0 at
    50 meV/atom and deeper. The censored fit sees one on-hull group (one P for both); the signed fit recovers the
    gradient, and both agree on the whole on-hull group's share."""
    from scipy.special import ndtr

    rng = np.random.default_rng(7)
    depth = rng.uniform(-0.15, 0.3, 6000)
    p_true = np.where(depth <= 0, ndtr(-0.5 - 25 * depth), ndtr(-0.5 - 12 * depth))
    y = np.where(rng.random(6000) < p_true, 0.0, 0.05)
    signed = fit_pbe_scan_relation(np.c_[depth, y], prior_p_just_above=0.3, signed=True)
    censored = fit_pbe_scan_relation(np.c_[np.maximum(depth, 0.0), y], prior_p_just_above=0.3)
    assert signed.p_scan_stable(-0.002) == pytest.approx(ndtr(-0.45), abs=0.05)
    assert signed.p_scan_stable(-0.08) == pytest.approx(ndtr(1.5), abs=0.05)
    assert signed.p_scan_stable(0.05) == pytest.approx(ndtr(-1.1), abs=0.05)
    assert censored.p_scan_stable(-0.002) == censored.p_scan_stable(-0.08)  # one P for every depth
    on = depth <= 0
    assert censored.p_on_hull == pytest.approx(float(np.mean(signed.p_scan_stable(depth[on]))), abs=0.03)
    numbers = signed.numbers()
    assert numbers["pbe_scan_signed_depth"] and numbers["pbe_scan_c_below_per_ev_per_atom"] > 15
    # without pairs: the prior (q at the hull edge = the "just above" prior, rising below it)
    prior = fit_pbe_scan_relation([], prior_p_just_above=0.3, signed=True)
    assert prior.p_scan_stable(0.0) == pytest.approx(0.3, abs=0.01)
    assert prior.p_scan_stable(-0.1) > 0.6 > prior.p_scan_stable(-0.01)


def test_campaign_offset_lets_its_own_pairs_set_the_level_the_known_pairs_cannot():
    """600 known pairs say 80 % of PBE-stable results stay SCAN-stable; the campaign's own 20 on-hull pairs say 25 %.
    Pooled, the known pairs decide (0.78); with the campaign's own offset the relation applied to its candidates
    follows its pairs, keeps the known pairs' shape above the hull (lower there too, never rising with x), and with
    no own pairs it is the pooled fit."""
    rng = np.random.default_rng(11)
    x_known = np.where(rng.random(600) < 0.3, 0.0, rng.uniform(0.0, 0.3, 600))
    p_known = np.where(x_known <= 0, 0.8, 0.3 * np.exp(-x_known / 0.05))
    known = np.c_[x_known, np.where(rng.random(600) < p_known, 0.0, 0.05)]
    own = np.c_[np.zeros(20), np.where(np.arange(20) < 5, 0.0, 0.05)]
    pairs = np.r_[own, known]
    mask = np.r_[np.ones(20, bool), np.zeros(600, bool)]
    pooled = fit_pbe_scan_relation(pairs, prior_p_just_above=0.3)
    offset = fit_pbe_scan_relation(pairs, prior_p_just_above=0.3, own=mask, own_offset_sd=0.5)
    assert pooled.p_on_hull > 0.7
    assert offset.p_on_hull < 0.45
    assert offset.p_scan_stable(0.02) < pooled.p_scan_stable(0.02)
    assert offset.c1 == pytest.approx(pooled.c1, rel=0.1)  # the shape is the known pairs'
    assert "20 own pairs offset by -" in offset.source
    alone = fit_pbe_scan_relation(known, prior_p_just_above=0.3, own=np.zeros(600, bool), own_offset_sd=0.5)
    plain = fit_pbe_scan_relation(known, prior_p_just_above=0.3)
    assert (alone.c_hull, alone.c0, alone.c1) == pytest.approx((plain.c_hull, plain.c0, plain.c1))


@pytest.mark.parametrize("mu_p,sd_p,mu_s,sd_s,t", [(0.05, 0.1, 0.1, 0.12, 0.5), (-0.05, 0.2, 0.15, 0.2, 0.8),
                                                 (0.1, 0.15, 0.0, 0.1, 0.3), (0.0, 0.3, 0.3, 0.3, 0.0)])
def test_joint_pbe_route_is_exact_and_never_finds_more_than_scan_now(mu_p, sd_p, mu_s, sd_s, t):
    """With the SCAN prediction, F = P(Y <= 0, go) for (X, Y) jointly Gaussian whose difference has the relation's
    residual scale 1 / c1: against 10^6 draws, and never above P(Y <= 0) (SCAN now), equal to it when go is sure."""
    from scipy.special import ndtr

    from screener.policies.expected_value import PbeScanRelation, pbe_route

    relation = PbeScanRelation(1.08, 10.0, 0, "test")
    tau = 1.0 / relation.c1
    rho = np.clip((sd_s ** 2 + sd_p ** 2 - tau ** 2) / (2 * sd_s * sd_p), 0.0, 0.995)
    rng = np.random.default_rng(5)
    z1, z2 = rng.standard_normal((2, 1_000_000))
    x = mu_p + sd_p * z1
    y = mu_s + sd_s * (rho * z1 + np.sqrt(1 - rho ** 2) * z2)
    go = relation.p_scan_stable(x) >= t
    p_go, finds = pbe_route(relation, [mu_p], [sd_p], [t], scan_mean=[mu_s], scan_sd=[sd_s])
    assert p_go[0] == pytest.approx(go.mean(), abs=2e-3)
    assert finds[0] == pytest.approx(((y <= 0) & go).mean(), abs=2e-3)
    assert finds[0] <= float(ndtr(-mu_s / sd_s)) + 1e-12
    if t <= 0:
        assert finds[0] == pytest.approx(float(ndtr(-mu_s / sd_s)), abs=1e-9)


def test_joint_route_does_not_screen_on_a_pbe_prediction_the_scan_prediction_rules_out():
    """c0: the PBE model puts it on the PBE hull, but the SCAN hull lies deeper (P(SCAN-stable) ~ 0.01); c1: both
    predictions moderately favourable. The relation alone (blind to the SCAN prediction; the default) screens c0
    first; the joint route (pbe_route_joint) values its screen by the SCAN prediction and screens c1."""
    base = dict(n=2, scan_mean_ev_per_atom=[0.25, 0.08], pbe_mean_ev_per_atom=[-0.02, 0.06],
                scan_std_ev_per_atom=[0.1, 0.1], pbe_std_ev_per_atom=[0.1, 0.1], budget_cpu_hours=10.0)
    preset = load_policy("expected-value")
    assert preset.expected_value.pbe_route_joint is False
    policy, blind = (preset.model_copy(update={"expected_value": preset.expected_value.model_copy(
        update={"pbe_route_joint": joint})}) for joint in (True, False))
    old = decide(blind, _state(**base))
    new = decide(policy, _state(**base))
    old_first = [i for i in old.items if i.kind == "candidate"][0]
    new_first = [i for i in new.items if i.kind == "candidate"][0]
    assert (old_first.job_id, old_first.fidelity) == ("c0", "pbe")
    assert new_first.job_id == "c1"
    numbers = {i.job_id: i.numbers for i in new.items if i.kind == "candidate"}
    for n in numbers.values():
        assert n["q_pbe_route_finds"] <= n["p_scan_stable"] + 1e-12


def test_competitor_survival_scales_every_route_and_moves_the_unlikely_survivor_down():
    # two equally likely candidates; c0 would most likely be undercut by the pool's other candidates
    base = dict(n=2, scan_mean_ev_per_atom=[-0.05, -0.05], pbe_mean_ev_per_atom=[-0.05, -0.05],
                scan_std_ev_per_atom=[0.05, 0.05], pbe_std_ev_per_atom=[0.05, 0.05], budget_cpu_hours=100.0)
    policy = load_policy("expected-value")
    plain = decide(policy, _state(**base))
    discounted = decide(policy, _state(**base, competitor_survival_scan=[0.2, 1.0],
                                        competitor_numbers={"competitor_plausible": 2}))
    p = {i.job_id: i.numbers for i in plain.items if i.kind == "candidate"}
    q = {i.job_id: i.numbers for i in discounted.items if i.kind == "candidate"}
    assert q["c0"]["competitor_survival"] == pytest.approx(0.2) and q["c1"]["competitor_survival"] == 1.0
    assert p["c0"]["competitor_survival"] is None  # not estimated (the preset's default): recorded as such
    assert q["c0"]["p_scan_stable"] == pytest.approx(0.2 * p["c0"]["p_scan_stable"], rel=1e-6)
    assert q["c1"]["p_scan_stable"] == pytest.approx(p["c1"]["p_scan_stable"], rel=1e-6)
    assert q["c0"]["q_pbe_route_finds"] < 0.25 * p["c0"]["q_pbe_route_finds"]  # fewer finds, a stricter go
    assert [i.job_id for i in discounted.items][0] == "c1"
    assert discounted.numbers["competitor_plausible"] == 2


def test_cost_blind_share_buys_the_likeliest_dear_cell_first_and_keeps_to_its_share():
    # c0: a dear cell the model rates likeliest; c1..c39: cheap cells, less likely but far better per unit cost
    n = 40
    mean = [-0.05] + [0.05] * (n - 1)
    state = _state(n=n, scan_mean_ev_per_atom=mean, pbe_mean_ev_per_atom=mean, scan_std_ev_per_atom=[0.1] * n,
                   cost_scan_cpu_hours=[40.0] + [2.0] * (n - 1), cost_pbe_cpu_hours=[8.0] + [0.4] * (n - 1),
                   budget_cpu_hours=1000.0)
    # the share's SCAN-only form (its screens: test_cost_blind_share_screens_where_the_screen_earns_more_...)
    policy = _with(cost_blind_share_screens=False).model_copy(update={"round_budget_cpu_hours": 100.0})
    ev = policy.expected_value
    assert ev.cost_blind_share == 0.5
    plan = decide(policy, state)
    first = plan.items[0]
    assert (first.job_id, first.fidelity, first.numbers["route"]) == ("c0", "scan", "cost_blind")
    assert "cost ignored" in first.reason
    assert plan.numbers["ev_cost_blind_allowance_cpu_hours"] == pytest.approx(50.0)  # 0.5 x (0 spent + 100)
    # then the next by P alone (equal P: the cheap cells in order) fill the rest of the allowance
    assert plan.numbers["ev_cost_blind_planned_cpu_hours"] == pytest.approx(50.0)
    blind = [i.job_id for i in plan.items if i.numbers.get("route") == "cost_blind"]
    assert blind == ["c0", "c1", "c2", "c3", "c4", "c5"] and [i.job_id for i in plan.items[:6]] == blind
    # an allowance short of the likeliest cell's cost buys nothing cheaper in its place: it waits
    short = decide(policy.model_copy(update={"round_budget_cpu_hours": 60.0}), state)
    assert short.numbers["ev_cost_blind_planned_cpu_hours"] == 0.0
    assert all(i.numbers.get("route") != "cost_blind" for i in short.items)
    # the per-unit ranking alone reaches c0 last, if at all (every cheap cell is better per unit)
    off = policy.model_copy(update={"expected_value": ev.model_copy(update={"cost_blind_share": 0.0})})
    off_ids = [i.job_id for i in decide(off, state).items]
    assert len(off_ids) > 6 and "c0" not in off_ids[:-1]
    # a share already spent: no cost-blind pick; equal costs: the share is inert, plan for plan
    spent = decide(policy, {**state, "spent_cpu_hours": 100.0, "cost_blind_spent_cpu_hours": 80.0})  # 0.5 x 200 - 80
    assert all(i.numbers.get("route") != "cost_blind" for i in spent.items)
    assert [i.job_id for i in spent.items] == off_ids
    flat = {**state, "cost_scan_cpu_hours": [5.0] * n, "cost_pbe_cpu_hours": [1.0] * n}
    assert decide(policy, flat).as_tuples() == decide(off, flat).as_tuples()
    assert decide(policy, flat).numbers["ev_cost_blind_share"] == 0.0
    # ... unless cost_blind_share_equal_costs says otherwise: then that share goes to scan-only's order there
    hedge = policy.model_copy(update={"expected_value": ev.model_copy(update={"cost_blind_share_equal_costs": 0.2})})
    hedged = decide(hedge, flat)
    assert hedged.numbers["ev_cost_blind_share"] == 0.2
    assert hedged.numbers["ev_cost_blind_planned_cpu_hours"] == pytest.approx(20.0)  # 0.2 x 100: four SCAN runs
    assert [i.job_id for i in hedged.items if i.numbers.get("route") == "cost_blind"] == ["c0", "c1", "c2", "c3"]


def test_competing_phases_of_a_cost_blind_pick_count_in_its_share():
    # c0 (dear, likeliest) needs the SCAN hull of Li-X0, which lacks phase "p": the phase is bought for it, counted
    # in this round's allowance and marked with the pick's route, so later rounds' spend on the share includes it
    n = 40
    mean = [-0.05] + [0.05] * (n - 1)
    state = _state(n=n, scan_mean_ev_per_atom=mean, pbe_mean_ev_per_atom=mean, scan_std_ev_per_atom=[0.1] * n,
                   cost_scan_cpu_hours=[40.0] + [2.0] * (n - 1), cost_pbe_cpu_hours=[8.0] + [0.4] * (n - 1),
                   budget_cpu_hours=1000.0,
                   required_phases=[dict(job_id="p", chemsys="Li-X0", cost_cpu_hours=6.0)])
    # c0 bought as SCAN now (the share's screens off): its SCAN hull needs the phase
    policy = _with(cost_blind_share_screens=False).model_copy(update={"round_budget_cpu_hours": 100.0})
    plan = decide(policy, state)
    phase = next(i for i in plan.items if i.job_id == "p")
    assert (phase.kind, phase.for_candidate, phase.numbers) == ("competing_phase", "c0", {"route": "cost_blind"})
    blind = [i for i in plan.items if (i.numbers or {}).get("route") == "cost_blind"]
    assert plan.numbers["ev_cost_blind_planned_cpu_hours"] == pytest.approx(sum(i.cost_cpu_hours for i in blind))
    assert sum(i.cost_cpu_hours for i in blind) <= plan.numbers["ev_cost_blind_allowance_cpu_hours"] + 1e-9
    # a phase bought for a per-unit pick carries no route (c0's share off: the phase goes with c0 if planned at all)
    off = policy.model_copy(update={"expected_value": policy.expected_value.model_copy(
        update={"cost_blind_share": 0.0})})
    assert all(not (i.numbers or {}).get("route") for i in decide(off, state).items)


def test_learning_value_is_recorded_always_and_added_only_when_on():
    state = _state(n_pbe=50, budget_cpu_hours=2000.0)
    off = decide("expected-value", state)
    on = decide(load_policy("expected-value").model_copy(update={"expected_value": load_policy(
        "expected-value").expected_value.model_copy(update={"learning_value": True})}), state)
    assert off.numbers["ev_learning_value_added"] is False and on.numbers["ev_learning_value_added"] is True
    assert off.numbers["ev_learning_value_scan"] == pytest.approx(on.numbers["ev_learning_value_scan"])
    assert off.numbers["ev_learning_value_scan"] > 0
    for plan, added in ((off, False), (on, True)):
        for item in (i for i in plan.items if i.kind == "candidate"):
            n = item.numbers
            assert n["learning_value_added"] is added
            extra = n["learning_value_scan"] if added else 0.0
            assert n["rate_scan_per_cpu_hour"] == pytest.approx((n["p_scan_stable"] + extra)
                                                                / n["cost_scan_cpu_hours"])


def _with(**ev):
    policy = load_policy("expected-value")
    return policy.model_copy(update={"expected_value": policy.expected_value.model_copy(update=ev)})


def test_scan_now_is_valued_at_most_at_the_pbe_view_when_asked():
    # c0: the SCAN model alone rates it stable (its PBE prediction is 0.3 eV/atom above the hull); c1: both agree.
    # With the cap, c0's SCAN now is worth what its PBE prediction says through the relation; c1 moves little.
    state = _state(n=2, scan_mean_ev_per_atom=[-0.1, -0.1], pbe_mean_ev_per_atom=[0.3, -0.1], budget_cpu_hours=500.0)
    numbers = {}
    for on in (False, True):
        plan = decide(_with(scan_now_at_most_pbe_view=on), state)
        numbers[on] = {i.job_id: i.numbers for i in plan.items if i.kind == "candidate"}
    assert numbers[False]["c0"]["p_scan_stable"] > 0.5
    assert numbers[True]["c0"]["p_scan_stable"] < 0.1
    # c1's PBE view: on the PBE hull with P 0.84, SCAN-stable there with the prior 0.86, little above it
    assert 0.7 < numbers[True]["c1"]["p_scan_stable"] <= numbers[False]["c1"]["p_scan_stable"]
    # a screened candidate's P comes from its PBE result either way
    screened = {**state, "pbe_done": ["c0"], "pbe_result_e_hull_ev_per_atom": {"c0": -0.01}}
    capped = {i.job_id: i.numbers for i in decide(_with(scan_now_at_most_pbe_view=True), screened).items}
    assert capped["c0"]["p_scan_source"] == "pbe result" and capped["c0"]["p_scan_stable"] > 0.5


# ---- the stop rule --------------------------------------------------------------------------------------------------
def _with_stop(fraction):
    policy = load_policy("expected-value")
    return policy.model_copy(update={"expected_value": policy.expected_value.model_copy(
        update={"stop_fraction_of_yield": fraction})})


def _best_rate(item):
    return max(item.numbers["rate_scan_per_cpu_hour"], item.numbers["rate_pbe_per_cpu_hour"])


def _bought_rate(item):
    """The rate of the option actually bought (not the better of the two)."""
    return item.numbers["rate_scan_per_cpu_hour" if item.fidelity == "scan" else "rate_pbe_per_cpu_hour"]


def test_stop_rule_buys_nothing_below_a_fraction_of_the_campaigns_yield():
    """10 finds for 100 CPU-h spent: at 10 % only options of >= 0.01 finds per CPU-h are bought; the same state
    without the rule (0, the default) also buys the long shots the round budget reaches."""
    from screener.policies.expected_value import stop_rate_per_cpu_hour

    mean = list(np.linspace(-0.1, 0.6, 40))  # a few likely finds, then long shots
    state = _state(scan_mean_ev_per_atom=mean, pbe_mean_ev_per_atom=mean, n_found=10, spent_cpu_hours=100.0,
                   budget_cpu_hours=400.0)
    policy = _with_stop(0.1)
    assert stop_rate_per_cpu_hour(policy.expected_value, 10, 100.0) == pytest.approx(0.01)
    stopped = decide(policy, state)
    items = [i for i in stopped.items if i.kind == "candidate"]
    assert items and all(_bought_rate(i) >= 0.01 for i in items)
    assert all(i.numbers["stop_rate_per_cpu_hour"] == pytest.approx(0.01) for i in items)
    assert stopped.numbers["ev_stop_rate_per_cpu_hour"] == pytest.approx(0.01)
    assert stopped.numbers["ev_lambda_per_cpu_hour"] >= 0.01  # a screen's SCAN follow-up must promise as much
    spent_all = decide("expected-value", state)
    assert spent_all.numbers["ev_stop_rate_per_cpu_hour"] == 0.0
    below = [i for i in spent_all.items if i.kind == "candidate" and _best_rate(i) < 0.01]
    assert below, "without the rule the round buys options below the stop rate"
    assert spent_all.total_cost_cpu_hours > stopped.total_cost_cpu_hours


def test_stop_rule_waits_for_enough_finds_and_can_empty_a_round():
    hopeless = [0.8] * 40  # P(stable) ~ 1e-15 each: nothing is worth its cost once the campaign has a yield
    young = decide(_with_stop(0.1), _state(scan_mean_ev_per_atom=hopeless, pbe_mean_ev_per_atom=hopeless,
                                            n_found=2, spent_cpu_hours=100.0))
    assert young.numbers["ev_stop_rate_per_cpu_hour"] == 0.0  # 2 < stop_after_finds (3): it spends
    assert young.items
    done = decide(_with_stop(0.1), _state(scan_mean_ev_per_atom=hopeless, pbe_mean_ev_per_atom=hopeless,
                                           n_found=3, spent_cpu_hours=100.0))
    assert done.numbers["ev_stop_rate_per_cpu_hour"] == pytest.approx(0.003)
    assert not done.items


def test_stop_rule_also_bounds_the_cost_blind_share():
    """Costs differ: the cost-blind share buys SCAN by the model's own P, cost ignored; with the rule it buys none
    whose P per median SCAN cost is below the stop rate, without it it buys such long shots too."""
    n = 40
    mean = list(np.linspace(-0.05, 0.5, n))
    cost = list(np.linspace(2.0, 12.0, n)[::-1])  # the likeliest are the dearest
    state = _state(n=n, scan_mean_ev_per_atom=mean, pbe_mean_ev_per_atom=mean, cost_scan_cpu_hours=cost,
                   cost_pbe_cpu_hours=[c / 5 for c in cost], n_found=40, spent_cpu_hours=100.0,
                   budget_cpu_hours=400.0)
    median = float(np.median(cost))

    def blind(plan):
        return [i for i in plan.items if i.kind == "candidate" and i.numbers.get("route") == "cost_blind"]

    stopped, spent_all = blind(decide(_with_stop(0.1), state)), blind(decide("expected-value", state))
    assert spent_all and stopped
    assert all(i.numbers["p_scan_model_raw"] / median >= 0.04 for i in stopped)  # 10 % of 40 finds / 100 CPU-h
    assert any(i.numbers["p_scan_model_raw"] / median < 0.04 for i in spent_all)


def test_known_pairs_weight_lets_the_campaigns_own_pairs_decide():
    """200 known pairs on the PBE hull, all SCAN-stable, and 20 of the campaign's, 4 stable: counted one each the
    known set rules (P(SCAN-stable | PBE-stable) ~ 0.9); with the known set worth 10 observations together the
    campaign's pairs pull it down (towards their 0.2). The default (null) is the unweighted fit, bit for bit."""
    from screener.policies.expected_value import relation_from_config

    campaign = [(0.0, 0.0)] * 4 + [(0.0, 0.05)] * 16
    known = [(0.0, 0.0)] * 200 + [(0.2, 0.2)] * 50
    cfg = load_policy("expected-value").expected_value
    assert cfg.known_pairs_weight is None
    equal = relation_from_config(cfg, campaign + known, 0.0, n_known=len(known))
    assert equal.numbers() == fit_pbe_scan_relation(
        campaign + known, prior_p_stable=cfg.pbe_scan_prior_p_stable_if_pbe_stable,
        prior_sigma=cfg.pbe_scan_prior_sigma_ev_per_atom, prior_weight=cfg.prior_weight, tol=1e-6,
        prior_p_just_above=cfg.pbe_scan_prior_p_stable_just_above_hull).numbers()
    weighted = relation_from_config(cfg.model_copy(update={"known_pairs_weight": 10.0}), campaign + known, 0.0,
                                    n_known=len(known))
    assert equal.p_on_hull > 0.85
    assert weighted.p_on_hull < 0.65 < equal.p_on_hull - 0.2  # 4 + ~8 known + the prior over ~33
    with pytest.raises(ValueError):
        fit_pbe_scan_relation(campaign, weights=[1.0])


def test_cell_size_term_fits_agreement_that_grows_with_cell_size():
    """Pairs as in the Li-Mn-Fe-Co-Ni-O known set: on the PBE hull, 4-site cells stay SCAN-stable 40 % of the time
    and 16-site cells 90 %. The size term finds it (c_sites > 0) and q of a PBE-stable cell follows its size; without
    a prior sd, or with every pair one size, there is no term and the fit is the old one to the last digit."""
    rng = np.random.default_rng(3)
    small = [(0.0, 0.0 if rng.random() < 0.4 else 0.05) for _ in range(200)]
    large = [(0.0, 0.0 if rng.random() < 0.9 else 0.05) for _ in range(200)]
    above = [(0.1, 0.08)] * 100  # just as many above the hull, SCAN-unstable, of each size
    pairs = small + large + above + above
    log_sites = np.log(np.r_[np.full(200, 4.0), np.full(200, 16.0), np.full(100, 4.0), np.full(100, 16.0)] / 8.0)
    sized = fit_pbe_scan_relation(pairs, prior_p_just_above=0.3, log_sites=log_sites, sites_slope_sd=1.0)
    assert sized.c_sites > 0.5 and "per e-fold of cell sites" in sized.source
    q_small, q_large = sized.p_scan_stable([0.0, 0.0], np.log([4 / 8, 16 / 8]))
    assert q_small == pytest.approx(0.4, abs=0.08) and q_large == pytest.approx(0.9, abs=0.06)
    assert sized.numbers()["pbe_scan_c_sites_per_ln_sites"] == sized.c_sites
    plain = fit_pbe_scan_relation(pairs, prior_p_just_above=0.3)
    for off in (fit_pbe_scan_relation(pairs, prior_p_just_above=0.3, log_sites=log_sites),
                fit_pbe_scan_relation(pairs, prior_p_just_above=0.3, log_sites=np.zeros(600), sites_slope_sd=1.0)):
        assert off.c_sites == 0.0 and (off.c0, off.c1, off.c_hull) == (plain.c0, plain.c1, plain.c_hull)
    assert plain.p_scan_stable([0.0], np.log([4 / 8])) == plain.p_scan_stable([0.0])  # no term: size ignored
    with pytest.raises(ValueError, match="cell sizes"):
        fit_pbe_scan_relation(pairs, log_sites=log_sites[:10], sites_slope_sd=1.0)


def test_pbe_route_with_a_shift_is_the_route_of_the_shifted_relation():
    from screener.policies.expected_value import PbeScanRelation, pbe_route

    relation = PbeScanRelation(-0.5, 10.0, 0, "test", c_hull=0.4, c_sites=0.8)
    mu, sd, t = np.array([0.05, 0.0, 0.1, -0.05]), np.array([0.1, 0.05, 0.2, 0.1]), np.array([0.3, 0.6, 0.0, 0.8])
    z = np.log(np.array([2.0, 8.0, 20.0, 4.0]) / 8.0)
    p_go, finds = pbe_route(relation, mu, sd, t, shift=relation.shift(z))
    for i, s in enumerate(relation.shift(z)):
        alone = PbeScanRelation(-0.5 + s, 10.0, 0, "test", c_hull=0.4 + s)
        ref_go, ref_finds = pbe_route(alone, mu[i:i + 1], sd[i:i + 1], t[i:i + 1])
        assert (p_go[i], finds[i]) == pytest.approx((ref_go[0], ref_finds[0]), abs=1e-12)
        assert relation.p_scan_stable([0.0, 0.1], [z[i], z[i]]) == pytest.approx(alone.p_scan_stable([0.0, 0.1]))
    assert pbe_route(relation, mu, sd, t)[1] == pytest.approx(pbe_route(
        PbeScanRelation(-0.5, 10.0, 0, "test", c_hull=0.4), mu, sd, t)[1])  # no shift: the median cell's


def _size_state(n=200, **kw):
    """c0: a dear 20-site cell the model rates likeliest, uncertain (a screen pays); c1..: cheap 4-site cells, more
    than the budget reaches (lambda > 0: a screen's SCAN follow-up is not certain)."""
    mean = [0.0] + [0.05] * (n - 1)
    sites = [20] + [4] * (n - 1)
    log_sites = list(np.log(np.asarray(sites, float) / 4.0))
    return _state(n=n, scan_mean_ev_per_atom=mean, pbe_mean_ev_per_atom=mean, scan_std_ev_per_atom=[0.15] * n,
                  pbe_std_ev_per_atom=[0.15] * n, cost_scan_cpu_hours=[40.0] + [2.0] * (n - 1),
                  cost_pbe_cpu_hours=[8.0] + [0.4] * (n - 1), budget_cpu_hours=200.0, log_sites=log_sites, **kw)


def test_cost_blind_share_screens_where_the_screen_earns_more_and_never_rebuys_a_screened_cell():
    # the known pairs say large cells on the PBE hull stay SCAN-stable (20 sites: 9 in 10), small ones seldom
    pairs = [(0.0, 0.0)] * 9 + [(0.0, 0.05)] + [(0.0, 0.0)] * 3 + [(0.0, 0.05)] * 7 + [(0.1, 0.1)] * 20
    pair_sites = list(np.log(np.r_[np.full(10, 20.0), np.full(10, 4.0), np.full(20, 8.0)] / 4.0))
    state = _size_state(pbe_scan_pairs=pairs, n_known_pbe_scan_pairs=len(pairs), pbe_scan_pair_log_sites=pair_sites)
    sized = load_policy("expected-value").model_copy(update={"round_budget_cpu_hours": 100.0})  # the default
    assert sized.expected_value.cost_blind_share_screens and sized.expected_value.pbe_scan_size_slope_sd == 1.0
    base = _with(cost_blind_share_screens=False, pbe_scan_size_slope_sd=None).model_copy(
        update={"round_budget_cpu_hours": 100.0})
    before = decide(base, state)
    assert (before.items[0].job_id, before.items[0].fidelity) == ("c0", "scan")  # without: the share buys SCAN only
    assert before.numbers["ev_cost_blind_n_pbe_screens"] == 0 and before.numbers["pbe_scan_c_sites_per_ln_sites"] == 0
    plan = decide(sized, state)
    first = plan.items[0]
    assert (first.job_id, first.fidelity, first.numbers["route"]) == ("c0", "pbe", "cost_blind")
    # the per-unit ranking's lambda (the cheap cells' rate) would never let a 40-CPU-h follow-up go on: there the
    # screen is worth nothing; the share's follow-up goes on when the result leaves the odds where they were
    assert first.numbers["rate_pbe_per_cpu_hour"] == 0.0
    assert first.numbers["rate_pbe_share_screen"] > first.numbers["rate_scan_per_cpu_hour"]
    assert 0 < first.numbers["p_go_share_screen"] < 1
    assert first.numbers["pbe_scan_size_shift"] > 0 and "PBE screen first" in first.reason
    assert plan.numbers["ev_cost_blind_n_pbe_screens"] >= 1 and plan.numbers["pbe_scan_c_sites_per_ln_sites"] > 0
    blind = [i for i in plan.items if i.numbers.get("route") == "cost_blind"]
    assert plan.numbers["ev_cost_blind_planned_cpu_hours"] == pytest.approx(sum(i.cost_cpu_hours for i in blind))
    # once screened, c0 is judged on its PBE result, never on the model's P: off the PBE hull it is not bought ...
    unstable = decide(sized, {**state, "pbe_done": ["c0"], "pbe_result_e_hull_ev_per_atom": {"c0": 0.2}})
    assert "c0" not in [i.job_id for i in unstable.items]
    # ... on it, the share buys its SCAN run first (P from the PBE result, as large cells on the hull agree)
    stable = decide(sized, {**state, "pbe_done": ["c0"], "pbe_result_e_hull_ev_per_atom": {"c0": 0.0}})
    c0 = stable.items[0]
    assert (c0.job_id, c0.fidelity, c0.numbers["p_scan_source"], c0.numbers["route"]) == (
        "c0", "scan", "pbe result", "cost_blind")
    assert c0.numbers["p_scan_stable"] > 0.75 and "after its PBE screen" in c0.reason
    # equal costs: both switches inert, plan for plan
    flat = {**state, "cost_scan_cpu_hours": [5.0] * 200, "cost_pbe_cpu_hours": [1.0] * 200}
    assert decide(sized, flat).as_tuples() == decide(base, flat).as_tuples()


def test_cost_blind_share_screens_only_what_the_campaign_can_still_follow_up():
    # as above, but the campaign has 45 CPU-h left: c0's screen (8) and its SCAN run (40) no longer both fit, so
    # the screen could find nothing (Na-Ti-V-Cr-Cu-O seed 1: a share screen 5 units from the end, on the PBE hull,
    # never followed up)
    pairs = [(0.0, 0.0)] * 9 + [(0.0, 0.05)] + [(0.0, 0.0)] * 3 + [(0.0, 0.05)] * 7 + [(0.1, 0.1)] * 20
    pair_sites = list(np.log(np.r_[np.full(10, 20.0), np.full(10, 4.0), np.full(20, 8.0)] / 4.0))
    sized = load_policy("expected-value").model_copy(update={"round_budget_cpu_hours": 100.0})
    kw = dict(pbe_scan_pairs=pairs, n_known_pbe_scan_pairs=len(pairs), pbe_scan_pair_log_sites=pair_sites)
    first = decide(sized, _size_state(**kw)).items[0]
    assert (first.job_id, first.fidelity) == ("c0", "pbe")  # with room: screened (the test above)
    end = decide(sized, {**_size_state(**kw), "budget_cpu_hours": 45.0})
    assert not [i for i in end.items if i.job_id == "c0" and i.fidelity == "pbe"]
    assert end.numbers["ev_cost_blind_n_pbe_screens"] == 0
    assert sum(i.cost_cpu_hours for i in end.items) <= 45.0
