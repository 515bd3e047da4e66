"""Real components of a campaign: calculators, executors, hulls, policies and the CGAT ensembles, wired together.

:func:`build_components` is the :data:`~screener.campaign.loop.ComponentsFactory` ``screener run`` uses; every heavy
import happens inside it (or later, in the model, when a prediction is first needed).
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from screener.campaign.config import CampaignConfig
from screener.campaign.ledger import Ledger, json_object
from screener.campaign.loop import Components
from screener.campaign.protocols import Plan, PlanItem, PlanRequest

__all__ = ["build_components", "PolicyPlanner"]

logger = logging.getLogger(__name__)

#: Policy kinds whose decisions do not depend on the model (no ranking, no fine-tune in their campaigns).
MODEL_FREE_POLICY_KINDS = ("random",)


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
    ledger, hulls : optional
        The campaign's ledger and hulls: the ``expected-value`` policy reads the computed PBE E_hull of screened
        candidates and the (PBE, SCAN) E_hull pairs of the campaign and of the known set from them.
    """

    def __init__(self, policy: Any, config: CampaignConfig, *, ledger: Ledger | None = None,
                 hulls: Any = None) -> None:
        self.config = config
        self.ledger, self.hulls = ledger, hulls
        self._known_pairs: list[tuple[float, float]] | None = None
        self._known_pair_sites: list[float] | None = None  # n_sites of each known pair's PBE structure (NaN: unknown)
        self._known_rows: list[tuple[str, str, float]] | None = None
        self._candidate_rows: list[dict[str, Any]] | None = None  # the ledger's candidates (no structures), read once
        self._fraction_cache: dict[str, dict[str, float]] | None = None
        self._site_cache: dict[str, int] | None = None
        # the known set's (atomic fractions, SCAN - PBE E_form): computed once
        self._known_shift_rows: list[tuple[dict[str, float], float]] | None = None
        self._known_entry_cache: tuple[list[tuple[Any, Any]], Any] | None = None  # the known twins, matched once
        # one threshold for every "stable" call: the campaign's, also behind the policy's P(stable)
        acquisition = policy.acquisition.model_copy(
            update={"threshold_ev_per_atom": float(config.stable_threshold_ev_per_atom)})
        self.policy = policy.model_copy(
            update={"batch_size": config.batch_size, "max_calculations_per_round": config.batch_size,
                    "seed": config.seed, "acquisition": acquisition})

    @property
    def unit(self) -> float:
        return float(self.config.unit_cpu_hours or 1.0)

    @property
    def uses_model(self) -> bool:
        """Whether the policy's decisions depend on the model's predictions. ``random`` draws its order from its
        seed alone, so the campaign neither ranks nor fine-tunes for it (same decisions, a fraction of the cost)."""
        return self.policy.kind not in MODEL_FREE_POLICY_KINDS

    def plan(self, request: PlanRequest) -> Plan:
        from screener.policies import decide
        from screener.policies.allocation import CompetingPhaseJob

        u = self.unit
        # PBE competing phases (none with the shipped hulls) go first, outside the policy's SCAN share
        first = list({c.structure_id: c for c in request.competing if c.fidelity != "scan"}.values())
        busy = {c.structure_id for c in first}  # planned once per round: not again at the other fidelity
        remaining = request.remaining_budget - sum(c.estimated_cost for c in first)
        done = request.done
        # N_p: the PBE data behind the model that makes the SCAN predictions (a SCAN model keeps those of its
        # transfer; campaign PBE results after it never reach it)
        behind = request.n_pbe if request.n_pbe_behind_scan_model is None else request.n_pbe_behind_scan_model
        n_pbe = request.n_pbe_pretraining + behind
        n_scan = request.n_scan_pretraining + request.n_scan
        state = {
            "candidate_ids": request.structure_ids,
            "chemsys": request.chemsys,
            "scan_mean_ev_per_atom": _clean(request.e_hull_mean["scan"]),
            "scan_std_ev_per_atom": _clean(request.e_hull_std["scan"], 0.0),
            "pbe_mean_ev_per_atom": _clean(request.e_hull_mean["pbe"]),
            "pbe_std_ev_per_atom": _clean(request.e_hull_std["pbe"], 0.0),
            "cost_scan_cpu_hours": [float(c) * u for c in request.cost["scan"]],
            "cost_pbe_cpu_hours": [float(c) * u for c in request.cost["pbe"]],
            "scan_done": [s for s in request.structure_ids if (s, "scan") in done or s in busy],
            "pbe_done": [s for s in request.structure_ids if (s, "pbe") in done or s in busy],
            "n_scan": n_scan,
            "n_pbe": n_pbe,
            "pbe_reaches_scan_model": request.pbe_reaches_scan_model,
            "learning_curve": learning_curve_points(request.learning_curve, request.n_pbe_pretraining),
            "budget_cpu_hours": max(0.0, remaining) * u,
            "required_phases": [
                CompetingPhaseJob(job_id=c.structure_id, chemsys=c.numbers.get("chemsys", ""),
                                  cost_cpu_hours=c.estimated_cost * u)
                for c in request.competing if c.fidelity == "scan" and c.structure_id not in busy
            ],
            "round_index": request.round_number,
        }
        if self.policy.kind == "expected-value":
            e_hull = self._computed_e_hull(signed_pbe=self.policy.expected_value.pbe_scan_signed_depth)
            # the relation's cell-size term applies where costs differ only: else no sites are read
            from screener.policies.expected_value import costs_differ

            sized = bool(self.policy.expected_value.pbe_scan_size_slope_sd) and costs_differ(request.cost["pbe"])
            state["pbe_result_e_hull_ev_per_atom"], state["pbe_scan_pairs"], pair_sites = self._pbe_results(
                e_hull, with_sites=sized)
            state["n_known_pbe_scan_pairs"] = len(self._known_pairs or [])  # _pbe_results puts them last
            if sized:
                state["log_sites"], state["pbe_scan_pair_log_sites"] = self._log_sites(request.structure_ids,
                                                                                       pair_sites)
            decisions = self.ledger.decisions() if self.ledger is not None else []  # read once for both below
            purchases = self._purchases(e_hull, decisions)
            state["purchase_outcomes"] = [(f, p, y) for f, p, y, _ in purchases]
            if self.policy.expected_value.composition_gp_pool:
                state["purchase_gp_p"] = self._gp_p_at_purchase(purchases, decisions)
            if self.policy.expected_value.competitor_survival_fitted:
                state["purchase_log_survival"] = self._log_survival_at_purchase(purchases, decisions)
            if self.policy.expected_value.outcome_calibration_chemsys_sd:
                state["purchase_chemsys"] = self._chemsys_of_purchases(request, purchases)
            # each purchase's log(cost / median candidate cost): the same ratio at both fidelities (SCAN = k x PBE)
            from screener.policies.outcome_calibration import log_cost_ratio

            ratio = dict(zip(request.structure_ids, log_cost_ratio(request.cost["pbe"]).tolist()))
            state["purchase_log_cost"] = [ratio.get(sid, 0.0) for *_, sid in purchases]
            state["spent_cpu_hours"], state["cost_blind_spent_cpu_hours"] = self._spent(request, decisions)
            # the campaign's yield so far (the stop rule): candidates SCAN-computed and on today's SCAN hull
            threshold = float(self.config.stable_threshold_ev_per_atom) + 1e-6
            state["n_found"] = sum(1 for _, value, role in e_hull["scan"].values()
                                   if role == "candidate" and value <= threshold)
            if self.policy.expected_value.scan_hull_map:
                state["pbe_result_scan_hull_e_hull_ev_per_atom"], state["scan_hull_map_pairs"] = (
                    self._scan_hull_inputs(e_hull, threshold))
            if self.policy.expected_value.competitor_samples:
                state["competitor_survival_scan"], state["competitor_numbers"] = self._competitor_survival(
                    request, state["pbe_result_e_hull_ev_per_atom"], state["pbe_scan_pairs"],
                    state.get("log_sites"), state.get("pbe_scan_pair_log_sites"))
        if self.policy.kind.startswith("camd-") or (self.policy.kind == "expected-value"
                                                    and self.policy.expected_value.uses_composition_gp):
            state["formulas"], state["seed_rows"], state["n_campaign_seed_rows"] = self._camd_seed(
                request.structure_ids)
        # the request's batch (the loop asks again with the slots a first plan left free); PBE phases count in it
        slots = min(self.config.batch_size, request.batch_size) - len(first)
        if slots < 1:
            return Plan(first[: max(request.batch_size, 0)], {"policy": self.policy.name, "kind": self.policy.kind})
        policy = self.policy.model_copy(update={"batch_size": slots, "max_calculations_per_round": slots})
        plan = decide(policy, state)
        costs = {c.structure_id: c.estimated_cost for c in request.competing}
        index = {s: i for i, s in enumerate(request.structure_ids)}
        items = list(first)
        for p in plan.items:
            if p.job_id in busy:  # decide plans each structure once; this guards the PBE phases added above
                continue
            busy.add(p.job_id)
            if p.kind == "competing_phase":
                cost = costs.get(p.job_id, p.cost_cpu_hours / u)
            else:
                cost = float(request.cost[p.fidelity][index[p.job_id]])
            items.append(PlanItem(p.job_id, p.fidelity, p.reason, cost,
                                  {"score": p.score, "for_candidate": p.for_candidate, "kind": p.kind,
                                   **(p.numbers or {})}))
        numbers: dict[str, Any] = {"policy": plan.policy, "kind": plan.kind, "n_pbe_pretraining":
                                   request.n_pbe_pretraining, "n_pbe_campaign": behind, **plan.numbers}
        if plan.allocation is not None:
            numbers["allocation"] = plan.allocation.model_dump(mode="json")
        if plan.fit is not None:
            numbers["scaling_law"] = plan.fit.model_dump(mode="json")
        return Plan(items, numbers)

    def _competitor_survival(self, request: PlanRequest, pbe_result: dict[str, float] | None = None,
                             pbe_scan_pairs: list[tuple[float, float]] | None = None,
                             log_sites: list[float] | None = None, pair_log_sites: list[float] | None = None
                             ) -> tuple[list[float], dict[str, Any]]:
        """Per candidate, P(SCAN-stable once the pool's other candidates are computed | SCAN-stable on today's hull)
        (:func:`screener.policies.competitors.competitor_survival`), one Monte Carlo per element set: the union of
        the candidates' elements when it has at most ``MAX_ELEMENTS``, else each maximal candidate element set
        (larger ones are skipped: survival 1). Candidates with a PBE result (``pbe_result``: PBE E_hull per id) are
        drawn from it through the PBE -> SCAN relation fitted on ``pbe_scan_pairs`` when the policy says so (with
        its cell-size term when ``log_sites`` are given: the planner reads them only where costs differ)."""
        import time

        from screener.hull import MissingReferenceError
        from screener.policies.competitors import MAX_ELEMENTS, competitor_survival, scan_mean_given_p_stable
        from screener.policies.expected_value import relation_from_config

        n = len(request.structure_ids)
        survival = np.ones(n)
        if self.ledger is None or self.hulls is None or n == 0:
            return list(survival), {}
        t0 = time.perf_counter()
        fractions = self._fractions()
        comps = [fractions.get(s) for s in request.structure_ids]
        open_scan = np.array([(s, "scan") not in request.done and comps[i] is not None
                              for i, s in enumerate(request.structure_ids)])
        element_sets = {frozenset(c) for c, o in zip(comps, open_scan) if o}
        union = frozenset().union(*element_sets) if element_sets else frozenset()
        groups = [union] if len(union) <= MAX_ELEMENTS else sorted(
            (g for g in element_sets if not any(g < other for other in element_sets)), key=sorted)
        cfg = self.policy.expected_value
        numbers: dict[str, Any] = {"competitor_groups": 0, "competitor_plausible": 0, "competitor_skipped": 0}
        # each open candidate joins the first group holding its elements (looked up once per distinct element set)
        group_of = {es: next(k for k, g in enumerate(groups) if es <= g) for es in element_sets}
        group_index = np.array([group_of[frozenset(c)] if o else -1 for c, o in zip(comps, open_scan)], dtype=int)
        hull = self.hulls.hulls["scan"]
        mean, std = np.asarray(request.e_hull_mean["scan"], float), np.asarray(request.e_hull_std["scan"], float)
        threshold = float(self.config.stable_threshold_ev_per_atom)
        if cfg.competitor_uses_pbe_results and pbe_result:
            # a PBE result says more than the SCAN model about the SCAN E_hull: draw such candidates with the P(below)
            # the policy values them at (the relation's), at the model's sigma
            screened = np.array([s in pbe_result for s in request.structure_ids])
            if screened.any():
                # the planner's relation: with the cell-size term where it has one (log_sites: costs differ)
                sized = log_sites is not None
                relation = relation_from_config(cfg, pbe_scan_pairs or [], threshold,
                                                len(self._known_pairs or []) if pbe_scan_pairs else 0,
                                                pair_log_sites=pair_log_sites if sized else None)
                q = relation.p_scan_stable([pbe_result[s] for s, on in zip(request.structure_ids, screened) if on],
                                           np.asarray(log_sites, float)[screened] if sized else None)
                mean = mean.copy()
                mean[screened] = scan_mean_given_p_stable(q, std[screened], threshold)
                numbers["competitor_from_pbe_results"] = int((screened & open_scan).sum())  # those in the draws
        stays, below = 0.0, 0.0
        for k, group in enumerate(groups):
            members = group_index == k
            if not members.any():
                continue
            if len(group) > MAX_ELEMENTS:
                numbers["competitor_skipped"] += int(members.sum())
                continue
            elements = sorted(group)
            try:
                diagram = hull.phase_diagram(elements)
            except MissingReferenceError:
                numbers["competitor_skipped"] += int(members.sum())
                continue
            base = diagram.stable_entries
            base_x = np.array([[e.composition.get_atomic_fraction(el) for el in elements] for e in base])
            base_e = np.array([diagram.get_form_energy_per_atom(e) for e in base])
            idx = np.flatnonzero(members)
            cand_x = np.array([[comps[i].get(el, 0.0) for el in elements] for i in idx])
            try:
                s, nums = competitor_survival(base_x, base_e, cand_x, mean[idx], std[idx],
                                              threshold=threshold,
                                              samples=cfg.competitor_samples, seed=request.round_number,
                                              error_correlation=cfg.competitor_error_correlation,
                                              against=cfg.competitor_against,
                                              block=int(self.config.batch_size))
            except Exception as exc:  # noqa: BLE001 - e.g. qhull on a degenerate system: no discount, said so
                logger.warning("competitor survival of %s skipped: %s", "-".join(elements), exc)
                numbers["competitor_skipped"] += int(members.sum())
                continue
            survival[idx] = s
            numbers["competitor_groups"] += 1
            numbers["competitor_plausible"] += nums["n_plausible"]
            if nums["overall_survival"] is not None:
                weight = float(nums["n_plausible"])
                stays, below = stays + weight * nums["overall_survival"], below + weight
        numbers["competitor_overall_survival"] = stays / below if below else None
        numbers["competitor_s"] = round(time.perf_counter() - t0, 3)
        return [float(v) for v in survival], numbers

    def _fractions(self) -> dict[str, dict[str, float]]:
        """Atomic fractions per candidate (from the ledger's formulas; computed once per planner)."""
        if self._fraction_cache is None:
            from pymatgen.core import Composition

            from screener.policies.scan_hull_map import atomic_fractions

            self._fraction_cache = {row["structure_id"]: atomic_fractions(Composition(row["formula"]))
                                    for row in self._ledger_candidates() if row.get("formula")}
        return self._fraction_cache

    def _computed_e_hull(self, signed_pbe: bool = False) -> dict[str, dict[str, tuple[int, float, str]]]:
        """(round bought, E_hull on the current hull, job role) of every computed structure, per fidelity; with
        ``signed_pbe`` a PBE-stable one's E_hull is its (negative) depth below the hull of the other phases
        (stable or not is the same either way)."""
        from screener.policies.expected_value import ON_HULL_EV_PER_ATOM

        e_hull: dict[str, dict[str, tuple[int, float, str]]] = {"pbe": {}, "scan": {}}
        if self.ledger is None or self.hulls is None:
            return e_hull
        for job in self.ledger.jobs(states=["done"]):
            entry = (job.result or {}).get("entry")
            if entry and job.fidelity in e_hull:
                value = self.hulls.e_above_hull_ev_per_atom(job.fidelity, entry)
                if signed_pbe and job.fidelity == "pbe" and value <= ON_HULL_EV_PER_ATOM:
                    value = min(value, self.hulls.e_hull_signed_ev_per_atom("pbe", entry))
                if np.isfinite(value):
                    e_hull[job.fidelity][job.structure_id] = (int(job.round), float(value), job.role)
        return e_hull

    def _purchases(self, computed: dict[str, dict[str, tuple[int, float, str]]],
                   decisions: list[dict[str, Any]] | None = None) -> list[tuple[str, float, bool, str]]:
        """(fidelity, P(stable) the round's ranking gave, stable on the current hull, id) of each candidate calculation
        bought on the model's prediction: a SCAN run of a candidate whose PBE result came in an earlier round was
        bought on that result, and a competing phase for another candidate's hull, and both are left out."""
        if self.ledger is None:
            return []
        threshold = float(self.config.stable_threshold_ev_per_atom) + 1e-6
        # a pool candidate can also be bought as another candidate's competing phase: its job's role still reads
        # "candidate", but its decision's kind says why it was bought
        if decisions is None:
            decisions = self.ledger.decisions()
        as_phase = {(d["round"], d["structure_id"], d["fidelity"]) for d in decisions
                    if d.get("accepted") and json_object(d.get("numbers_json")).get("kind") == "competing_phase"}
        by_round: dict[int, list[tuple[str, str]]] = {}
        for fidelity, done in computed.items():
            for sid, (number, _, role) in done.items():
                screened = computed["pbe"].get(sid)
                if role != "candidate" or (fidelity == "scan" and screened is not None and screened[0] < number) \
                        or (number, sid, fidelity) in as_phase:
                    continue
                by_round.setdefault(number, []).append((sid, fidelity))
        out: list[tuple[str, float, bool, str]] = []
        for number, keys in sorted(by_round.items()):
            rows = self.ledger.predictions(number, structure_ids=[sid for sid, _ in keys])
            p_at = {(r["structure_id"], r["fidelity"]): r["p_stable"] for r in rows}
            for sid, fidelity in keys:
                p = p_at.get((sid, fidelity))
                if p is not None and np.isfinite(p):
                    out.append((fidelity, float(p), computed[fidelity][sid][1] <= threshold, sid))
        return out

    def _spent(self, request: PlanRequest, decisions: list[dict[str, Any]] | None = None) -> tuple[float, float]:
        """CPU-hours spent (done and reserved, this round's earlier picks included) before this plan, and of those
        the cost-blind picks of earlier rounds: accepted decisions (each reserved its job, and jobs are never
        removed; a job that failed still cost its budget) whose ``route`` says so."""
        if self.ledger is None:
            return 0.0, 0.0
        if decisions is None:
            decisions = self.ledger.decisions()
        u = self.unit
        spent = max(self.ledger.budget().total - request.remaining_budget, 0.0) * u
        blind = math.fsum(float(d["estimated_cost"]) for d in decisions
                          if d.get("accepted") and json_object(d.get("numbers_json")).get("route") == "cost_blind")
        return spent, blind * u

    def _pbe_results(self, computed: dict[str, dict[str, tuple[int, float, str]]], with_sites: bool = False
                     ) -> tuple[dict[str, float], list[tuple[float, float]], list[float]]:
        """Computed PBE E_hull per structure (current hull), the (PBE, SCAN) E_hull pairs: the campaign's own and
        the known set's (reference phases present at both fidelities, matched by id; computed once per planner),
        and with ``with_sites`` each pair's n_sites (NaN: unknown; else an empty list)."""
        if self.ledger is None or self.hulls is None:
            return {}, [], []
        e_hull = {f: {sid: value for sid, (_, value, _) in done.items()} for f, done in computed.items()}
        own = [s for s in e_hull["pbe"] if s in e_hull["scan"]]
        pairs = [(e_hull["pbe"][s], e_hull["scan"][s]) for s in own]
        if self._known_pairs is None or (with_sites and self._known_pair_sites is None):
            known = _known_pairs(self.hulls, signed=self.policy.expected_value.pbe_scan_signed_depth,
                                 entries=self._known_entries(),
                                 with_sites=with_sites)
            self._known_pairs = [(pair[0], pair[1]) for pair in known]
            self._known_pair_sites = [pair[2] for pair in known] if with_sites else None
        if not with_sites:
            return e_hull["pbe"], pairs + self._known_pairs, []
        sites = self._sites()
        return e_hull["pbe"], pairs + self._known_pairs, [float(sites.get(s, np.nan)) for s in own] + list(
            self._known_pair_sites or [])

    def _scan_hull_inputs(self, computed: dict[str, dict[str, tuple[int, float, str]]], threshold: float
                          ) -> tuple[dict[str, float], list[tuple[float, float, bool]]]:
        """``x_s`` of each candidate with a PBE result and no SCAN result (its PBE formation energy plus the
        fitted SCAN - PBE shift, against today's SCAN hull) and the ``(PBE E_hull, x_s, SCAN-stable)`` pairs of the
        structures the campaign computed at both levels (each ``x_s`` against the SCAN hull without that
        structure), for :mod:`screener.policies.scan_hull_map`. The shift is fitted on those and the known set's
        pairs; the map on the campaign's alone: read on the known set (its own phases make its hull), ``x_s`` hardly
        tells the SCAN-stable apart, while in a campaign it places a result against the pool's computed
        polymorphs and neighbours. A structure whose hull lacks an element is left out."""
        from screener.hull.corrections import as_entry
        from screener.hull.phase_diagram import entry_key
        from screener.policies.scan_hull_map import atomic_fractions, fit_fidelity_shift

        if self.ledger is None or self.hulls is None:
            return {}, []
        hp, hs = self.hulls.hulls["pbe"], self.hulls.hulls["scan"]

        def x_s(entry: Any, e_form_scan: float, leave_out: Any = None) -> float:
            return hs.e_above_hull_from_formation_energy(
                entry.composition, e_form_scan, exclude=[str(leave_out)] if leave_out is not None else ())

        if self._known_shift_rows is None:  # the known set's pairs teach the shift only (see the docstring)
            rows: list[tuple[dict[str, float], float]] = []
            for pbe, scan in self._known_entries()[0]:
                try:
                    difference = hs.e_form_ev_per_atom(scan) - hp.e_form_ev_per_atom(pbe)
                    rows.append((atomic_fractions(pbe.composition), difference))
                except Exception:  # noqa: BLE001 - an element without a reference at one level
                    continue
            self._known_shift_rows = rows
        entries: dict[str, dict[str, Any]] = {"pbe": {}, "scan": {}}
        for job in self.ledger.jobs(states=["done"]):
            entry = (job.result or {}).get("entry")
            if entry and job.fidelity in entries and job.structure_id in computed[job.fidelity]:
                entries[job.fidelity][job.structure_id] = as_entry(entry)
        own = []
        for sid, pbe in entries["pbe"].items():
            scan = entries["scan"].get(sid)
            try:
                e_p = hp.e_form_ev_per_atom(pbe)
                d = hs.e_form_ev_per_atom(scan) - e_p if scan is not None else None
            except Exception:  # noqa: BLE001 - an element without a reference at one level: left out
                continue
            own.append((sid, pbe, scan, e_p, d))
        shift = fit_fidelity_shift([r[0] for r in self._known_shift_rows]
                                   + [atomic_fractions(pbe.composition) for _, pbe, _, _, d in own if d is not None],
                                   [r[1] for r in self._known_shift_rows] + [d for *_, d in own if d is not None])
        mapped: dict[str, float] = {}
        pairs_out: list[tuple[float, float, bool]] = []
        for sid, pbe, scan, e_p, d in own:
            try:
                e_s = e_p + shift(atomic_fractions(pbe.composition))
                if scan is None:
                    mapped[sid] = x_s(pbe, e_s)
                else:
                    y = computed["scan"][sid][1] <= threshold
                    pairs_out.append((computed["pbe"][sid][1], x_s(pbe, e_s, entry_key(scan) if y else None), y))
            except Exception:  # noqa: BLE001 - as above
                continue
        return mapped, pairs_out

    def _known_entries(self) -> tuple[list[tuple[Any, Any]], Any]:
        """:func:`_known_entry_pairs` of the planner's hulls, matched once (none where the hulls cannot say)."""
        if self._known_entry_cache is None:
            try:
                self._known_entry_cache = _known_entry_pairs(self.hulls)
            except Exception as exc:  # noqa: BLE001 - a hull without ids or references: the campaign's pairs remain
                logger.info("no known PBE/SCAN pairs: %s", exc)
                self._known_entry_cache = ([], lambda entry: None)
        return self._known_entry_cache

    def _sites(self) -> dict[str, int]:
        """n_sites of every structure in the ledger (candidates and phases; read once per planner)."""
        if self._site_cache is None:
            self._site_cache = {row["structure_id"]: int(row["n_sites"]) for row in self._ledger_candidates()
                                if row.get("n_sites")}
        return self._site_cache

    def _ledger_candidates(self) -> list[dict[str, Any]]:
        """The ledger's candidate rows of every role, without structures (read once per planner; none without a
        ledger): the atomic fractions and the cell sizes both come from them."""
        if self._candidate_rows is None:
            self._candidate_rows = (list(self.ledger.candidates(role=None, with_structures=False))
                                    if self.ledger is not None else [])
        return self._candidate_rows

    def _log_sites(self, ids: list[str], pair_sites: list[float]) -> tuple[list[float], list[float]]:
        """``ln(n_sites / median)`` of each candidate and of each PBE/SCAN pair, the median over the candidates
        (NaN where unknown: read as the median cell)."""
        sites = self._sites()
        n = np.array([float(sites.get(s, np.nan)) for s in ids])
        known = n[np.isfinite(n)]
        if known.size == 0:
            return [float("nan")] * len(ids), [float("nan")] * len(pair_sites)
        median = float(np.median(known))
        with np.errstate(divide="ignore", invalid="ignore"):
            return (np.log(n / median).tolist(), np.log(np.asarray(pair_sites, float) / median).tolist())

    @staticmethod
    def _numbers_at_purchase(purchases: list[tuple[str, float, bool, str]], decisions: list[dict[str, Any]]
                             ) -> list[dict[str, Any]]:
        """Per purchase, the numbers of the decision that bought it (empty where none)."""
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for d in decisions:  # in id order: a candidate's last accepted decision of that fidelity is its purchase
            if d.get("accepted"):
                latest[(d["structure_id"], d["fidelity"])] = json_object(d.get("numbers_json"))
        return [latest.get((sid, fidelity), {}) for fidelity, _, _, sid in purchases]

    def _log_survival_at_purchase(self, purchases: list[tuple[str, float, bool, str]],
                                  decisions: list[dict[str, Any]]) -> list[float]:
        """Per purchase, ln of the competitor survival its decision recorded (0 where none was estimated)."""
        out = []
        for numbers in self._numbers_at_purchase(purchases, decisions):
            s = numbers.get("competitor_survival")
            ok = isinstance(s, (int, float)) and math.isfinite(s) and s > 0
            out.append(math.log(min(float(s), 1.0)) if ok else 0.0)
        return out

    def _chemsys_of_purchases(self, request: Any, purchases: list[tuple[str, float, bool, str]]) -> list[str]:
        """Per purchase, its candidate's chemical system (the request's, else the ledger's candidate row)."""
        known = dict(zip(request.structure_ids, request.chemsys))
        missing = sorted({sid for *_, sid in purchases if sid not in known})
        if missing and self.ledger is not None:
            known.update({r["structure_id"]: r["chemsys"] or "" for r in self.ledger.candidates(
                None, with_structures=False, structure_ids=missing)})
        return [known.get(sid, "") for *_, sid in purchases]

    def _gp_p_at_purchase(self, purchases: list[tuple[str, float, bool, str]], decisions: list[dict[str, Any]]
                          ) -> list[float | None]:
        """Per purchase, the composition GP's P(stable) when it was bought (from its decision's numbers; None where
        the decision has none, e.g. bought before the option was on)."""
        from scipy.special import ndtr

        threshold = float(self.policy.acquisition.threshold_ev_per_atom)
        out: list[float | None] = []
        for (fidelity, *_), numbers in zip(purchases, self._numbers_at_purchase(purchases, decisions)):
            mean = numbers.get(f"composition_gp_{fidelity}_mean_ev_per_atom")
            std = numbers.get(f"composition_gp_{fidelity}_std_ev_per_atom")
            ok = isinstance(mean, (int, float)) and isinstance(std, (int, float)) and std > 0
            out.append(float(ndtr((threshold - mean) / std)) if ok else None)
        return out

    def _camd_seed(self, ids: list[str]) -> tuple[list[str] | None, list[tuple[str, str, float]], int]:
        """The CAMD peers' inputs: each candidate's formula, and (formula, fidelity, E_hull in the current hull) of
        every computed structure: the campaign's results and the hulls' reference phases (the known set's are
        computed once per planner, like the known pairs), and how many of the rows (the first ones) are the
        campaign's."""
        if self.ledger is None or self.hulls is None:
            return None, [], 0
        formula = {c["structure_id"]: c["formula"] for c in self.ledger.candidates(role=None, with_structures=False)}
        rows: list[tuple[str, str, float]] = []
        for job in self.ledger.jobs(states=["done"]):
            entry = (job.result or {}).get("entry")
            if entry and job.fidelity in ("pbe", "scan") and formula.get(job.structure_id):
                value = self.hulls.e_above_hull_ev_per_atom(job.fidelity, entry)
                if np.isfinite(value):
                    rows.append((formula[job.structure_id], job.fidelity, float(value)))
        if self._known_rows is None:
            self._known_rows = []
            for fidelity in ("pbe", "scan"):
                hull = self.hulls.hulls[fidelity]
                for ref in hull.references:
                    value = hull.e_above_hull_ev_per_atom(ref)
                    if np.isfinite(value):
                        self._known_rows.append((ref.composition.reduced_formula, fidelity, float(value)))
        return [formula.get(s) or "" for s in ids], rows + self._known_rows, len(rows)


