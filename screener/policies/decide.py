"""The entry point the campaign calls each round: :func:`decide` (policy + plain numbers -> ordered plan).

The state carries only numbers and ids: candidate ids and chemical systems, predicted E_hull mean/std per fidelity,
training-set sizes and learning-curve points, costs per candidate and fidelity, the remaining budget and the
competing-phase SCAN jobs the hulls still need. The plan is an ordered list of calculations (what to run first comes
first) whose estimated cost never exceeds the round budget, which never exceeds the remaining budget.

What each kind does within a round budget ``B`` (see docs/policy.md):

``scaling-law``
    1. exploitation: up to ``exploitation.fraction * B`` of SCAN confirmations of candidates with P(stable) >=
       ``exploitation.min_probability_stable`` (best first, with their competing phases);
    2. fit the scaling law to the learning curve (with the preset's prior; prior alone while there are fewer than
       ``min_points_for_fit`` points) and split the rest with :func:`allocate_fidelities`;
    3. SCAN share: best acquisition scores (with competing phases); PBE share plus anything the SCAN share left:
       best acquisition scores on the PBE predictions among candidates without a PBE result.
``scan-only``
    all of ``B`` to SCAN, best acquisition scores first.
``pbe-then-scan``
    ``(1 - pbe_fraction) B`` to SCAN confirmations of candidates already screened with PBE (best first), the rest to
    PBE screening of unscreened candidates.
``random``
    random order from ``numpy.random.default_rng([seed, round_index])``; ``pbe_fraction B`` to PBE, the rest SCAN.
``camd-epsilon-greedy``, ``camd-gp-lcb``
    peers written from TRI's CAMD multi-fidelity agents (:mod:`~screener.policies.camd_epsilon_greedy`,
    :mod:`~screener.policies.camd_gp_lcb`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from screener.errors import InvalidInputError, ScreenerError
from screener.policies.acquisition import acquisition_scores, normalize_chemsys, probability_stable
from screener.policies.allocation import Allocation, CompetingPhaseJob, allocate_fidelities, plan_scan_share
from screener.policies.config import PolicyConfig, load_policy
from screener.policies.scaling_law import ScalingLawFit, fit_scaling_law

__all__ = ["LearningCurvePoint", "PolicyState", "PlannedCalculation", "RoundPlan", "decide"]

logger = logging.getLogger(__name__)

Fidelity = Literal["pbe", "scan"]


class LearningCurvePoint(BaseModel):
    """Test MAE of the SCAN model trained on ``n_scan`` SCAN and pre-trained on ``n_pbe`` PBE systems."""

    model_config = ConfigDict(extra="forbid")

    n_scan: int = Field(ge=0)
    n_pbe: int = Field(ge=0)
    mae_ev_per_atom: float = Field(gt=0)
    weight: float = Field(1.0, gt=0, description="Relative precision (e.g. test-set size).")


class PolicyState(BaseModel):
    """Everything a policy needs for one round, as plain numbers (lists are per candidate, same order)."""

    model_config = ConfigDict(extra="forbid")

    candidate_ids: list[str]
    chemsys: list[str]
    scan_mean_ev_per_atom: list[float] = Field(description="Predicted SCAN E_hull.")
    scan_std_ev_per_atom: list[float] = Field(description="Ensemble std of the SCAN prediction.")
    pbe_mean_ev_per_atom: list[float] | None = Field(None, description="Predicted PBE E_hull (default: SCAN's).")
    pbe_std_ev_per_atom: list[float] | None = Field(None, description="Its std (default: SCAN's).")
    cost_scan_cpu_hours: list[float]
    cost_pbe_cpu_hours: list[float]
    scan_done: list[str] = Field(default_factory=list, description="Candidates with a SCAN result or job.")
    pbe_done: list[str] = Field(default_factory=list, description="Candidates with a PBE result or job.")
    n_scan: int = Field(0, ge=0, description="SCAN training-set size N_s.")
    n_pbe: int = Field(0, ge=0, description="PBE data N_p behind the model that makes the SCAN predictions.")
    pbe_reaches_scan_model: bool = Field(
        True, description="False once a SCAN model exists: PBE results no longer reach it (no PBE learning value).")
    learning_curve: list[LearningCurvePoint] = Field(default_factory=list)
    budget_cpu_hours: float = Field(ge=0, description="Remaining campaign budget.")
    required_phases: list[CompetingPhaseJob] = Field(default_factory=list)
    round_index: int = Field(0, ge=0)
    pbe_result_e_hull_ev_per_atom: dict[str, float] = Field(
        default_factory=dict, description="Computed PBE E_hull of candidates with a PBE result (expected-value).")
    pbe_scan_pairs: list[tuple[float, float]] = Field(
        default_factory=list, description="(PBE, SCAN) computed E_hull pairs: campaign and known set (expected-value).")
    n_known_pbe_scan_pairs: int = Field(
        0, ge=0, description="Of pbe_scan_pairs, the last this many are the known set's (expected-value).")
    pbe_scan_pair_log_sites: list[float] | None = Field(
        None, description="Per pbe_scan_pairs entry, ln(n_sites / median candidate n_sites) (NaN: unknown; "
        "expected-value with pbe_scan_size_slope_sd).")
    log_sites: list[float] | None = Field(
        None, description="Per candidate, ln(n_sites / median candidate n_sites) (expected-value with "
        "pbe_scan_size_slope_sd).")
    pbe_result_scan_hull_e_hull_ev_per_atom: dict[str, float] = Field(
        default_factory=dict, description="Per candidate with a PBE result and no SCAN result, that result carried "
        "to SCAN by the fitted fidelity shift and measured against today's SCAN hull, x_s (expected-value with "
        "scan_hull_map; screener.policies.scan_hull_map).")
    scan_hull_map_pairs: list[tuple[float, float, bool]] = Field(
        default_factory=list, description="(PBE E_hull, x_s against the SCAN hull without it, SCAN-stable) of each "
        "structure the campaign computed at both levels (expected-value with scan_hull_map).")
    purchase_outcomes: list[tuple[str, float, bool]] = Field(
        default_factory=list, description="(fidelity, P(stable) at purchase, came out stable) of each candidate "
        "calculation bought on the model's prediction (expected-value: outcome calibration).")
    competitor_survival_scan: list[float] | None = Field(
        None, description="Per candidate, P(SCAN-stable once the pool's other candidates are computed | SCAN-stable "
        "on today's hull) (expected-value; None: 1).")
    competitor_numbers: dict[str, float | int | None] = Field(
        default_factory=dict, description="Numbers of the competitor Monte Carlo, for the ledger.")
    n_found: int = Field(
        0, ge=0, description="Candidates computed at SCAN and stable on today's SCAN hull (expected-value: the "
        "campaign's yield so far, for the stop rule).")
    spent_cpu_hours: float = Field(
        0.0, ge=0, description="Campaign spend (done and reserved) before this plan (expected-value: the cost-blind "
        "share).")
    cost_blind_spent_cpu_hours: float = Field(
        0.0, ge=0, description="Of spent_cpu_hours, what went to cost-blind picks (expected-value).")
    purchase_gp_p: list[float | None] = Field(
        default_factory=list, description="Per purchase_outcomes entry, the composition GP's P(stable) when it was "
        "bought (None: not recorded; expected-value with composition_gp_pool).")
    purchase_log_cost: list[float] = Field(
        default_factory=list, description="log(cost / median candidate cost) of each of purchase_outcomes (empty: "
        "all 0).")
    purchase_log_survival: list[float] = Field(
        default_factory=list, description="ln of the competitor survival at purchase of each of purchase_outcomes "
        "(0: none estimated; empty: all 0; expected-value with competitor_survival_fitted).")
    purchase_chemsys: list[str] = Field(
        default_factory=list, description="Chemical system of each of purchase_outcomes (empty: not read; "
        "expected-value with outcome_calibration_chemsys_sd).")
    formulas: list[str] | None = Field(
        None, description="Reduced formula per candidate (CAMD peers: composition features).")
    seed_rows: list[tuple[str, str, float]] = Field(
        default_factory=list, description="(formula, fidelity, E_hull) of every computed structure: known set and "
        "campaign (CAMD peers: their seed data).")
    n_campaign_seed_rows: int = Field(
        0, ge=0, description="The first rows of seed_rows that are the campaign's own results (CAMD peers keep them "
        "all; only known-set rows are subsampled).")

    @model_validator(mode="after")
    def _check_lengths(self) -> PolicyState:
        n = len(self.candidate_ids)
        for name in ("chemsys", "scan_mean_ev_per_atom", "scan_std_ev_per_atom", "pbe_mean_ev_per_atom",
                     "pbe_std_ev_per_atom", "cost_scan_cpu_hours", "cost_pbe_cpu_hours", "formulas",
                     "competitor_survival_scan", "log_sites"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{name} has {len(value)} entries for {n} candidates")
        if self.pbe_scan_pair_log_sites is not None and len(self.pbe_scan_pair_log_sites) != len(self.pbe_scan_pairs):
            raise ValueError(f"pbe_scan_pair_log_sites has {len(self.pbe_scan_pair_log_sites)} entries for "
                             f"{len(self.pbe_scan_pairs)} pbe_scan_pairs")
        for name in ("purchase_gp_p", "purchase_log_cost", "purchase_log_survival", "purchase_chemsys"):
            value = getattr(self, name)
            if value and len(value) != len(self.purchase_outcomes):
                raise ValueError(f"{name} has {len(value)} entries for {len(self.purchase_outcomes)} "
                                 "purchase_outcomes")
        if len(set(self.candidate_ids)) != n:
            raise ValueError("candidate_ids must be unique")
        for name in ("cost_scan_cpu_hours", "cost_pbe_cpu_hours"):
            if any(not (math.isfinite(c) and c > 0) for c in getattr(self, name)):
                raise ValueError(f"{name} must be finite and > 0")
        return self


class PlannedCalculation(BaseModel):
    """One calculation of the plan."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(description="Candidate id, or competing-phase id.")
    fidelity: Fidelity
    kind: Literal["candidate", "competing_phase"] = "candidate"
    reason: str
    cost_cpu_hours: float
    score: float | None = Field(None, description="Acquisition score of the candidate (higher is better).")
    for_candidate: str = Field(description="Candidate the calculation serves.")
    numbers: dict[str, float | int | str | bool | None] | None = Field(
        None, description="The numbers behind the decision (expected-value: P, rates, learning values).")


