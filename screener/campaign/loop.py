"""The campaign loop: rank, acquire, decide fidelities, compute, update hulls, fine-tune; restartable at any point.

A round moves through the states ``ranking -> planned -> collected -> finished`` in the ledger (``empty`` when the
policy could plan nothing more: the campaign is over). Each transition is committed after its work is persisted, so
a run killed at any point resumes in the state it left: planned jobs are looked up in the job store by uuid and only
the missing ones are resubmitted: rebuilt by the calculator from the ledger's data with the recorded uuid (stored
flow JSON is only a record, never decoded, so a campaign folder cannot name code to run).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from screener.campaign.config import FIDELITIES, CampaignConfig
from screener.campaign.ledger import LEDGER_FILENAME, OPEN_STATES, Ledger, json_object
from screener.campaign.protocols import Calculator, Executor, Hulls, Model, Plan, PlanItem, Planner, PlanRequest
from screener.campaign.ranking import (PREDICTION_STORAGE_META, predicted_e_hull, prediction_row,
                                       prediction_storage_rule, probability_below, stored_prediction_rows)
from screener.errors import InvalidInputError, ScreenerError

__all__ = ["Campaign", "Components", "ComponentsFactory", "Progress"]

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage, completed, total)
UNAVAILABLE_META = "unavailable_calculations"  # ledger meta: [[structure_id, fidelity], ...] the back-end lacks


@dataclass
class Components:
    """What a campaign needs to run; real ones come from :func:`screener.campaign.components.build_components`."""

    calculator: Calculator
    executor: Executor
    model: Model
    hulls: Hulls
    planner: Planner


ComponentsFactory = Callable[[CampaignConfig, Path, Ledger], Components]


def _result_dict(result: Any) -> dict[str, Any]:
    if hasattr(result, "model_dump"):
        return result.model_dump(mode="json")
    if hasattr(result, "as_dict"):
        return result.as_dict()
    return dict(result)


def flow_uuid(flow: Any) -> str:
    """Uuid of the job whose output is the flow's result (``flow.output.uuid`` for a Flow, ``job.uuid`` for a Job)."""
    output = getattr(flow, "output", None)
    return str(getattr(output, "uuid", None) or flow.uuid)


def dump_flow(flow: Any) -> str:
    """JSON of a flow (MSONable): the ledger's human-readable record of what was submitted.

    Never decoded to run: an open job is rebuilt from data (:meth:`Campaign._rebuild_flow`), so a campaign copied
    from someone else cannot make ``screener run`` execute a function named in its ledger.
    """
    from monty.json import MontyEncoder

    return json.dumps(flow, cls=MontyEncoder)