_FUNCTIONAL_SUFFIX = re.compile(r"[-_:](?:GGA\+U|GGA|PBE\+U|PBE|R2SCAN|SCAN)$", re.IGNORECASE)


def material_key(entry: Any) -> str | None:
    """The material an entry is a calculation of: ``data["material_id"]``, else its id without a functional suffix
    (MP's ``mp-123-GGA`` / ``mp-123-r2SCAN`` -> ``mp-123``) and without the ``known:`` prefix of a candidate's twin."""
    from screener.hull.known_phases import KNOWN_TWIN_PREFIX
    from screener.hull.phase_diagram import entry_key

    raw = (entry.data or {}).get("material_id") or entry_key(entry)
    if raw is None:
        return None
    key = str(raw).removeprefix(KNOWN_TWIN_PREFIX)
    return _FUNCTIONAL_SUFFIX.sub("", key)


def _known_pairs(hulls: Any, signed: bool = False, with_sites: bool = False,
                 entries: tuple[list[tuple[Any, Any]], Any] | None = None) -> list[tuple[float, ...]]:
    """(PBE, SCAN) E_hull of the reference compounds known at both fidelities (empty when the hulls cannot say);
    with ``signed`` a PBE-stable one's PBE E_hull is its (negative) depth below the hull of the other phases; with
    ``with_sites`` a third value, the PBE structure's n_sites (NaN where the entry has no structure).
    The twins are :func:`_known_entry_pairs` (``entries``: already matched)."""
    try:
        pairs, structure = _known_entry_pairs(hulls) if entries is None else entries
        from screener.hull.phase_diagram import entry_key
        from screener.policies.expected_value import ON_HULL_EV_PER_ATOM

        out = []
        for pbe, scan in pairs:
            x = hulls.hulls["pbe"].e_above_hull_ev_per_atom(pbe)
            if signed and x <= ON_HULL_EV_PER_ATOM and entry_key(pbe) is not None:
                x = min(x, hulls.hulls["pbe"].e_above_hull_ev_per_atom(pbe, exclude=[str(entry_key(pbe))]))
            y = hulls.hulls["scan"].e_above_hull_ev_per_atom(scan)
            if np.isfinite(x) and np.isfinite(y):
                s = structure(pbe) if with_sites else None
                out.append((float(x), float(y), float(len(s)) if s is not None else float("nan"))
                           if with_sites else (float(x), float(y)))
        return out
    except Exception as exc:  # noqa: BLE001 - a hull without ids or references: the prior and campaign pairs remain
        logger.info("no known PBE/SCAN pairs for the PBE->SCAN relation: %s", exc)
        return []