class RoundPlan(BaseModel):
    """A round's ordered plan and the numbers behind it (for the campaign ledger)."""

    model_config = ConfigDict(extra="forbid")

    policy: str
    kind: str
    round_index: int
    budget_cpu_hours: float = Field(description="Round budget the plan had to fit in.")
    remaining_budget_cpu_hours: float = Field(description="Campaign budget left before this round.")
    items: list[PlannedCalculation] = Field(default_factory=list)
    allocation: Allocation | None = None
    fit: ScalingLawFit | None = None
    numbers: dict[str, float | int | str | bool | None] = Field(default_factory=dict)

    @property
    def total_cost_cpu_hours(self) -> float:
        """Estimated cost of the whole plan."""
        return float(math.fsum(i.cost_cpu_hours for i in self.items))

    def as_tuples(self) -> list[tuple[str, str, str, float]]:
        """``(job_id, fidelity, reason, cost_cpu_hours)`` per planned calculation, in order."""
        return [(i.job_id, i.fidelity, i.reason, i.cost_cpu_hours) for i in self.items]


class _Round:
    """Book-keeping of one round: what is planned, what is left, diversity counts per fidelity."""

    def __init__(self, policy: PolicyConfig, state: PolicyState) -> None:
        self.policy, self.state = policy, state
        n = len(state.candidate_ids)
        acq = policy.acquisition
        self.cost_pbe = np.asarray(state.cost_pbe_cpu_hours, dtype=float)
        ratio = policy.cost_ratio_scan_to_pbe
        self.cost_scan = self.cost_pbe * ratio if ratio else np.asarray(state.cost_scan_cpu_hours, dtype=float)
        kw = dict(threshold_ev_per_atom=acq.threshold_ev_per_atom, kappa=acq.kappa,
                  std_floor_ev_per_atom=acq.std_floor_ev_per_atom)
        self.score_scan = acquisition_scores(state.scan_mean_ev_per_atom, state.scan_std_ev_per_atom, acq.kind, **kw)
        pbe_mean = state.pbe_mean_ev_per_atom or state.scan_mean_ev_per_atom
        pbe_std = state.pbe_std_ev_per_atom or state.scan_std_ev_per_atom
        self.score_pbe = acquisition_scores(pbe_mean, pbe_std, acq.kind, **kw)
        self.mean_scan = np.nan_to_num(np.asarray(state.scan_mean_ev_per_atom, dtype=float), nan=np.inf)
        self.mean_pbe = np.nan_to_num(np.asarray(pbe_mean, dtype=float), nan=np.inf)
        self.p_stable = probability_stable(state.scan_mean_ev_per_atom, state.scan_std_ev_per_atom,
                                           acq.threshold_ev_per_atom, std_floor_ev_per_atom=acq.std_floor_ev_per_atom)
        scan_done, pbe_done = set(state.scan_done), set(state.pbe_done)
        ids = state.candidate_ids
        self.open_scan = np.array([i not in scan_done for i in ids], dtype=bool)
        self.open_pbe = np.array([i not in pbe_done and i not in scan_done for i in ids], dtype=bool)
        self.pbe_screened = np.array([i in pbe_done and i not in scan_done for i in ids], dtype=bool)
        self.planned = np.zeros(n, dtype=bool)
        self.index = {cid: i for i, cid in enumerate(ids)}
        self.min_cost_scan = float(self.cost_scan.min()) if n else 0.0
        self.min_cost_pbe = float(self.cost_pbe.min()) if n else 0.0
        self.counts: dict[str, dict[str, int]] = {"scan": {}, "pbe": {}}
        self.paid_phases: set[str] = set()
        self.items: list[PlannedCalculation] = []
        self.budget = self._round_budget()
        self.spent = 0.0

    def _round_budget(self) -> float:
        state, policy = self.state, self.policy
        if policy.round_budget_cpu_hours is not None:
            budget = policy.round_budget_cpu_hours
        else:
            pool = self.cost_scan[self.open_scan] if self.open_scan.any() else self.cost_scan
            budget = policy.batch_size * float(np.median(pool)) if pool.size else 0.0
        return float(min(budget, state.budget_cpu_hours))

    @property
    def left(self) -> float:
        return max(self.budget - self.spent, 0.0)

    def order(self, scores: np.ndarray, mask: np.ndarray) -> list[int]:
        """Open candidates by descending score; equal scores (e.g. P(stable) saturating at 1 while the hull holds
        only elemental references) by ascending predicted E_hull of that fidelity, then by index."""
        idx = np.flatnonzero(mask & ~self.planned)
        mean = self.mean_pbe if scores is self.score_pbe else self.mean_scan
        return [int(i) for i in idx[np.lexsort((idx, mean[idx], -scores[idx]))]]

    def add_scan(self, order: list[int], budget: float, reason: str) -> float:
        """Plan SCAN calculations (with competing phases) in the given order within ``budget``; returns the spend."""
        st = self.state
        # lazily, so a candidate planned meanwhile as another one's competing phase is not planned again
        cands = ((st.candidate_ids[i], st.chemsys[i], float(self.cost_scan[i])) for i in order if not self.planned[i])
        steps = plan_scan_share(cands, st.required_phases, min(budget, self.left),
                                max_per_chemsys=self.policy.max_per_chemsys, counts=self.counts["scan"],
                                paid_phases=self.paid_phases, min_candidate_cost=self.min_cost_scan)
        where = self.index
        spent = 0.0
        for step in steps:
            i = where[step.for_candidate]
            if step.kind == "candidate":
                self.planned[i] = True
                why = f"{reason}: P(stable)={self.p_stable[i]:.2f}, score={self.score_scan[i]:.3g}"
                score: float | None = float(self.score_scan[i])
            else:
                if step.job_id in where:  # a candidate that is also a competing phase: computed once, here
                    self.planned[where[step.job_id]] = True
                why, score = f"competing phase for the SCAN hull of {step.for_candidate}", None
            self.items.append(PlannedCalculation(job_id=step.job_id, fidelity="scan", kind=step.kind, reason=why,
                                                 cost_cpu_hours=step.cost_cpu_hours, score=score,
                                                 for_candidate=step.for_candidate))
            spent += step.cost_cpu_hours
        self.spent += spent
        return spent

    def add_pbe(self, order: list[int], budget: float, reason: str) -> float:
        """Plan PBE calculations in the given order within ``budget`` (diversity cap per chemical system)."""
        st, cap, counts = self.state, self.policy.max_per_chemsys, self.counts["pbe"]
        left, spent = min(budget, self.left), 0.0
        for i in order:
            if left - spent < self.min_cost_pbe:
                break
            key = normalize_chemsys(st.chemsys[i])
            if (cap is not None and counts.get(key, 0) >= cap) or self.cost_pbe[i] > left - spent:
                continue
            counts[key] = counts.get(key, 0) + 1
            self.planned[i] = True
            cid = st.candidate_ids[i]
            self.paid_phases.add(cid)  # not also planned as a SCAN competing phase in this round
            self.items.append(PlannedCalculation(
                job_id=cid, fidelity="pbe", reason=f"{reason}: score={self.score_pbe[i]:.3g}",
                cost_cpu_hours=float(self.cost_pbe[i]), score=float(self.score_pbe[i]), for_candidate=cid))
            spent += float(self.cost_pbe[i])
        self.spent += spent
        return spent

    def fit(self) -> ScalingLawFit:
        st, policy = self.state, self.policy
        points = st.learning_curve
        if len(points) < policy.min_points_for_fit:
            return ScalingLawFit.from_prior(policy.priors)
        args = ([p.n_scan for p in points], [p.n_pbe for p in points], [p.mae_ev_per_atom for p in points])
        weights = [p.weight for p in points]
        try:
            return fit_scaling_law(*args, floor=policy.floor, weights=weights, prior=policy.priors)
        except ScreenerError as exc:
            if not policy.floor:
                raise
            logger.warning("scaling-law fit with a floor failed (%s); fitting without the floor", exc)
            return fit_scaling_law(*args, floor=False, weights=weights, prior=policy.priors)


