"""Budget allocation between fidelities, and SCAN plans that pay for the competing phases a SCAN hull needs.

:func:`allocate_fidelities` splits a round's budget between SCAN and PBE calculations by greedy marginal allocation
on the fitted scaling law: the budget is spent in steps of about equal cost, each step going to the fidelity whose
next calculations lower the predicted SCAN-model MAE most per CPU hour. Because the power law is convex in each size,
the greedy split is optimal up to the step size. For a pure power law the two buys balance when

    |a| / (c_s N_s) = |b| / (c_p N_p)   <=>   N_p / N_s = (b c_s) / (a c_p),

which is ``4`` for the default prior (``b = 0.8 a``) at ``c_s = 5 c_p``.

:func:`plan_scan_share` turns a ranked list of SCAN candidates into an ordered plan within a budget in which each
candidate is preceded by the competing-phase calculations its SCAN hull still lacks (paid once per round).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from screener.errors import InvalidInputError
from screener.policies.acquisition import normalize_chemsys
from screener.policies.scaling_law import ScalingLawFit

__all__ = ["Allocation", "allocate_fidelities", "CompetingPhaseJob", "PlanStep", "plan_scan_share"]

logger = logging.getLogger(__name__)


class Allocation(BaseModel):
    """A split of a budget between SCAN and PBE calculations, with the numbers behind it (for the ledger)."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["scan", "pbe", "mixed", "none"] = Field(description="What the budget buys.")
    n_scan: int = Field(description="SCAN calculations allocated.")
    n_pbe: int = Field(description="PBE calculations allocated.")
    scan_cpu_hours: float = Field(description="Budget share of SCAN (n_scan * cost_scan_cpu_hours).")
    pbe_cpu_hours: float = Field(description="Budget share of PBE (n_pbe * cost_pbe_cpu_hours).")
    budget_cpu_hours: float = Field(description="Budget that was split.")
    cost_scan_cpu_hours: float = Field(description="Cost of one SCAN calculation used for the split.")
    cost_pbe_cpu_hours: float = Field(description="Cost of one PBE calculation used for the split.")
    n_scan_before: int = Field(description="SCAN training-set size before this round (N_s).")
    n_pbe_before: int = Field(description="PBE data behind the model before this round (N_p: pre-training set + campaign PBE results).")
    probe_size: int = Field(description="k: calculations per fidelity used for the marginal figures below.")
    mae_now: float = Field(description="Predicted SCAN-model MAE at (N_s, N_p), in the learning curve's unit (eV/atom).")
    mae_after_k_scan: float = Field(description="Predicted MAE at (N_s + k, N_p) (eV/atom).")
    mae_after_k_pbe: float = Field(description="Predicted MAE at (N_s, N_p + k) (eV/atom).")
    gain_per_cpu_hour_scan: float = Field(description="(mae_now - mae_after_k_scan) / (k cost_scan): eV/atom per CPU hour.")
    gain_per_cpu_hour_pbe: float = Field(description="(mae_now - mae_after_k_pbe) / (k cost_pbe): eV/atom per CPU hour.")
    mae_after_allocation: float = Field(description="Predicted MAE after all allocated calculations (eV/atom).")
    balance_ratio_pbe_to_scan: float | None = Field(
        None, description="N_p / N_s at which the two buys balance for a pure power law (None if a slope >= 0)."
    )
    reason: str = Field("", description="One line for the log.")

    @property
    def spent_cpu_hours(self) -> float:
        """Total planned spend."""
        return self.scan_cpu_hours + self.pbe_cpu_hours


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise InvalidInputError(f"{name} must be a finite number > 0, got {value}")