def _known_entry_pairs(hulls: Any) -> tuple[list[tuple[Any, Any]], Any]:
    """The (PBE, SCAN) entries of the reference compounds known at both fidelities, and a function giving an
    entry's structure (None where unknown).

    Twins are matched by material (:func:`material_key`: MP's GGA and r2SCAN entries of one material carry different
    entry ids), then, among those left, by ``StructureMatcher`` on the structures (reference entries without ids).
    """
    from pymatgen.analysis.structure_matcher import StructureMatcher

    refs = {f: [e for e in hulls.hulls[f].references if len(e.composition.elements) > 1] for f in ("pbe", "scan")}
    by_material: dict[str, Any] = {}
    for e in refs["scan"]:
        by_material.setdefault(material_key(e) or "", e)
    by_material.pop("", None)
    pairs: list[tuple[Any, Any]] = []
    used: set[int] = set()
    left_pbe = []
    for e in refs["pbe"]:
        twin = by_material.get(material_key(e) or "\0")
        if twin is not None and id(twin) not in used:
            pairs.append((e, twin))
            used.add(id(twin))
        else:
            left_pbe.append(e)
    left_scan = [e for e in refs["scan"] if id(e) not in used]
    structure_of = getattr(hulls, "_structure", None)

    def structure(e: Any) -> Any:
        s = getattr(e, "structure", None)
        if s is None and callable(structure_of):
            from screener.hull.phase_diagram import entry_key

            s = structure_of(str(entry_key(e)))
        return s

    if left_pbe and left_scan:  # no common id: the same structure (where the entries keep one)
        matcher = StructureMatcher()
        scan_by_formula: dict[str, list[tuple[Any, Any]]] = {}
        for e in left_scan:
            s = structure(e)
            if s is not None:
                scan_by_formula.setdefault(e.composition.reduced_formula, []).append((e, s))
        for e in left_pbe:
            candidates = scan_by_formula.get(e.composition.reduced_formula)
            s = structure(e) if candidates else None
            if s is None:
                continue
            for twin, t in candidates:
                if id(twin) not in used and matcher.fit(s, t):
                    pairs.append((e, twin))
                    used.add(id(twin))
                    break
    return pairs, structure


