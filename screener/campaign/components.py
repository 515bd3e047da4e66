"""Real components of a campaign: calculators, executors, hulls, policies and the CGAT ensembles, wired together.

:func:`build_components` is the :data:`~screener.campaign.loop.ComponentsFactory` ``screener run`` uses; every heavy
import happens inside it (or later, in the model, when a prediction is first needed).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from screener.campaign.config import CampaignConfig
from screener.campaign.ledger import Ledger
from screener.campaign.loop import Components
from screener.campaign.protocols import Plan, PlanItem, PlanRequest

__all__ = ["build_components", "PolicyPlanner"]

logger = logging.getLogger(__name__)


class PolicyPlanner:
    """Adapter from the loop's :class:`PlanRequest` (budget units) to :func:`screener.policies.decide` (CPU-hours).

    Parameters
    ----------
    policy : PolicyConfig
        The loaded policy.
    config : CampaignConfig
        The campaign's config: ``unit_cpu_hours`` (CPU-hours of one budget unit, read at each plan) and
        ``batch_size`` (``--batch``: the policy's round budget becomes ``batch_size`` SCAN-equivalents and at most
        ``batch_size`` calculations are planned per round).
    """

    def __init__(self, policy: Any, config: CampaignConfig) -> None:
        self.config = config
        self.policy = policy.model_copy(
            update={"batch_size": config.batch_size, "max_calculations_per_round": config.batch_size,
                    "seed": config.seed})

    @property
    def unit(self) -> float:
        return float(self.config.unit_cpu_hours or 1.0)

    def plan(self, request: PlanRequest) -> Plan:
        from screener.policies import decide
        from screener.policies.allocation import CompetingPhaseJob
        from screener.policies.decide import LearningCurvePoint

        u = self.unit
        # PBE competing phases (none with the shipped hulls) go first, outside the policy's SCAN share
        first = [c for c in request.competing if c.fidelity != "scan"]
        remaining = request.remaining_budget - sum(c.estimated_cost for c in first)
        done = request.done
        # one point per round: the SCAN model's prospective MAE on that round's new SCAN results, weighted by how
        # many results it was measured on
        curve = [LearningCurvePoint(n_scan=p["n_scan"], n_pbe=p["n_pbe"], mae_ev_per_atom=p["mae_ev_per_atom"],
                                    weight=float(p.get("n_points") or 1))
                 for p in request.learning_curve
                 if p["fidelity"] == "scan" and p["mae_ev_per_atom"] and p["mae_ev_per_atom"] > 0]
        state = {
            "candidate_ids": request.structure_ids,
            "chemsys": request.chemsys,
            "scan_mean_ev_per_atom": _clean(request.e_hull_mean["scan"]),
            "scan_std_ev_per_atom": _clean(request.e_hull_std["scan"], 0.0),
            "pbe_mean_ev_per_atom": _clean(request.e_hull_mean["pbe"]),
            "pbe_std_ev_per_atom": _clean(request.e_hull_std["pbe"], 0.0),
            "cost_scan_cpu_hours": [float(c) * u for c in request.cost["scan"]],
            "cost_pbe_cpu_hours": [float(c) * u for c in request.cost["pbe"]],
            "scan_done": [s for s in request.structure_ids if (s, "scan") in done],
            "pbe_done": [s for s in request.structure_ids if (s, "pbe") in done],
            "n_scan": request.n_scan,
            "n_pbe": request.n_pbe,
            "learning_curve": curve,
            "budget_cpu_hours": max(0.0, remaining) * u,
            "required_phases": [
                CompetingPhaseJob(job_id=c.structure_id, chemsys=c.numbers.get("chemsys", ""),
                                  cost_cpu_hours=c.estimated_cost * u)
                for c in request.competing if c.fidelity == "scan"
            ],
            "round_index": request.round_number,
        }
        plan = decide(self.policy, state)
        costs = {c.structure_id: c.estimated_cost for c in request.competing}
        index = {s: i for i, s in enumerate(request.structure_ids)}
        items = list(first)
        for p in plan.items:
            if p.kind == "competing_phase":
                cost = costs.get(p.job_id, p.cost_cpu_hours / u)
            else:
                cost = float(request.cost[p.fidelity][index[p.job_id]])
            items.append(PlanItem(p.job_id, p.fidelity, p.reason, cost,
                                  {"score": p.score, "for_candidate": p.for_candidate, "kind": p.kind}))
        numbers: dict[str, Any] = {"policy": plan.policy, "kind": plan.kind, **plan.numbers}
        if plan.allocation is not None:
            numbers["allocation"] = plan.allocation.model_dump(mode="json")
        if plan.fit is not None:
            numbers["scaling_law"] = plan.fit.model_dump(mode="json")
        return Plan(items, numbers)


def _clean(values: Any, fill: float | None = None) -> list[float]:
    """Finite floats for the policy (a nan E_hull, from a hull without references, ranks last)."""
    arr = np.asarray(values, dtype=float)
    default = 10.0 if fill is None else fill
    return [float(x) if np.isfinite(x) else default for x in arr]


def build_components(config: CampaignConfig, campaign_dir: Path, ledger: Ledger) -> Components:
    """The real components for ``config`` (the current model versions come from the ledger)."""
    from screener.calculators import get_calculator
    from screener.campaign.ensemble_model import EnsembleModel, default_model_dir
    from screener.campaign.hulls import CampaignHulls, prepare_references
    from screener.execution import get_executor
    from screener.policies import load_policy

    campaign_dir = Path(campaign_dir)
    calculator = get_calculator(config.backend, **config.backend_options)
    policy = load_policy(config.policy)
    executor = get_executor(config.executor, campaign_dir, **config.executor_options)
    elements = {el for c in ledger.candidates(role=None) for el in (c["chemsys"] or "").split("-") if el}
    references = prepare_references(campaign_dir, config.references, elements, config.backend)
    hulls = CampaignHulls.from_file(references)
    models = {m["fidelity"]: m["path"] for m in ledger.models()}  # latest version of each fidelity wins
    pbe_dir = models.get("pbe") or config.model or str(default_model_dir())
    if config.model is None and "pbe" not in models:
        config.model = pbe_dir  # recorded so a resumed campaign starts from the same weights
    model = EnsembleModel(pbe_dir, models.get("scan"), cache_dir=campaign_dir / "graphs",
                          epochs=config.fine_tune_epochs)
    planner = PolicyPlanner(policy, config)
    return Components(calculator=calculator, executor=executor, model=model, hulls=hulls, planner=planner)