def allocate_fidelities(
    fit: ScalingLawFit,
    n_scan: int,
    n_pbe: int,
    *,
    cost_scan: float,
    cost_pbe: float,
    budget: float,
    probe_size: int | None = None,
    max_steps: int = 400,
    max_calculations: int | None = None,
) -> Allocation:
    """Split ``budget`` (CPU hours) between SCAN and PBE calculations by greedy marginal gain per cost.

    Parameters
    ----------
    fit : ScalingLawFit
        Scaling law of the SCAN model's MAE (fitted or prior-only).
    n_scan, n_pbe : int
        Current SCAN training-set size and PBE pre-training size.
    cost_scan, cost_pbe : float
        CPU hours of one SCAN and one PBE calculation (the back-end's estimates; default ratio 5).
    budget : float
        CPU hours to split; the allocation never costs more.
    probe_size : int, optional
        k for the logged marginal figures (default: the SCAN calculations the budget buys, at least 1).
    max_steps : int
        Greedy steps; each step buys about ``budget / max_steps`` CPU hours (at least one calculation).
    max_calculations : int, optional
        Upper limit on the number of calculations in total.

    Returns
    -------
    Allocation
        The split (``n_scan``, ``n_pbe``) and its numbers. When neither fidelity is predicted to lower the MAE, the
        budget goes to SCAN (the target fidelity, which also confirms candidates); what is too little for one more
        SCAN calculation buys PBE.
    """
    _check_positive("cost_scan", cost_scan)
    _check_positive("cost_pbe", cost_pbe)
    if not math.isfinite(budget) or budget < 0:
        raise InvalidInputError(f"budget must be a finite number >= 0, got {budget}")
    if n_scan < 0 or n_pbe < 0:
        raise InvalidInputError("training-set sizes must be >= 0")
    k_probe = int(probe_size) if probe_size else max(1, int(budget // cost_scan))
    mae_now = float(fit.predict_mae(n_scan, n_pbe))
    mae_k_scan = float(fit.predict_mae(n_scan + k_probe, n_pbe))
    mae_k_pbe = float(fit.predict_mae(n_scan, n_pbe + k_probe))
    gain_scan = (mae_now - mae_k_scan) / (k_probe * cost_scan)
    gain_pbe = (mae_now - mae_k_pbe) / (k_probe * cost_pbe)
    balance = (fit.b * cost_scan) / (fit.a * cost_pbe) if fit.a < 0 and fit.b < 0 else None

    step_cost = max(budget / max(max_steps, 1), min(cost_scan, cost_pbe))
    unit_scan = max(1, int(round(step_cost / cost_scan)))
    unit_pbe = max(1, int(round(step_cost / cost_pbe)))
    cap = math.inf if max_calculations is None else int(max_calculations)
    ns, npb, left = n_scan, n_pbe, float(budget)
    add_s = add_p = 0
    no_gain = False
    while True:
        room = cap - add_s - add_p
        ks = int(min(unit_scan, left // cost_scan, room))
        kp = int(min(unit_pbe, left // cost_pbe, room))
        if ks <= 0 and kp <= 0:
            break
        mae = float(fit.predict_mae(ns, npb))
        g_s = (mae - float(fit.predict_mae(ns + ks, npb))) / (ks * cost_scan) if ks > 0 else -math.inf
        g_p = (mae - float(fit.predict_mae(ns, npb + kp))) / (kp * cost_pbe) if kp > 0 else -math.inf
        if max(g_s, g_p) <= 0.0:
            no_gain = True  # no predicted gain: buy the target fidelity, or PBE with what is too little for SCAN
            g_s, g_p = (1.0, 0.0) if ks > 0 else (0.0, 1.0)
        if g_s >= g_p:
            ns, add_s, left = ns + ks, add_s + ks, left - ks * cost_scan
        else:
            npb, add_p, left = npb + kp, add_p + kp, left - kp * cost_pbe

    decision: Literal["scan", "pbe", "mixed", "none"]
    decision = "none" if add_s + add_p == 0 else ("mixed" if add_s and add_p else ("scan" if add_s else "pbe"))
    if no_gain and max(gain_scan, gain_pbe) <= 0.0:
        reason = "scaling law predicts no MAE gain; budget goes to SCAN (target fidelity)"
    else:
        better = "SCAN" if gain_scan >= gain_pbe else "PBE"
        reason = (
            f"{better} buys more MAE reduction per CPU hour at N_s={n_scan}, N_p={n_pbe} "
            f"(SCAN {gain_scan:.3g}, PBE {gain_pbe:.3g} per CPU h; balance at N_p/N_s="
            f"{'n/a' if balance is None else f'{balance:.2f}'})"
        )
    return Allocation(
        decision=decision,
        n_scan=add_s,
        n_pbe=add_p,
        scan_cpu_hours=add_s * cost_scan,
        pbe_cpu_hours=add_p * cost_pbe,
        budget_cpu_hours=float(budget),
        cost_scan_cpu_hours=float(cost_scan),
        cost_pbe_cpu_hours=float(cost_pbe),
        n_scan_before=int(n_scan),
        n_pbe_before=int(n_pbe),
        probe_size=k_probe,
        mae_now=mae_now,
        mae_after_k_scan=mae_k_scan,
        mae_after_k_pbe=mae_k_pbe,
        gain_per_cpu_hour_scan=gain_scan,
        gain_per_cpu_hour_pbe=gain_pbe,
        mae_after_allocation=float(fit.predict_mae(ns, npb)),
        balance_ratio_pbe_to_scan=balance,
        reason=reason,
    )


class CompetingPhaseJob(BaseModel):
    """A SCAN calculation of a competing phase that SCAN hulls of some candidates still need."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(description="Id of the phase (e.g. 'mp-19017' or the campaign's own id).")
    chemsys: str = Field(min_length=1, description="Chemical system of the phase itself, e.g. 'Fe-O'.")
    cost_cpu_hours: float = Field(ge=0, description="Estimated cost of its SCAN calculation.")
    needed_by: list[str] | None = Field(
        None,
        description="Candidate ids whose hull needs it; None: every candidate whose elements include the phase's.",
    )

    def is_needed_by(self, candidate_id: str, candidate_elements: frozenset[str]) -> bool:
        """Whether the SCAN hull of this candidate needs this phase."""
        if self.needed_by is not None:
            return candidate_id in self.needed_by
        return frozenset(normalize_chemsys(self.chemsys).split("-")) <= candidate_elements


class PlanStep(BaseModel):
    """One SCAN calculation in a plan."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(description="Candidate id or competing-phase id.")
    kind: Literal["candidate", "competing_phase"]
    cost_cpu_hours: float
    for_candidate: str = Field(description="Candidate this step serves (itself for a candidate).")


def plan_scan_share(
    candidates: Iterable[tuple[str, str, float]],
    required_phases: Sequence[CompetingPhaseJob],
    budget: float,
    *,
    max_per_chemsys: int | None = None,
    counts: dict[str, int] | None = None,
    paid_phases: set[str] | None = None,
    max_candidates: int | None = None,
    min_candidate_cost: float = 0.0,
) -> list[PlanStep]:
    """Ordered SCAN plan: each candidate preceded by the competing phases its hull still needs, within a budget.

    Candidates are taken in the given (priority) order. A candidate is planned only if it and all of its unpaid
    competing phases fit in what is left of the budget; otherwise it is skipped and cheaper packages further down may
    still fit. A phase needed by several candidates is paid once.

    Parameters
    ----------
    candidates : iterable of (candidate_id, chemsys, cost_cpu_hours)
        In priority order (best first); consumed lazily.
    required_phases : sequence of CompetingPhaseJob
        Competing-phase SCAN calculations not yet done.
    budget : float
        CPU hours available; the plan never costs more.
    max_per_chemsys : int, optional
        Cap on candidates per chemical system (counted in ``counts``, updated in place).
    counts : dict, optional
        Candidates per chemical system already planned in this round.
    paid_phases : set of str, optional
        Ids already planned in this round (updated in place): such a phase is not paid again and such a candidate
        is skipped, so no structure is planned twice in a round.
    max_candidates : int, optional
        Stop after this many candidates.
    min_candidate_cost : float
        Lower bound of any candidate's cost: the scan stops once less than this is left (speed on long lists).

    Returns
    -------
    list of PlanStep
    """
    if not math.isfinite(budget) or budget < 0:
        raise InvalidInputError(f"budget must be a finite number >= 0, got {budget}")
    counts = {} if counts is None else counts
    paid = set() if paid_phases is None else paid_phases
    left = float(budget)
    plan: list[PlanStep] = []
    n_taken = 0
    for cand_id, chemsys, cost in candidates:
        if (max_candidates is not None and n_taken >= max_candidates) or left < min_candidate_cost:
            break
        key = normalize_chemsys(chemsys)
        if max_per_chemsys is not None and counts.get(key, 0) >= max_per_chemsys:
            continue
        elements = frozenset(key.split("-"))
        if cand_id in paid:  # already in this round's plan (e.g. as another candidate's competing phase)
            continue
        # a candidate is never its own competing phase: its own calculation is the one being planned
        needed = [p for p in required_phases
                  if p.job_id not in paid and p.job_id != cand_id and p.is_needed_by(cand_id, elements)]
        needed = list({p.job_id: p for p in needed}.values())
        package = float(cost) + sum(p.cost_cpu_hours for p in needed)
        if package > left:
            continue
        for p in needed:
            plan.append(PlanStep(job_id=p.job_id, kind="competing_phase", cost_cpu_hours=p.cost_cpu_hours,
                                 for_candidate=cand_id))
            paid.add(p.job_id)
        plan.append(PlanStep(job_id=cand_id, kind="candidate", cost_cpu_hours=float(cost), for_candidate=cand_id))
        paid.add(cand_id)
        left -= package
        counts[key] = counts.get(key, 0) + 1
        n_taken += 1
    return plan


def mean_cost(costs: Iterable[float], default: float) -> float:
    """Mean of the given costs, or ``default`` when there are none."""
    values = np.asarray(list(costs), dtype=float)
    return float(values.mean()) if values.size else float(default)