def decide(
    policy: PolicyConfig | str | Path,
    state: PolicyState | Mapping[str, Any],
    *,
    rng: np.random.Generator | None = None,
) -> RoundPlan:
    """Plan one round: which candidates to compute, at which fidelity, in which order, and why.

    Parameters
    ----------
    policy : PolicyConfig, preset name or path to a YAML file
        See :func:`~screener.policies.config.load_policy`.
    state : PolicyState or mapping
        The round's numbers (a mapping is validated into a PolicyState).
    rng : numpy.random.Generator, optional
        For the ``random`` policy (default: ``default_rng([policy.seed, state.round_index])``).

    Returns
    -------
    RoundPlan
        Ordered calculations whose total estimated cost is at most ``min(round budget, state.budget_cpu_hours)``.

    Raises
    ------
    InvalidInputError
        Invalid policy or state.
    """
    from pydantic import ValidationError

    policy = load_policy(policy)
    if not isinstance(state, PolicyState):
        try:
            state = PolicyState.model_validate(dict(state))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(x) for x in first.get("loc", ())) or "(state)"
            raise InvalidInputError(f"invalid policy state: {loc}: {first.get('msg')}") from None
    r = _Round(policy, state)
    numbers: dict[str, float | int | str | bool | None] = {
        "n_candidates": len(state.candidate_ids),
        "n_open_scan": int(r.open_scan.sum()),
        "n_open_pbe": int(r.open_pbe.sum()),
        "round_budget_cpu_hours": r.budget,
    }
    allocation: Allocation | None = None
    fit: ScalingLawFit | None = None
    B = r.budget

    if policy.kind == "scan-only":
        r.add_scan(r.order(r.score_scan, r.open_scan), B, "greedy SCAN")
    elif policy.kind == "pbe-then-scan":
        r.add_scan(r.order(r.score_scan, r.pbe_screened), (1.0 - policy.pbe_fraction) * B, "confirm PBE-screened")
        r.add_pbe(r.order(r.score_pbe, r.open_pbe), r.left, "PBE screening")
    elif policy.kind == "random":
        gen = rng if rng is not None else np.random.default_rng([policy.seed, state.round_index])
        shuffled = gen.permutation(len(state.candidate_ids)).astype(float)  # random priorities
        r.add_pbe(r.order(-shuffled, r.open_pbe), policy.pbe_fraction * B, "random PBE")
        r.add_scan(r.order(-shuffled, r.open_scan), r.left, "random SCAN")
    elif policy.kind == "expected-value":
        from screener.policies.expected_value import plan_expected_value

        numbers.update(plan_expected_value(r, policy, state))
    elif policy.kind == "camd-epsilon-greedy":
        from screener.policies.camd_epsilon_greedy import plan_epsilon_greedy

        numbers.update(plan_epsilon_greedy(r, policy, state))
    elif policy.kind == "camd-gp-lcb":
        from screener.policies.camd_gp_lcb import plan_gp_lcb

        numbers.update(plan_gp_lcb(r, policy, state))
    else:  # scaling-law
        ex = policy.exploitation
        likely = r.open_scan & (r.p_stable >= ex.min_probability_stable)
        spent_confirm = r.add_scan(r.order(r.p_stable, likely), ex.fraction * B, "confirm likely stable")
        n_scan_now = state.n_scan + sum(1 for i in r.items if i.fidelity == "scan")
        fit = r.fit()
        if r.left > 0 and len(state.candidate_ids):
            open_s, open_p = r.open_scan & ~r.planned, r.open_pbe & ~r.planned
            cost_s = float(np.mean(r.cost_scan[open_s] if open_s.any() else r.cost_scan))
            cost_p = float(np.mean(r.cost_pbe[open_p] if open_p.any() else r.cost_pbe))
            allocation = allocate_fidelities(fit, n_scan_now, state.n_pbe, cost_scan=cost_s, cost_pbe=cost_p,
                                             budget=r.left, max_calculations=policy.max_calculations_per_round)
            logger.info("round %d: %s", state.round_index, allocation.reason)
            r.add_scan(r.order(r.score_scan, r.open_scan), allocation.scan_cpu_hours, "scaling law: SCAN")
            r.add_pbe(r.order(r.score_pbe, r.open_pbe), r.left, "scaling law: PBE")
            r.add_scan(r.order(r.score_scan, r.open_scan), r.left, "fill budget: SCAN")
        numbers.update({
            "confirm_cpu_hours": spent_confirm,
            "fit_source": fit.source,
            "a": fit.a, "a_std": fit.a_std, "b": fit.b, "b_std": fit.b_std, "c": fit.c,
            "floor_mae_ev_per_atom": fit.floor_mae,
            "a_significant": fit.is_significant("a"), "b_significant": fit.is_significant("b"),
            "prior_weight_a": fit.prior_weight_a, "prior_weight_b": fit.prior_weight_b,
        })

    _truncate(r.items, policy.max_calculations_per_round)
    if policy.kind == "expected-value" and policy.expected_value.reserve_follow_ups:
        from screener.policies.expected_value import follow_ups_kept_back

        # of the plan as cut to the round's calculations (the planner kept back for every screen it chose)
        numbers["ev_follow_ups_reserved_cpu_hours"] = follow_ups_kept_back(
            (i.numbers["cost_scan_cpu_hours"], i.numbers["p_go_scan_after_pbe"]) for i in r.items
            if i.fidelity == "pbe" and i.numbers and "p_go_scan_after_pbe" in i.numbers)
    numbers.update({
        "n_scan_planned": sum(1 for i in r.items if i.fidelity == "scan"),
        "n_pbe_planned": sum(1 for i in r.items if i.fidelity == "pbe"),
        "n_competing_phases": sum(1 for i in r.items if i.kind == "competing_phase"),
        "scan_cpu_hours": float(math.fsum(i.cost_cpu_hours for i in r.items if i.fidelity == "scan")),
        "pbe_cpu_hours": float(math.fsum(i.cost_cpu_hours for i in r.items if i.fidelity == "pbe")),
    })
    plan = RoundPlan(policy=policy.name, kind=policy.kind, round_index=state.round_index, budget_cpu_hours=B,
                     remaining_budget_cpu_hours=state.budget_cpu_hours, items=r.items, allocation=allocation,
                     fit=fit, numbers=numbers)
    numbers["total_cpu_hours"] = plan.total_cost_cpu_hours
    return plan


def _truncate(items: list[PlannedCalculation], cap: int | None) -> None:
    """Cut the plan to ``cap`` calculations, never leaving competing phases without their candidate."""
    if cap is None or len(items) <= cap:
        return
    del items[cap:]
    while items and items[-1].kind == "competing_phase":
        items.pop()