class Campaign:
    """A campaign folder with its ledger and components.

    Use :meth:`create` for a new campaign and :meth:`open` to resume one; then :meth:`run`.
    """

    def __init__(self, campaign_dir: Path, ledger: Ledger, config: CampaignConfig, components: Components) -> None:
        self.campaign_dir = Path(campaign_dir)
        self.ledger = ledger
        self.config = config
        self.components = components
        self._structures: dict[str, Any] = {}
        self._roles: dict[str, str] = {}
        self._in_hull: set[str] = set()
        self._cost_cache: dict[tuple[str, str], tuple[float, float]] = {}
        self._chemsys: dict[str, str] = {}  # structure id -> chemical system, kept across rounds
        #: False: submit and return (JobsPending) instead of polling the executor until its jobs are back
        self.wait = True
        self._load_candidates()

    # ---- construction ----------------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        campaign_dir: str | Path,
        config: CampaignConfig,
        structures: Mapping[str, Any],
        factory: ComponentsFactory,
    ) -> Campaign:
        """Create a campaign folder: ledger, config (with the budget unit fixed), candidates, references.

        All or nothing: the campaign is built in a hidden folder beside ``campaign_dir`` (holding the writer lock)
        and renamed into place when complete (:mod:`screener.campaign.folder`), so a creation killed at any point
        leaves ``campaign_dir`` as it was. The returned campaign holds the writer lock until :meth:`close`.
        """
        from screener.campaign.folder import creation_folder, publish_campaign

        campaign_dir = Path(campaign_dir)
        if (campaign_dir / LEDGER_FILENAME).exists():
            raise InvalidInputError(
                f"{campaign_dir} already holds a campaign; resume it with --campaign {campaign_dir}"
            )
        if not structures:
            raise InvalidInputError("no candidate structures to screen")
        if campaign_dir.exists() and (not campaign_dir.is_dir() or any(campaign_dir.iterdir())):
            raise InvalidInputError(f"{campaign_dir} is not a screener campaign (no {LEDGER_FILENAME}) and not empty")
        with creation_folder(campaign_dir) as tmp:
            ledger = Ledger.in_dir(tmp, create=True)
            try:
                cls._create(tmp, ledger, config, structures, factory)
            finally:
                ledger.close()
            publish_campaign(tmp, campaign_dir, LEDGER_FILENAME)
            return cls.open(campaign_dir, factory)  # components for the final folder; the lock is still ours

    @classmethod
    def _create(cls, campaign_dir: Path, ledger: Ledger, config: CampaignConfig, structures: Mapping[str, Any],
                factory: ComponentsFactory) -> None:
        """Fill a new ledger in ``campaign_dir`` (the creation folder); the factory prepares what it needs there."""
        from screener import __version__

        ledger.add_candidates([_candidate_row(sid, s, "candidate") for sid, s in structures.items()])
        ledger.set_meta("budget_unit", config.budget_unit)
        ledger.set_meta("budget_total", config.budget_total)
        config = config.model_copy(update={"screener_version": __version__})
        components = factory(config, campaign_dir, ledger)  # may record defaults it resolved into config
        from screener.campaign.hulls import record_competing_phases

        # before round 1: how many known competing phases each hull holds per chemical system (or refuse to start)
        record_competing_phases(ledger, components.hulls,
                                {sid: s.composition.chemical_system for sid, s in structures.items()},
                                require=config.require_competing_phases)
        if config.unit_cpu_hours is None:
            if config.budget_unit == "core-hours":
                config.unit_cpu_hours = 1.0
            else:  # one PBE single point of the median-size candidate
                by_size = sorted(structures.values(), key=len)
                structure = by_size[(len(by_size) - 1) // 2]  # the median-size candidate (lower median)
                config.unit_cpu_hours = float(components.calculator.estimate_cost_cpu_hours(structure, "pbe"))
        ledger.set_meta("config", config.model_dump(mode="json"))  # last: its presence marks a complete creation
        ledger.log_event("campaign", f"campaign created with {len(structures)} candidates, budget "
                         f"{config.budget_total:g} {config.budget_unit} (1 unit = {config.unit_cpu_hours:.4g} CPU-h)")

    @classmethod
    def open(cls, campaign_dir: str | Path, factory: ComponentsFactory) -> Campaign:
        """Open an existing campaign folder (its config comes from the ledger) and take its writer lock.

        Raises
        ------
        CampaignBusyError
            Another process is running this campaign.
        LedgerDamagedError
            Its ledger fails SQLite's integrity check.
        """
        campaign_dir = Path(campaign_dir)
        ledger = Ledger.in_dir(campaign_dir)
        try:
            raw = ledger.get_meta("config")
            if raw is None:  # only a screener older than the all-or-nothing creation leaves this
                n_jobs = len(ledger.jobs())
                raise InvalidInputError(
                    f"{campaign_dir} holds a campaign whose creation was interrupted (no configuration in its "
                    f"ledger; {n_jobs} calculations in it)" + ("; move it aside and create the campaign again"
                                                              if n_jobs == 0 else "")
                )
            config = CampaignConfig.model_validate(raw)
            return cls(campaign_dir, ledger, config, factory(config, campaign_dir, ledger))
        except BaseException:
            ledger.close()
            raise

    def close(self) -> None:
        """Close the ledger and release the writer lock (the process ending releases it too)."""
        self.ledger.close()

    def _load_candidates(self) -> None:
        from screener._safe_json import structure_from_dict

        for row in self.ledger.candidates(role=None):
            self._structures[row["structure_id"]] = structure_from_dict(
                json.loads(row["structure_json"]), f"candidate {row['structure_id']!r} in the ledger")
            self._roles[row["structure_id"]] = row["role"]

    # ---- the loop --------------------------------------------------------------------------------------------------
    def run(self, *, max_rounds: int | None = None, progress: Progress | None = None,
            on_round: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Run rounds until the budget (or the policy, or ``max_rounds`` / ``config.max_rounds``) says stop.

        The round after which nothing is left to buy (the remaining budget cannot pay the cheapest open calculation,
        or ``config.max_rounds`` is reached) collects its results and updates the hulls but does not fine-tune: no
        later round would use that model. A resume that finds budget again (a raised budget) fine-tunes first.

        Parameters
        ----------
        max_rounds : int, optional
            Run at most this many rounds now (the campaign can be resumed).
        progress : callable, optional
            ``progress(stage, completed, total)``; stage names carry the round number (``"round 2: calculations"``).
        on_round : callable, optional
            Called with :meth:`round_summary` after each finished round.

        Returns
        -------
        dict
            ``{"rounds_run", "finished", "reason"}``.
        """
        self._execute_open_jobs(progress)  # whatever a killed run left behind
        rounds_run, reason = 0, ""
        while True:
            current = self.ledger.current_round()
            if current is not None and current["state"] == "empty":  # (a raised budget reopens it: set_budget_total)
                stored = json_object(current.get("info_json")).get("stop_reason")
                stored = stored if isinstance(stored, str) and stored.startswith("nothing left") else None
                reason = ("nothing left to buy within the budget" if not self._can_buy_more() else
                          stored or "nothing left worth buying: the policy declined every open calculation")
                break
            if current is None or current["state"] == "finished":
                number = 1 if current is None else current["round"] + 1
                if self.config.max_rounds is not None and number > self.config.max_rounds:
                    reason = f"reached the campaign's {self.config.max_rounds} rounds"
                    break
                if max_rounds is not None and rounds_run >= max_rounds:
                    reason = f"ran the {max_rounds} rounds asked for"
                    break
                if current is not None and not self._can_buy_more():
                    # over without ranking again (a prediction pass for nothing); the round row says so
                    self.ledger.start_round(number)
                    self.ledger.set_round_state(number, "empty")
                    self.ledger.log_event("campaign", "campaign finished: nothing more fits the budget",
                                          round_number=number)
                    reason = "nothing left to buy within the budget"
                    break
                self.ledger.start_round(number)
                state = "ranking"
            else:
                number, state = current["round"], current["state"]
            if state == "ranking":
                self._catch_up_fine_tune(number - 1, progress)
                if not self._rank_and_plan(number, progress):
                    if self._can_buy_more():  # budget left, but the policy wants none of what it could buy
                        left = self.ledger.budget()
                        reason = (f"nothing left worth buying: the {self.config.policy} policy declined every open "
                                  f"calculation ({self._declined_why()}) with {left.remaining:.4g} {left.unit} left")
                    else:
                        reason = "nothing left to buy within the budget"
                    self.ledger.set_round_state(number, "empty", info={"stop_reason": reason})
                    self.ledger.log_event("campaign", f"campaign finished: {reason}", round_number=number)
                    break
                state = "planned"
            if state == "planned":
                self._execute_open_jobs(progress, stage=f"round {number}: calculations")
                self.ledger.set_round_state(number, "collected")
                state = "collected"
            if state == "collected":
                last = not self._can_buy_more() or (self.config.max_rounds is not None
                                                    and number >= self.config.max_rounds)
                info = self._learn(number, progress, fine_tune=not last)
                self.ledger.set_round_state(number, "finished", info=info)
                if on_round:
                    on_round(self.round_summary(number))
            rounds_run += 1
        budget = self.ledger.budget()
        finished = reason.startswith("nothing")
        logger.info("campaign stops: %s (spent %.4g of %.4g %s)", reason, budget.spent, budget.total, budget.unit)
        return {"rounds_run": rounds_run, "finished": finished, "reason": reason}

    def _declined_why(self) -> str:
        """Why the last plan bought nothing, from its numbers: the expected-value stop rule, or no expected find."""
        numbers = getattr(self, "_plan_numbers", {})
        rate = float(numbers.get("ev_stop_rate_per_cpu_hour") or 0.0)
        # the rule is named only where it alone emptied the plan: options worth something fell below its rate and
        # none was in line (an empty plan of options in line is the budget's doing: e.g. a screen whose SCAN
        # follow-up the last units cannot pay)
        if rate <= 0 or int(numbers.get("ev_n_below_stop_rate") or 0) == 0 or int(numbers.get("ev_n_in_line") or 0):
            return "none is expected to add a stable find"
        unit = float(self.config.unit_cpu_hours or 1.0)
        per = self.config.budget_unit
        return (f"none reaches its stop rate of {rate * unit:.3g} expected finds per {per}: "
                f"{float(numbers.get('ev_stop_fraction_of_yield', 0.0)):.0%} of the {int(numbers.get('ev_n_found', 0))}"
                f" finds per {float(numbers.get('ev_spent_cpu_hours', 0.0)) / unit:.4g} {per} spent so far")

    def _can_buy_more(self) -> bool:
        """Whether the remaining budget pays for the cheapest calculation still open: SCAN of a candidate without
        one, PBE of a candidate without PBE or SCAN (a SCAN result makes its PBE screening pointless)."""
        remaining = self.ledger.budget().remaining
        taken = {(j.structure_id, j.fidelity) for j in self.ledger.jobs()} | self._unavailable()
        costs = [self._cost(s, f)[0] for s, role in self._roles.items() if role == "candidate"
                 for f in FIDELITIES if (s, f) not in taken and (s, "scan") not in taken]
        return bool(costs) and min(costs) <= remaining + 1e-9

    def round_summary(self, number: int) -> dict[str, Any]:
        """What a round bought and where the campaign stands after it, all from the ledger (one console line).

        Returns
        -------
        dict
            ``round``, ``bought`` (``{fidelity: jobs of this round}``), ``failed`` (``{fidelity: failed jobs}``),
            ``n_stable_found`` (candidates on the latest SCAN hull, as ``screener status`` counts them),
            ``budget_spent``, ``budget_left``, ``budget_total``, ``budget_unit``, ``model_error`` (``{fidelity:
            {"mae_ev_per_atom", "mae_se_ev_per_atom", "n_points"}}`` measured this round, prospective) and
            ``fine_tuned`` (bool).
        """
        from screener.campaign.status import campaign_status

        jobs = self.ledger.jobs(round_number=number)
        status = campaign_status(self.campaign_dir)
        info = next((r["info"] for r in self.ledger.rounds() if r["round"] == number), {})
        error = {f: {"mae_ev_per_atom": info[f"mae_{f}_ev_per_atom"],
                     "mae_se_ev_per_atom": info.get(f"mae_se_{f}_ev_per_atom"),
                     "n_points": info.get(f"n_{f}_measured")}
                 for f in FIDELITIES if info.get(f"mae_{f}_ev_per_atom") is not None}
        return {
            "round": number,
            "bought": {f: sum(1 for j in jobs if j.fidelity == f) for f in FIDELITIES},
            "failed": {f: sum(1 for j in jobs if j.fidelity == f and j.state == "failed") for f in FIDELITIES},
            "n_stable_found": status["n_stable_found"],
            "stable_threshold_ev_per_atom": status["stable_threshold_ev_per_atom"],
            "budget_spent": status["budget_spent"],
            "budget_left": status["budget_left"],
            "budget_total": status["budget_total"],
            "budget_unit": status["budget_unit"],
            "model_error": error,
            "fine_tuned": any(m["round"] == number for m in self.ledger.models()),
        }

    # ---- step 1-3: rank, acquire, decide ---------------------------------------------------------------------------
    def _cost(self, sid: str, fidelity: str) -> tuple[float, float]:
        key = (sid, fidelity)
        if key not in self._cost_cache:
            cpu_h = float(self.components.calculator.estimate_cost_cpu_hours(self._structures[sid], fidelity))
            self._cost_cache[key] = (self.config.to_budget_units(cpu_h), cpu_h)
        return self._cost_cache[key]

    def rank(self, number: int) -> dict[str, dict[str, np.ndarray]]:
        """Predict E_form per fidelity and measure it against the current hulls; record and return the ranking."""
        self._update_hulls()
        ids = [s for s, role in self._roles.items() if role == "candidate"]
        structures = {s: self._structures[s] for s in ids}
        comps = [structures[s].composition for s in ids]
        out: dict[str, dict[str, np.ndarray]] = {}
        rows: list[dict[str, Any]] = []
        calibration = self._spread_calibration(number)
        for fidelity in FIDELITIES:
            mean, std = self.components.model.predict_formation_energy(structures, fidelity)
            # calibrated spread (and, for predictions borrowed from the other fidelity's model, the learned shift);
            # the ledger keeps the model's raw E_form mean/std, the E_hull columns and P(stable) are calibrated
            cal = calibration[fidelity]
            borrowed = getattr(self.components.model, "borrows_model", lambda f: False)(fidelity)
            shift = cal.bias_ev_per_atom if borrowed else 0.0
            e_hull, e_std, hull_e, fallback = predicted_e_hull(
                np.asarray(mean, float) - shift, cal.calibrated_std(std, shifted=borrowed), comps,
                self.components.hulls,
                fidelity, fallback_fidelity="pbe" if fidelity != "pbe" else None, structure_ids=ids,
            )
            p = probability_below(e_hull, e_std, self.config.stable_threshold_ev_per_atom)
            out[fidelity] = {"e_form_mean": np.asarray(mean, float), "e_hull_mean": e_hull, "e_hull_std": e_std,
                             "e_form_std": np.asarray(std, float), "hull_e_form": hull_e, "p_stable": p,
                             "fallback": fallback}
            # a large campaign records the best rows only (and, in _rank_and_plan, every planned one)
            kept = stored_prediction_rows(e_hull, p)
            rows += [prediction_row(ids[i], fidelity, out[fidelity], i)
                     for i in (range(len(ids)) if kept is None else kept)]
        self.ledger.record_predictions(number, rows)
        if len(rows) < len(FIDELITIES) * len(ids):
            self.ledger.set_meta(PREDICTION_STORAGE_META, prediction_storage_rule())
        out["_ids"] = {"ids": np.asarray(ids, dtype=object)}
        out["_calibration"] = {f"{f}_{k}": v for f in FIDELITIES for k, v in calibration[f].numbers().items()}
        return out

    def _uses_model(self) -> bool:
        """Whether the policy's decisions depend on the model (the planner's ``uses_model``; True if it cannot say).

        A policy that does not (``random``) gets no ranking and no fine-tune: the same decisions at a fraction of
        the cost; its rounds record no predictions, so its learning curve has no points.
        """
        return bool(getattr(self.components.planner, "uses_model", True))

    def _no_ranking(self) -> dict[str, Any]:
        """What :meth:`rank` returns, for a policy that does not use the model: no prediction (NaN), none recorded."""
        self._update_hulls()
        ids = [s for s, role in self._roles.items() if role == "candidate"]
        nan = np.full(len(ids), np.nan)
        out: dict[str, Any] = {f: {"e_form_mean": nan, "e_hull_mean": nan, "e_hull_std": nan} for f in FIDELITIES}
        out["_ids"] = {"ids": np.asarray(ids, dtype=object)}
        out["_calibration"] = {}
        return out

    def _spread_calibration(self, number: int) -> dict[str, Any]:
        """Spread calibration per fidelity for round ``number``: refitted on the prospective errors of earlier rounds,
        the scale shrunk toward the initial model's recorded scale (``calibration.json``; 1 where none), the power-law
        exponent toward the exponent recorded there, else the campaign's ``spread_exponent_prior``."""
        from screener.campaign.ranking import spread_calibration

        scales = getattr(self.components.model, "spread_scales", None)
        prior = scales() if callable(scales) else {}
        targets = self._targets() if number > 1 else {}
        exponent = self.config.spread_exponent_prior
        # the initial model's own held-out fit (calibration.json, as `screener train` writes it) is a better prior
        # of its exponent than the campaign's generic one; with one plain scale (null) there is no exponent at all
        recorded = getattr(self.components.model, "spread_exponents", None)
        if exponent is not None and callable(recorded):
            exponent = recorded().get("pbe", exponent)
        out = {"pbe": spread_calibration(self.ledger, targets, "pbe", number, prior_scale=float(prior.get("pbe", 1.0)),
                                         exponent_prior=exponent)}
        # SCAN predictions come from the PBE model or its transfer, and SCAN errors are few: until they say
        # otherwise, the campaign's PBE scale (shrinking toward the model card's 1.0-ish scale undercovered)
        borrowed = getattr(self.components.model, "borrows_model", lambda f: False)("scan")
        # (rank() shifts borrowed predictions by the bias); the exponent's prior is the PBE fit's, as for the scale.
        # An initial SCAN ensemble that records its own held-out SCAN fit is its own prior instead.
        own = getattr(self.components.model, "own_scan_calibration", lambda: None)()
        scan_prior = own if own is not None else out["pbe"]
        out["scan"] = spread_calibration(self.ledger, targets, "scan", number, prior_scale=scan_prior.scale,
                                         debias=borrowed,
                                         exponent_prior=None if exponent is None else scan_prior.exponent)
        return out

    def _rank_and_plan(self, number: int, progress: Progress | None) -> bool:
        if progress:
            progress(f"round {number}: ranking", 0, 1)
        uses_model = self._uses_model()
        ranking = self.rank(number) if uses_model else self._no_ranking()
        ids = list(ranking.pop("_ids")["ids"])
        calibration_numbers = ranking.pop("_calibration", {})
        jobs = self.ledger.jobs()
        unavailable = self._unavailable()  # calculations the back-end cannot set up (e.g. absent from a replay set)
        done = {(j.structure_id, j.fidelity) for j in jobs} | unavailable
        n_done = {f: sum(1 for j in jobs if j.fidelity == f and j.state == "done") for f in FIDELITIES}
        pretrained = self._pretraining_set_sizes()
        behind_scan, pbe_reaches_scan = pbe_data_behind_scan_model(
            self.ledger.models(), initial_scan_model=bool(self.config.scan_model))
        remaining = self.ledger.budget().remaining
        competing = self._competing_items(ids, ranking, done)
        learning_curve = self.ledger.learning_curve()
        batch = self.config.batch_size
        # One plan per structure per round: what a plan repeats (or a structure already computed) is dropped, and
        # the planner is asked again for the freed batch slots with what is planned so far counted as done.
        items: list[PlanItem] = []
        numbers: dict[str, Any] = {}
        planned: set[str] = set()
        dropped: list[str] = []
        flows: dict[tuple[str, str], Any] = {}
        gaps = self._pbe_band_gaps()
        # once per round, not per retry (100,000 pymatgen look-ups are seconds)
        kept = self._chemsys
        chemsys = [kept.get(s) or kept.setdefault(s, self._structures[s].composition.chemical_system) for s in ids]
        costs = {f: np.array([self._cost(s, f)[0] for s in ids]) for f in FIDELITIES}
        for attempt in range(max(3, batch + 1)):  # each retry follows dropped items: bounded by the batch
            taken = {(s, f) for s in planned for f in FIDELITIES}
            left = remaining - sum(it.estimated_cost for it in items)
            request = PlanRequest(
                round_number=number,
                structure_ids=ids,
                chemsys=chemsys,
                e_hull_mean={f: ranking[f]["e_hull_mean"] for f in FIDELITIES},
                e_hull_std={f: ranking[f]["e_hull_std"] for f in FIDELITIES},
                cost=costs,
                done=done | taken,
                n_scan=n_done["scan"],
                n_pbe=n_done["pbe"],
                learning_curve=learning_curve,
                remaining_budget=max(left, 0.0),
                batch_size=batch - len(items),
                seed=self.config.seed + number + 1000 * attempt,
                competing=[c for c in competing if c.structure_id not in planned],
                n_pbe_pretraining=pretrained.get("pbe", 0),
                n_scan_pretraining=pretrained.get("scan", 0),
                n_pbe_behind_scan_model=behind_scan,
                pbe_reaches_scan_model=pbe_reaches_scan,
            )
            plan: Plan = self.components.planner.plan(request)
            if not uses_model:  # its reasons and scores would quote the placeholder predictions
                plan = Plan([_without_prediction(item) for item in plan.items], plan.numbers)
            if attempt == 0:
                numbers = dict(plan.numbers)
            n_dropped = len(dropped)
            for item in plan.items:
                sid = item.structure_id
                if sid not in self._structures or (sid, item.fidelity) in done:
                    dropped.append(f"{sid} ({item.fidelity}): already computed or unknown")
                elif sid in planned:
                    dropped.append(f"{sid} ({item.fidelity}): already planned in this round")
                elif len(items) < batch:
                    try:  # set up now, so a calculation the back-end lacks frees its slot for the next one
                        flows[(sid, item.fidelity)] = self.components.calculator.make_flow(
                            self._structures[sid], item.fidelity, sid, **self._flow_kwargs(sid, item.fidelity, gaps))
                    except ScreenerError as exc:  # e.g. a replay data set without this calculation
                        unavailable.add((sid, item.fidelity))
                        done.add((sid, item.fidelity))
                        dropped.append(f"{sid} ({item.fidelity}): cannot be set up: {exc}")
                        self.ledger.log_event("job", f"{sid} ({item.fidelity}) cannot be set up: {exc}",
                                              round_number=number)
                        continue
                    items.append(item)
                    planned.add(sid)
            if len(dropped) == n_dropped or len(items) >= batch:
                break  # nothing freed (the planner has nothing more), or the batch is full
        if dropped:
            self.ledger.log_event("policy", f"round {number}: dropped {len(dropped)} repeated or unavailable plan "
                                  "item(s): " + "; ".join(dropped[:10]), round_number=number)
        if unavailable != self._unavailable():  # kept for later rounds and for _can_buy_more
            self.ledger.set_meta(UNAVAILABLE_META, sorted([s, f] for s, f in unavailable))
        job_rows, decisions = [], []
        for item in items:
            cost, cpu_h = self._cost(item.structure_id, item.fidelity)  # the ledger charges OUR estimate
            decisions.append({"structure_id": item.structure_id, "fidelity": item.fidelity, "reason": item.reason,
                              "estimated_cost": cost, "numbers": item.numbers})
            flow = flows[(item.structure_id, item.fidelity)]
            job_rows.append({
                "uuid": flow_uuid(flow), "structure_id": item.structure_id, "fidelity": item.fidelity,
                "role": self._roles.get(item.structure_id, "candidate"), "estimated_cost": cost,
                "estimated_cpu_hours": cpu_h, "flow_json": dump_flow(flow),
            })
        new_candidates = [
            _candidate_row(it.structure_id, self._structures[it.structure_id], "competing")
            for it in items if self._roles.get(it.structure_id) == "competing"
        ]
        # the decisions recorded are exactly the plan's distinct items; ``accepted`` says which became jobs
        numbers.update({"n_planned": len(items), "n_dropped_repeats": len(dropped),
                        # N_p = pre-training + the campaign PBE results behind the SCAN predictions' model
                        "n_pbe_pretraining": pretrained.get("pbe", 0), "n_pbe_campaign": behind_scan,
                        "n_pbe_computed": n_done["pbe"], "pbe_reaches_scan_model": pbe_reaches_scan,
                        "n_scan_campaign": n_done["scan"], "calibration": calibration_numbers})
        # predictions of the planned candidates a large campaign did not record with the best rows (the report
        # and the calibration read the prediction made before each purchase)
        if uses_model:  # (a policy without the model records no prediction)
            index = {s: i for i, s in enumerate(ids)}
            recorded = {(p["structure_id"], p["fidelity"]) for p in self.ledger.predictions(
                number, structure_ids=[it.structure_id for it in items])}
            extra = [prediction_row(it.structure_id, f, ranking[f], index[it.structure_id]) for it in items
                     if it.structure_id in index for f in FIDELITIES if (it.structure_id, f) not in recorded]
            if extra:
                self.ledger.record_predictions(number, extra, add=True)
        self._plan_numbers = numbers  # why an empty plan bought nothing (the stop reason)
        accepted = self.ledger.commit_plan(number, decisions=decisions, numbers=numbers, jobs=job_rows,
                                           new_candidates=new_candidates)
        if progress:
            progress(f"round {number}: ranking", 1, 1)
        return bool(accepted)

    def _unavailable(self) -> set[tuple[str, str]]:
        """(structure, fidelity) pairs the back-end could not set up in earlier rounds (never planned again)."""
        return {(str(s), str(f)) for s, f in (self.ledger.get_meta(UNAVAILABLE_META) or [])}

    def _pretraining_set_sizes(self) -> dict[str, int]:
        """Structures per fidelity the model learned from before the campaign (0 when the model cannot say).

        Read from the model once and kept in the ledger (``meta.pretraining_set_sizes``), so a moved campaign folder
        or a later model version cannot change the N_p the learning curve was recorded with.
        """
        stored = self.ledger.get_meta("pretraining_set_sizes")
        if stored is None:
            sizes = getattr(self.components.model, "pretraining_set_sizes", None)
            stored = {f: int(n) for f, n in (sizes() if callable(sizes) else {}).items()}
            self.ledger.set_meta("pretraining_set_sizes", stored)
        return {f: int(stored.get(f, 0)) for f in FIDELITIES}

    def _competing_items(self, ids: list[str], ranking: dict[str, dict[str, np.ndarray]],
                         done: set[tuple[str, str]]) -> list[PlanItem]:
        """Phases each fidelity's hull lacks in the chemical systems of the most promising candidates."""
        order = np.argsort(ranking["scan"]["e_hull_mean"], kind="stable")[: max(1, self.config.batch_size)]
        if not self._uses_model():  # no "most promising" without a model: any candidate may be picked
            order = np.arange(len(ids))
        systems = list(dict.fromkeys(self._structures[ids[i]].composition.chemical_system for i in order))
        items: list[PlanItem] = []
        for fidelity in FIDELITIES:
            for chemsys in systems:
                for sid, structure in self.components.hulls.missing_competing_phases(fidelity, chemsys):
                    if (sid, fidelity) in done:
                        continue
                    if sid not in self._structures:
                        self._structures[sid], self._roles[sid] = structure, "competing"
                    items.append(PlanItem(sid, fidelity, f"competing phase of the {fidelity} hull in {chemsys}",
                                          self._cost(sid, fidelity)[0],
                                          {"chemsys": structure.composition.chemical_system}))
        return list({(i.structure_id, i.fidelity): i for i in items}.values())

    def _flow_kwargs(self, sid: str, fidelity: str, gaps: Mapping[str, float] | None = None) -> dict[str, Any]:
        """Extra make_flow keywords: a SCAN job gets the PBE band gap of its structure (MP's r2SCAN k-point rule)."""
        if fidelity != "scan":
            return {}
        if gaps is None:
            gaps = self._pbe_band_gaps()
        return {"pbe_band_gap_ev": gaps[sid]} if sid in gaps else {}

    def _pbe_band_gaps(self, before_round: int | None = None) -> dict[str, float]:
        out = {}
        for job in self.ledger.jobs(states=["done"]):
            if before_round is not None and job.round >= before_round:
                continue
            gap = (job.result or {}).get("band_gap_ev") if job.fidelity == "pbe" else None
            if gap is not None:
                out[job.structure_id] = float(gap)
        return out

    # ---- step 4: compute -------------------------------------------------------------------------------------------
    def _execute_open_jobs(self, progress: Progress | None, stage: str = "calculations") -> None:
        """Submit the open jobs not yet with the executor, then collect results until none is open.

        Executors with ``states(uuids)`` (FireWorks, jobflow-remote) report each job as the engine sees it: pending
        and running jobs are polled again every ``config.poll_interval_s``, never charged as failures; a submitted
        job the engine no longer knows (deleted), or reports finished without a result, is failed and charged its
        reserved estimate (the rule of docs/cluster.md), never re-bought. Without waiting (``self.wait`` False,
        ``screener run --no-wait``) this raises :class:`~screener.execution.base.JobsPending` once the jobs are
        submitted; a later run collects them.
        """
        from screener.execution.base import JobsPending, retry_engine_failures

        executor = self.components.executor
        open_jobs = self.ledger.jobs(states=OPEN_STATES)
        if not open_jobs:
            return
        total = len(open_jobs)
        engine = getattr(executor, "states", None)
        wait = getattr(self, "wait", True)
        # queue failures (submission limit, walltime) run again within the executor's max_retries, as ledger events
        retry_engine_failures(executor, self.ledger, [j.uuid for j in open_jobs if j.state == "submitted"])
        known = engine([j.uuid for j in open_jobs]) if engine else {}  # the engine's state before its results
        submitted = [j for j in open_jobs if j.state == "submitted"]
        if engine and submitted and all(known.get(j.uuid) == "unknown" for j in submitted) and not any(
                state != "unknown" for state in engine([j.uuid for j in self.ledger.jobs(states=["done", "failed"])
                                                        ][-20:]).values()):
            # the engine knows none of the campaign's jobs: another LaunchPad / project, not jobs lost one by one
            raise InvalidInputError(
                f"the {self.config.executor} executor knows none of the campaign's {len(submitted)} submitted "
                "calculation(s): is it the LaunchPad (or jobflow-remote project) they were submitted to? Nothing "
                "was changed; see docs/cluster.md for jobs deleted on purpose")
        pending = self._record(open_jobs, executor.collect([j.uuid for j in open_jobs]))
        resubmit = []
        for job in pending:
            state = known.get(job.uuid)
            if state in ("pending", "running"):
                continue  # the engine has it: polled, never resubmitted
            if engine and (state in ("done", "failed") or (state == "unknown" and job.state == "submitted")):
                self._charge_lost(job, state)
                continue
            resubmit.append(job)
        for job in resubmit:  # not with the executor yet: rebuild the flow from the ledger's data, same uuid, submit
            executor.submit(self._rebuild_flow(job))
            self.ledger.mark_submitted([job.uuid])
        pending = [j for j in pending if j in resubmit or known.get(j.uuid) in ("pending", "running")]
        blocking = getattr(executor, "runs_locally", self.config.executor == "local")
        while pending:
            if progress:
                progress(stage, total - len(pending), total)
            if not wait:
                states = [known.get(j.uuid) if known.get(j.uuid) in ("pending", "running") else "pending"
                          for j in pending]
                raise JobsPending({s: states.count(s) for s in ("pending", "running")})
            executor.run()
            retry_engine_failures(executor, self.ledger, [j.uuid for j in pending])
            known = engine([j.uuid for j in pending]) if engine else {}
            still = self._record(pending, executor.collect([j.uuid for j in pending]))
            if engine:
                for job in [j for j in still if known.get(j.uuid) not in ("pending", "running")]:
                    self._charge_lost(job, known.get(job.uuid))
                    still.remove(job)
            elif still and blocking and len(still) == len(pending):
                for job in still:  # a local run that leaves no output failed before writing one
                    self.ledger.finish_job(job.uuid, success=False, result_json=None, actual_cost=None,
                                           actual_cpu_hours=None, failure_reason="the job produced no result")
                still = []
            if still and (engine or not blocking):
                time.sleep(self.config.poll_interval_s)
            pending = still
        if progress:
            progress(stage, total, total)

    def _charge_lost(self, job: Any, state: str | None) -> None:
        """A job the engine lost: failed, charged its reserved estimate (``actual_cost`` None), not bought again."""
        name = self.config.executor
        if state == "unknown":
            why = f"lost: {name} no longer has this submitted job (deleted from it?)"
        else:
            why = f"{name} reports it {state} but no result reached the job store"
        self.ledger.finish_job(job.uuid, success=False, result_json=None, actual_cost=None, actual_cpu_hours=None,
                               failure_reason=f"{why}; charged its reserved estimate, not bought again")

    def _rebuild_flow(self, job: Any) -> Any:
        """The flow of an open job, made again by the calculator from what the ledger records as data.

        Structure (candidates table), fidelity, back-end and its options (the campaign config), the PBE band gaps known
        when it was planned, and the recorded uuid, so the result is found in the job store under that uuid; the
        stored flow JSON is never decoded.
        """
        structure = self._structures.get(job.structure_id)
        if structure is None:
            raise InvalidInputError(f"job {job.uuid}: {job.structure_id!r} is not a structure of this campaign")
        gaps = self._pbe_band_gaps(before_round=job.round)  # what planning saw: done jobs of earlier rounds
        try:
            flow = self.components.calculator.make_flow(
                structure, job.fidelity, job.structure_id, uuid=job.uuid,
                **self._flow_kwargs(job.structure_id, job.fidelity, gaps),
            )
        except ScreenerError as exc:
            raise InvalidInputError(f"job {job.uuid} ({job.structure_id}, {job.fidelity}) cannot be set up again: "
                                    f"{exc}") from exc
        if flow_uuid(flow) != job.uuid:
            raise InvalidInputError(f"job {job.uuid}: the {self.config.backend} back-end rebuilt it with uuid "
                                    f"{flow_uuid(flow)} (its make_flow must honour uuid=)")
        return flow

    def _record(self, jobs: list[Any], results: Mapping[str, Any]) -> list[Any]:
        """Write finished results into the ledger; return the jobs still without a result."""
        pending = []
        for job in jobs:
            result = results.get(job.uuid)
            if result is None:
                pending.append(job)
                continue
            data = _result_dict(result)
            cpu_h = data.get("cost_cpu_hours")
            self.ledger.finish_job(
                job.uuid,
                success=bool(data.get("success", True)),
                result_json=json.dumps(data, default=str),
                actual_cost=self.config.to_budget_units(cpu_h) if cpu_h is not None else None,
                actual_cpu_hours=cpu_h,
                failure_reason=data.get("failure_reason"),
            )
        return pending

    # ---- step 4-5: learn -------------------------------------------------------------------------------------------
    def _update_hulls(self) -> None:
        for job in self.ledger.jobs(states=["done"]):
            if job.uuid in self._in_hull:
                continue
            entry = (job.result or {}).get("entry")
            if entry:
                self.components.hulls.add_result(job.fidelity, entry)
            self._in_hull.add(job.uuid)

    def _targets(self) -> dict[str, dict[str, float]]:
        """Formation energies (eV/atom) of every finished calculation, per fidelity, on the current hulls."""
        targets: dict[str, dict[str, float]] = {f: {} for f in FIDELITIES}
        for job in self.ledger.jobs(states=["done"]):
            entry = (job.result or {}).get("entry")
            if entry:
                value = self.components.hulls.e_form_ev_per_atom(job.fidelity, entry)
                if np.isfinite(value):
                    targets[job.fidelity][job.structure_id] = float(value)
        return targets

    def _learn(self, number: int, progress: Progress | None, *, fine_tune: bool = True) -> dict[str, Any]:
        """Update hulls, measure the model's prospective error, fine-tune (unless ``fine_tune`` is False: nothing is
        left to buy, so no later round would use the new model), record all of it."""
        hulls = self.components.hulls
        self._update_hulls()
        info: dict[str, Any] = {}
        for fidelity in FIDELITIES:
            snap = hulls.snapshot(fidelity)
            # E_hull of every computed structure and the threshold: what status and the report call stable
            self.ledger.record_hull(number, fidelity, n_entries=snap["n_entries"], n_stable=snap["n_stable"],
                                    hull_json=json.dumps({"stable_ids": snap.get("stable_ids", []),
                                                          "e_hull_ev_per_atom": snap.get("e_hull_ev_per_atom"),
                                                          "stable_threshold_ev_per_atom":
                                                              snap.get("stable_threshold_ev_per_atom"),
                                                          "hull": snap.get("json")}))
        done = self.ledger.jobs(states=["done"])
        targets = self._targets()
        # prospective error: this round's predictions against this round's new results (before training on them)
        preds = {(p["structure_id"], p["fidelity"]): p["e_form_mean_ev_per_atom"]
                 for p in self.ledger.predictions(number)}
        pretrained = self._pretraining_set_sizes()
        before = {f: sum(1 for j in done if j.fidelity == f and j.round < number) for f in FIDELITIES}
        # N_p of each model that made this round's predictions: the PBE model's own campaign PBE data (those of its
        # latest fine-tune), a SCAN model's those of its transfer
        models = self.ledger.models()
        n_pbe_behind = {"pbe": pbe_data_behind_scan_model([m for m in models if m.get("fidelity") == "pbe"])[0],
                        "scan": pbe_data_behind_scan_model(
                            models, initial_scan_model=bool(self.config.scan_model))[0]}
        measured = {(p["round"], p["fidelity"]) for p in self.ledger.learning_curve()}  # a resumed _learn: once
        for fidelity in FIDELITIES:
            errors = [abs(preds[(j.structure_id, fidelity)] - targets[fidelity][j.structure_id])
                      for j in done if j.round == number and j.fidelity == fidelity
                      and (j.structure_id, fidelity) in preds and j.structure_id in targets[fidelity]]
            if errors:
                mae, se = mae_with_standard_error(errors)
                # this round's prospective errors against the raw and the calibrated sigma it was ranked with
                from screener.campaign.ranking import prospective_errors
                from screener.policies.calibration import coverage

                err, raw_std, used_std = prospective_errors(self.ledger, targets, fidelity, [number])
                # the calibrated sigma belongs to the mean the round ranked with (a borrowed SCAN mean is shifted)
                err_ranked, _, _ = prospective_errors(self.ledger, targets, fidelity, [number], as_ranked=True)
                for tag, e, std in (("raw", err, raw_std), ("calibrated", err_ranked, used_std)):
                    info[f"within_1_sigma_{tag}_{fidelity}"], info[f"within_2_sigma_{tag}_{fidelity}"] = \
                        coverage(e, std)
                info[f"mae_{fidelity}_ev_per_atom"] = mae
                info[f"mae_se_{fidelity}_ev_per_atom"] = se
                info[f"n_{fidelity}_measured"] = len(errors)
                if (number, fidelity) in measured:
                    continue
                self.ledger.add_learning_curve_point(
                    round_number=number, fidelity=fidelity, n_scan=pretrained.get("scan", 0) + before["scan"],
                    n_pbe=pretrained.get("pbe", 0) + n_pbe_behind[fidelity], mae_ev_per_atom=mae, source="prospective",
                    n_points=len(errors), mae_se_ev_per_atom=se, n_pbe_pretraining=pretrained.get("pbe", 0))
        if self.config.fine_tune_epochs > 0 and any(targets.values()) and not self._uses_model():
            info["fine_tune"] = "skipped: the policy does not use the model"
            self.ledger.log_event("model", f"round {number}: no ranking and no fine-tune, the {self.config.policy} "
                                  "policy does not use the model", round_number=number)
        elif self.config.fine_tune_epochs > 0 and any(targets.values()):
            if fine_tune:
                self._fine_tune(number, targets, progress)
            else:
                info["fine_tune"] = "deferred"
                self.ledger.log_event("model", f"round {number}: no fine-tune, nothing is left to buy (a resume "
                                      "with budget left fine-tunes first)", round_number=number)
        return info

    def _fine_tune(self, number: int, targets: dict[str, dict[str, float]], progress: Progress | None) -> None:
        if number in {m["round"] for m in self.ledger.models()}:
            return  # a resumed round: its model is already saved
        if progress:
            progress(f"round {number}: fine-tuning", 0, 1)
        versions = self.components.model.fine_tune(
            targets, self._structures, out_dir=str(self.campaign_dir / "models" / f"round_{number:03d}"),
            round_number=number, seed=self.config.seed + number,
        )
        if progress:
            progress(f"round {number}: fine-tuning", 1, 1)
        for v in versions:
            self.ledger.record_model(version=v.version, round_number=number, fidelity=v.fidelity, path=v.path,
                                     parent=v.parent, n_train=v.n_train, metrics=v.metrics)

    def _catch_up_fine_tune(self, number: int, progress: Progress | None) -> None:
        """Fine-tune for round ``number`` if it deferred that because nothing was left to buy then (a resume with
        a raised budget: the next round should rank with a model that learned from everything)."""
        info = next((r["info"] for r in self.ledger.rounds() if r["round"] == number), {})
        if info.get("fine_tune") != "deferred":
            return
        self._update_hulls()
        self._fine_tune(number, self._targets(), progress)
        self.ledger.set_round_state(number, "finished", info={**info, "fine_tune": "done on resume"})


def pbe_data_behind_scan_model(models: list[dict[str, Any]], *, initial_scan_model: bool = False
                               ) -> tuple[int, bool]:
    """Campaign PBE results behind the model that makes the SCAN predictions, from the ledger's model versions.

    Before any SCAN model the PBE model predicts SCAN too: its campaign PBE data (``n_train`` of the latest PBE
    version, 0 before the first). A SCAN model was transferred from a PBE model and since continues from its own
    weights (:meth:`EnsembleModel.fine_tune`): its ``parent`` chain leads to the PBE version it was transferred
    from, whose ``n_train`` counts (0 when it came from the initial model); a later transfer updates it. A campaign
    started from a SCAN ensemble (``initial_scan_model``, the config's ``scan_model``) has a SCAN model from the
    start, transferred before the campaign: no campaign PBE result is behind it or ever reaches it.

    Returns
    -------
    n_pbe_campaign : int
        Add the pre-training set for the scaling law's N_p.
    pbe_reaches_scan_model : bool
        False once a SCAN model exists: later PBE results never reach it.
    """
    if initial_scan_model:
        return 0, False
    by_path = {str(m.get("path")): m for m in models}
    scan = [m for m in models if m.get("fidelity") == "scan"]
    if not scan:
        pbe = [m for m in models if m.get("fidelity") == "pbe"]
        return (int(pbe[-1].get("n_train") or 0) if pbe else 0), True
    current, seen = scan[-1], set()
    while current.get("fidelity") == "scan" and str(current.get("path")) not in seen:
        seen.add(str(current.get("path")))
        parent = by_path.get(str(current.get("parent")))
        if parent is None:  # transferred from a model the campaign did not train (the initial PBE model)
            return 0, False
        current = parent
    return (int(current.get("n_train") or 0) if current.get("fidelity") == "pbe" else 0), False


def mae_with_standard_error(errors: Any) -> tuple[float, float]:
    """Mean absolute error and its standard error ``std(|e|, ddof=1) / sqrt(n)`` (eV/atom).

    One error has no spread to measure: its standard error is the error itself (100 %, a weak point in the fit).
    The standard error is floored at 1 meV/atom so identical errors do not get infinite weight.
    """
    abs_err = np.abs(np.asarray(errors, dtype=float))
    mae = float(abs_err.mean())
    if abs_err.size < 2:
        return mae, max(mae, 1e-3)
    return mae, max(float(abs_err.std(ddof=1) / np.sqrt(abs_err.size)), 1e-3)


def _without_prediction(item: PlanItem) -> PlanItem:
    """A plan item of a policy that does not use the model, without the placeholder P(stable) and score."""
    reason = item.reason.split(":")[0] if item.numbers.get("kind", "candidate") == "candidate" else item.reason
    numbers = {k: v for k, v in item.numbers.items() if k != "score"}
    return PlanItem(item.structure_id, item.fidelity, f"{reason} (no ranking: the policy does not use the model)",
                    item.estimated_cost, numbers)


def _candidate_row(sid: str, structure: Any, role: str) -> dict[str, Any]:
    comp = structure.composition
    return {"structure_id": sid, "formula": comp.reduced_formula, "chemsys": comp.chemical_system,
            "n_sites": len(structure), "role": role, "structure_json": json.dumps(structure.as_dict())}