def learning_curve_points(rows: list[dict[str, Any]], n_pbe_pretraining: int = 0) -> list[Any]:
    """The ledger's SCAN learning-curve rows as weighted points for the scaling-law fit.

    One point per round: the SCAN model's prospective MAE on that round's new SCAN results, weighted by
    ``(mae / se)**2`` = 1 / variance of log MAE, where ``se`` is the standard error of that MAE (a 3-point round
    counts little). Rows written before the standard error was recorded are weighted by their number of points, and
    rows written before N_p included the pre-training set (``n_pbe_pretraining`` NULL) get ``n_pbe_pretraining``
    added.
    """
    from screener.policies.decide import LearningCurvePoint

    points = []
    for p in rows:
        mae = p.get("mae_ev_per_atom")
        if p.get("fidelity") != "scan" or not mae or mae <= 0:
            continue
        se = p.get("mae_se_ev_per_atom")
        weight = (mae / se) ** 2 if se and se > 0 else float(p.get("n_points") or 1)
        n_pbe = p["n_pbe"] + (n_pbe_pretraining if p.get("n_pbe_pretraining") is None else 0)
        points.append(LearningCurvePoint(n_scan=p["n_scan"], n_pbe=n_pbe, mae_ev_per_atom=mae, weight=weight))
    return points


def _clean(values: Any, fill: float | None = None) -> list[float]:
    """Finite floats for the policy (a nan E_hull, from a hull without references, ranks last)."""
    arr = np.asarray(values, dtype=float)
    default = 10.0 if fill is None else fill
    return [float(x) if np.isfinite(x) else default for x in arr]


def build_components(config: CampaignConfig, campaign_dir: Path, ledger: Ledger) -> Components:
    """The real components for ``config`` (the current model versions come from the ledger)."""
    from screener.calculators import get_calculator
    from screener.campaign.ensemble_model import EnsembleModel, default_model_dir
    from screener.campaign.hulls import REFERENCES_FILENAME, CampaignHulls, prepare_references
    from screener.execution import get_executor
    from screener.policies import load_policy

    campaign_dir = Path(campaign_dir)
    calculator = get_calculator(config.backend, **config.backend_options)
    policy = load_policy(config.policy)
    executor = get_executor(config.executor, campaign_dir, **config.executor_options)
    rows = ledger.candidates(role=None)
    elements = {el for c in rows for el in (c["chemsys"] or "").split("-") if el}
    candidates = None
    if not (campaign_dir / REFERENCES_FILENAME).exists():  # created once; the candidates decide its known phases
        candidates = {c["structure_id"]: _structure(c["structure_json"]) for c in rows if c["role"] == "candidate"}
    references = prepare_references(campaign_dir, config.references, elements, config.backend,
                                    candidates=candidates, backend_options=config.backend_options)
    hulls = CampaignHulls.from_file(references, stable_threshold_ev_per_atom=config.stable_threshold_ev_per_atom)
    models = {m["fidelity"]: m["path"] for m in ledger.models()}  # latest version of each fidelity wins
    pbe_dir = models.get("pbe") or config.model or str(default_model_dir())
    if config.model is None and "pbe" not in models:
        config.model = pbe_dir  # recorded so a resumed campaign starts from the same weights
    # the latest SCAN fine-tune, else the initial SCAN model given (else none: SCAN borrows the PBE model)
    model = EnsembleModel(pbe_dir, models.get("scan") or config.scan_model, cache_dir=campaign_dir / "graphs",
                          epochs=config.fine_tune_epochs, initial_scan_dir=config.scan_model)
    planner = PolicyPlanner(policy, config, ledger=ledger, hulls=hulls)
    return Components(calculator=calculator, executor=executor, model=model, hulls=hulls, planner=planner)


def _structure(structure_json: str) -> Any:
    """A candidate's Structure from the ledger, decoded without running anything named in it."""
    import json

    from screener._safe_json import structure_from_dict

    return structure_from_dict(json.loads(structure_json), "candidate structure in the ledger")

