"""Everything the campaign report shows, read from the campaign ledger (read-only) into plain dataclasses.

The ledger (:class:`screener.campaign.ledger.Ledger`) is only read, through its public read API on a read-only
connection (``read_only=True``: no lock, nothing written, so a report can be made while ``screener run`` works on
the folder, or from a read-only archive).

One footing for every comparison: computed and predicted energies above the hull are both measured against the
*final* hull snapshot of their fidelity (the last one the campaign recorded; never a blend of the two functionals),
and a prediction is always the one of the round in which the calculation was bought (the ledger's ``predictions``
rows of that round, made before the purchase). The headline figures (:class:`Headline`) are sums and ratios of
ledger rows; ``tests/report/test_headline.py`` rebuilds each of them with plain SQL.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from screener.campaign.ledger import BudgetSummary, Ledger, json_object
from screener.errors import InvalidInputError

__all__ = [
    "FIDELITIES",
    "JobInfo",
    "CandidateInfo",
    "CompetingPhases",
    "RoundInfo",
    "RoundMetrics",
    "Headline",
    "ParityPoint",
    "Reliability",
    "RELIABILITY_K",
    "reliability",
    "ReportData",
    "load_report_data",
    "job_timestamps",
    "slugify",
    "backend_labels",
    "DEFAULT_CANDIDATE_PAGES",
    "report_order",
    "choose_pages",
]

logger = logging.getLogger(__name__)

FIDELITIES = ("pbe", "scan")
# ledger meta key of the competing-phase counts per chemical system, recorded before round 1
COMPETING_PHASES_META = "competing_phases"


@dataclass
class JobInfo:
    """One calculation of the campaign as the report shows it (costs in budget units)."""

    uuid: str
    round: int
    structure_id: str
    fidelity: str
    role: str
    state: str
    estimated_cost: float
    actual_cost: float | None
    estimated_cpu_hours: float | None
    actual_cpu_hours: float | None
    failure_reason: str | None
    backend: str | None = None
    label: str | None = None
    run_type: str | None = None
    wall_time_s: float | None = None
    energy_per_atom_ev: float | None = None
    created_at: float | None = None
    finished_at: float | None = None
    final_structure: dict[str, Any] | None = field(default=None, repr=False)
    entry: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def charge(self) -> float:
        """What the budget was charged (finished jobs): the actual cost when known, else the estimate."""
        return float(self.actual_cost if self.actual_cost is not None else self.estimated_cost)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed")

    @property
    def cpu_hours(self) -> float:
        """CPU-hours of a finished job: the back-end's figure when it reported one, else the estimate (0 if none)."""
        value = self.actual_cpu_hours if self.actual_cpu_hours is not None else self.estimated_cpu_hours
        return float(value or 0.0)


@dataclass
class CompetingPhases:
    """Phases besides the elements and the candidate itself that one hull holds in a candidate's chemical system
    (its subsystems included).

    ``known`` are phases the hull started with (known phases of the references / competing-phase set), ``computed``
    phases that entered it during the campaign (other candidates, competing phases bought); ``source`` says where
    the numbers come from.
    """

    known: int
    computed: int
    source: str

    @property
    def elements_only(self) -> bool:
        """True when the hull holds nothing but the elements (and the candidate) in this system."""
        return self.known + self.computed == 0


@dataclass
class CandidateInfo:
    """A candidate the campaign selected (at least one calculation bought), with predictions and results.

    ``predicted`` holds the latest prediction row of each fidelity, ``predicted_at_selection`` the prediction of the
    round in which that fidelity's calculation was planned (made before it was bought; what the policy saw).
    ``predicted_e_hull_final_ev_per_atom`` is that prediction's formation energy measured against the final hull of
    the fidelity, the same hull as ``computed_e_hull_ev_per_atom``, so the two differ exactly by the formation-energy
    error. Energies are in eV/atom.
    """

    structure_id: str
    slug: str
    formula: str
    chemsys: str
    n_sites: int
    structure: Any
    jobs: list[JobInfo] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    predicted: dict[str, dict[str, Any]] = field(default_factory=dict)
    predicted_at_selection: dict[str, dict[str, Any]] = field(default_factory=dict)
    computed_e_hull_ev_per_atom: dict[str, float | None] = field(default_factory=dict)
    computed_e_form_ev_per_atom: dict[str, float | None] = field(default_factory=dict)
    predicted_e_hull_final_ev_per_atom: dict[str, float | None] = field(default_factory=dict)
    stable: dict[str, bool] = field(default_factory=dict)
    competing: dict[str, CompetingPhases | None] = field(default_factory=dict)
    in_final_hull: dict[str, bool] = field(default_factory=dict)
    #: ids of the known phases this candidate IS (a rediscovery): its E_hull is measured without them
    twin_of: list[str] = field(default_factory=list)

    def status(self, fidelity: str) -> str:
        """``stable``, ``above hull``, ``not in a hull yet`` (a result newer than the last snapshot), ``no hull``,
        ``not computed``, ``failed`` or ``pending`` at ``fidelity``."""
        jobs = [j for j in self.jobs if j.fidelity == fidelity]
        if not jobs:
            return "not computed"
        if any(j.state == "done" for j in jobs):
            if self.stable.get(fidelity):
                return "stable"
            if self.computed_e_hull_ev_per_atom.get(fidelity) is None:
                return "no hull"
            return "above hull" if self.in_final_hull.get(fidelity, True) else "not in a hull yet"
        if any(j.state == "failed" for j in jobs):
            return "failed"
        return "pending"

    def as_ranked(self, fidelity: str) -> tuple[float | None, float | None]:
        """The formation energy (eV/atom) and sigma the policy ranked this candidate with when it bought
        ``fidelity``: the ledger's ``hull_e_form + e_hull_mean`` (the ensemble mean, shifted by the learned PBE->SCAN
        bias while SCAN predictions are borrowed from the PBE model) and ``e_hull_std`` (the ensemble std times the
        calibrated spread scale). The raw ensemble mean/std where a ledger lacks those columns."""
        row = self.predicted_at_selection.get(fidelity) or {}
        raw = finite_float(row.get("e_form_mean_ev_per_atom"))
        raw_std = finite_float(row.get("e_form_std_ev_per_atom"))
        hull_e = finite_float(row.get("hull_e_form_ev_per_atom"))
        e_hull = finite_float(row.get("e_hull_mean_ev_per_atom"))
        used_std = finite_float(row.get("e_hull_std_ev_per_atom"))
        mean = hull_e + e_hull if hull_e is not None and e_hull is not None else raw
        return mean, used_std if used_std is not None else raw_std

    def predicted_e_hull_as_ranked(self, fidelity: str) -> float | None:
        """:attr:`predicted_e_hull_final_ev_per_atom` of the mean the policy ranked with (see :meth:`as_ranked`):
        on the final hull, like the computed E_hull."""
        final = self.predicted_e_hull_final_ev_per_atom.get(fidelity)
        raw = finite_float((self.predicted_at_selection.get(fidelity) or {}).get("e_form_mean_ev_per_atom"))
        ranked, _ = self.as_ranked(fidelity)
        if final is None or raw is None or ranked is None:
            return None
        return final - (raw - ranked)

    def best_structure(self) -> tuple[Any, str]:
        """The structure to show: the final structure of the SCAN result, else of the PBE result, else the input."""
        from screener._safe_json import structure_from_dict

        for fidelity in ("scan", "pbe"):
            for job in self.jobs:
                if job.fidelity == fidelity and job.state == "done" and job.final_structure:
                    return (structure_from_dict(job.final_structure, f"final structure of job {job.uuid}"),
                            f"final structure of the {fidelity.upper()} job")
        return self.structure, "input structure (no finished calculation)"


@dataclass
class RoundInfo:
    """One round: its state, jobs, cost, the policy's numbers and the hull after it."""

    round: int
    state: str
    started_at: float | None
    finished_at: float | None
    jobs: dict[str, int]
    cost: float
    info: dict[str, Any]
    policy_numbers: dict[str, Any]
    decisions: list[dict[str, Any]]
    stable_ids: dict[str, list[str]]


@dataclass
class RoundMetrics:
    """What one round bought and found. Costs are of the round's finished jobs (all roles); ``n_computed`` counts
    candidates (not competing phases) with a finished, successful calculation per fidelity; ``n_found`` those of the
    round's SCAN-computed candidates on the final SCAN hull; ``hit_rate = n_found / n_computed["scan"]``."""

    round: int
    n_computed: dict[str, int]
    n_found: int
    hit_rate: float | None
    cost_budget_units: float
    cost_cpu_hours: float
    cum_found: int
    cum_budget_units: float
    cum_cpu_hours: float
    cum_scan_computed: int


@dataclass
class Headline:
    """The campaign's headline figures, each a sum or ratio of ledger rows (see docs/report.md).

    ``found``: candidates on the final SCAN hull snapshot. ``spent_*``: charges of finished jobs (budget units: the
    ledger's budget; CPU-hours: reported, else estimated). ``hit_rate``: found / candidates computed at SCAN.
    ``mae_e_form_ev_per_atom``: mean |prediction made before purchase - computed formation energy| per fidelity.
    ``prevalence``: share of stable crystals in the candidate pool where the back-end knows it (replay), else None;
    ``daf = hit_rate / prevalence`` (discovery acceleration factor).
    """

    found_ids: list[str]
    spent_budget_units: float
    spent_cpu_hours: float
    budget_total: float
    calculations: dict[str, dict[str, int]]
    n_scan_computed: int
    mae_e_form_ev_per_atom: dict[str, float | None]
    n_mae: dict[str, int]
    prevalence: float | None
    prevalence_source: str
    rounds: list[RoundMetrics]

    @property
    def n_found(self) -> int:
        return len(self.found_ids)

    @property
    def hit_rate(self) -> float | None:
        return self.n_found / self.n_scan_computed if self.n_scan_computed else None

    @property
    def cpu_hours_per_find(self) -> float | None:
        return self.spent_cpu_hours / self.n_found if self.n_found else None

    @property
    def daf(self) -> float | None:
        if self.hit_rate is None or not self.prevalence:
            return None
        return self.hit_rate / self.prevalence


@dataclass(frozen=True)
class ParityPoint:
    """One (prediction made before purchase, computed value) pair, eV/atom."""

    structure_id: str
    fidelity: str
    round: int
    predicted: float
    predicted_std: float | None
    computed: float


#: Multiples of sigma at which the reliability plot compares observed and Gaussian coverage.
RELIABILITY_K = tuple(0.25 * i for i in range(1, 13))


@dataclass
class Reliability:
    """Coverage of one fidelity's prospective errors (predictions made before purchase minus results on the final
    hull, pooled over rounds): share with ``|error| <= k * sigma`` per ``k``, with the raw ensemble sigma and with the
    calibrated sigma the round ranked with, against the Gaussian share ``erf(k / sqrt 2)``."""

    fidelity: str
    k: list[float]
    nominal: list[float]
    raw: list[float]
    calibrated: list[float]
    n_errors: int


def reliability(errors: Any, raw_std: Any, used_std: Any, fidelity: str,
                k: Sequence[float] = RELIABILITY_K) -> Reliability | None:
    """Observed coverage at each ``k`` (None without errors), via :func:`screener.policies.calibration.coverage`
    (its 1-sigma share at ``scale = k``), so the report counts exactly as the campaign does."""
    from screener.policies.calibration import coverage

    n = len(errors)
    if n == 0:
        return None
    return Reliability(
        fidelity=fidelity, k=[float(x) for x in k], nominal=[math.erf(x / math.sqrt(2.0)) for x in k],
        raw=[coverage(errors, raw_std, x)[0] for x in k], calibrated=[coverage(errors, used_std, x)[0] for x in k],
        n_errors=n)


@dataclass
class ReportData:
    """The whole campaign, ready to be written as pages and plots."""

    campaign_dir: Path
    config: dict[str, Any]
    budget: BudgetSummary
    n_candidates: int
    candidates: list[CandidateInfo]
    jobs: list[JobInfo]
    rounds: list[RoundInfo]
    learning_curve: list[dict[str, Any]]
    models: list[dict[str, Any]]
    hull_dicts: dict[str, dict[str, Any] | None]
    events: list[dict[str, Any]]
    job_counts: dict[str, dict[str, int]]
    references: dict[str, list[dict[str, Any]]]
    schema_version: str | None = None
    headline: Headline | None = None
    reliability: dict[str, Reliability] = field(default_factory=dict)
    #: E_hull (eV/atom) at or below which a crystal counts as stable (the campaign's; default 0)
    stable_threshold_ev_per_atom: float = 0.0
    #: ids of the selected candidates that get a page (None: all; see :func:`page_candidates`)
    page_ids: set[str] | None = None
    #: the ledger's ``prediction_storage`` record when a large campaign kept only part of its predictions
    prediction_storage: dict[str, Any] | None = None
    _hulls: dict[str, Any] = field(default_factory=dict, repr=False)
    # element sets of the selected candidates' systems: the only part of a hull the report draws or measures against
    _systems: list[frozenset[str]] | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return bool(self.rounds) and self.rounds[-1].state == "empty"

    def has_page(self, structure_id: str) -> bool:
        """Whether a selected candidate gets its own page (see :attr:`page_ids`)."""
        if self.page_ids is not None:
            return structure_id in self.page_ids
        return structure_id in self._by_id()

    def candidate(self, structure_id: str) -> CandidateInfo | None:
        """The selected candidate with this id (None if not selected)."""
        return self._by_id().get(structure_id)

    def _by_id(self) -> dict[str, CandidateInfo]:
        index = self.__dict__.get("_index")
        if index is None or len(index) != len(self.candidates):
            index = self.__dict__["_index"] = {c.structure_id: c for c in self.candidates}
        return index

    def hull(self, fidelity: str) -> Any:
        """The final (latest) :class:`~screener.hull.FidelityHull` of ``fidelity`` (None before the first snapshot)."""
        if fidelity not in self._hulls:
            d = self.hull_dicts.get(fidelity)
            if d is None:
                self._hulls[fidelity] = None
            else:
                from screener.hull import FidelityHull

                self._hulls[fidelity] = FidelityHull.from_dict(_restricted(d, self._systems))
        return self._hulls[fidelity]

    def stable_candidates(self, fidelity: str = "scan") -> list[str]:
        """Ids of selected candidates on the latest hull of ``fidelity``."""
        return [c.structure_id for c in self.candidates if c.stable.get(fidelity)]

    def backends(self) -> dict[str, list[str]]:
        """``{backend: [labels]}`` of the calculators that produced results (each distinct label once)."""
        return backend_labels(self.jobs)

    def parity(self, fidelity: str, quantity: str = "e_form") -> list[ParityPoint]:
        """Prediction made before purchase against the computed value, per computed candidate of ``fidelity``.

        ``quantity="e_form"``: formation energies (what the model predicts); ``"e_hull"``: both measured against
        the final hull snapshot of ``fidelity``.
        """
        out = []
        for cand in self.candidates:
            pred = cand.predicted_at_selection.get(fidelity) or {}
            if quantity == "e_form":
                predicted = pred.get("e_form_mean_ev_per_atom")
                computed = cand.computed_e_form_ev_per_atom.get(fidelity)
            elif quantity == "e_hull":
                predicted = cand.predicted_e_hull_final_ev_per_atom.get(fidelity)
                computed = cand.computed_e_hull_ev_per_atom.get(fidelity)
            else:
                raise ValueError(f"quantity must be 'e_form' or 'e_hull', not {quantity!r}")
            if predicted is None or computed is None:
                continue
            out.append(ParityPoint(cand.structure_id, fidelity, int(pred.get("round") or 0), float(predicted),
                                   finite_float(pred.get("e_form_std_ev_per_atom")), float(computed)))
        return out


#: Candidate pages a report writes by default (``screener report --top N`` / ``--all-candidates`` for more).
DEFAULT_CANDIDATE_PAGES = 200


def report_order(candidates: Sequence[CandidateInfo]) -> list[CandidateInfo]:
    """Selected candidates, most interesting first: those on the final SCAN hull, then by computed SCAN E_hull,
    computed PBE E_hull and predicted SCAN E_hull (as ranked), lowest first (missing values last); ids break ties."""
    inf = math.inf

    def key(c: CandidateInfo) -> tuple[Any, ...]:
        scan, pbe = c.computed_e_hull_ev_per_atom.get("scan"), c.computed_e_hull_ev_per_atom.get("pbe")
        predicted = c.predicted_e_hull_as_ranked("scan")
        return (not c.stable.get("scan"), inf if scan is None else scan, inf if pbe is None else pbe,
                inf if predicted is None else predicted, c.structure_id)

    return sorted(candidates, key=key)


def choose_pages(data: ReportData, top_n: int | None = DEFAULT_CANDIDATE_PAGES) -> list[CandidateInfo]:
    """The candidates that get a page: the first ``top_n`` of :func:`report_order` (None: all); sets
    ``data.page_ids``."""
    ordered = report_order(data.candidates)
    chosen = ordered if top_n is None else ordered[: max(int(top_n), 0)]
    data.page_ids = {c.structure_id for c in chosen}
    return chosen


def _entry_elements(entry: Any) -> frozenset[str]:
    comp = entry.get("composition") if isinstance(entry, dict) else None
    if not isinstance(comp, dict):
        return frozenset()
    return frozenset("".join(c for c in str(el) if c.isalpha()) for el, n in comp.items() if n)


def _restricted(hull_dict: dict[str, Any], systems: list[frozenset[str]] | None) -> dict[str, Any]:
    """A stored hull with only the entries inside some of ``systems`` (their subsystems included).

    Decoding every known phase of a large reference set costs seconds; the report only measures the selected
    candidates, whose hulls need nothing outside their own systems, so the result is the same. Entries lose their
    structures (not needed for energies or hull plots).
    """
    keep = {}
    for key in ("entries", "references"):
        keep[key] = [_without_structure(e) for e in hull_dict.get(key) or []
                     if systems is None or any(_entry_elements(e) <= s for s in systems)]
    return {**hull_dict, **keep}


def _without_structure(entry: Any) -> Any:
    """A structure entry as a plain ComputedEntry: a hull needs compositions and energies, and decoding hundreds of
    structures is most of the cost of reading a stored hull."""
    if not isinstance(entry, dict) or "structure" not in entry:
        return entry
    out = {k: v for k, v in entry.items() if k != "structure"}
    out["@module"], out["@class"] = "pymatgen.entries.computed_entries", "ComputedEntry"
    return out


def backend_labels(jobs: list[JobInfo]) -> dict[str, list[str]]:
    """``{backend: [distinct labels, in order of appearance]}`` of some jobs."""
    out: dict[str, list[str]] = {}
    for job in jobs:
        if job.backend:
            labels = out.setdefault(job.backend, [])
            if (job.label or job.backend) not in labels:
                labels.append(job.label or job.backend)
    return out


_SLUG_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def slugify(structure_id: str, taken: set[str] | None = None) -> str:
    """A file-name and URL-safe name for a structure id (unique within ``taken``, which it updates)."""
    base = _SLUG_BAD.sub("_", structure_id).strip("._") or "structure"
    slug, k = base, 1
    while taken is not None and slug.lower() in taken:
        k += 1
        slug = f"{base}_{k}"
    if taken is not None:
        taken.add(slug.lower())
    return slug


def job_timestamps(ledger_path: str | Path) -> dict[str, tuple[float | None, float | None]]:
    """``{uuid: (created_at, updated_at)}`` of every job, read through a read-only ledger connection."""
    with Ledger(ledger_path, read_only=True) as ledger:
        return ledger.job_times()


def finite_float(x: Any) -> float | None:
    """``x`` as a finite float, or None (missing, non-numeric, NaN or infinite ledger values)."""
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _job_info(row: Any, times: dict[str, tuple[float | None, float | None]]) -> JobInfo:
    result = row.result or {}
    created, updated = times.get(row.uuid, (None, None))
    return JobInfo(
        uuid=row.uuid, round=int(row.round or 0), structure_id=row.structure_id, fidelity=row.fidelity, role=row.role,
        state=row.state, estimated_cost=float(row.estimated_cost), actual_cost=finite_float(row.actual_cost),
        estimated_cpu_hours=finite_float(row.estimated_cpu_hours), actual_cpu_hours=finite_float(row.actual_cpu_hours),
        failure_reason=row.failure_reason or result.get("failure_reason"),
        backend=result.get("backend"), label=result.get("label"), run_type=result.get("run_type"),
        wall_time_s=finite_float(result.get("wall_time_s")), energy_per_atom_ev=finite_float(result.get("energy_per_atom_ev")),
        created_at=created, finished_at=updated if row.state in ("done", "failed") else None,
        final_structure=result.get("final_structure"), entry=result.get("entry"),
    )


def _policy_numbers(events: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The numbers each round's plan was based on (stored with the ``policy`` event of ``commit_plan``)."""
    out: dict[int, dict[str, Any]] = {}
    for ev in events:
        if ev.get("kind") == "policy" and ev.get("round") is not None and ev.get("data_json"):
            try:
                value = json.loads(ev["data_json"])
                if isinstance(value, dict):  # anything else (a hand-edited ledger) reads as no numbers
                    out[int(ev["round"])] = value
            except (TypeError, ValueError):
                continue
    return out


def _load_references(campaign_dir: Path) -> dict[str, list[dict[str, Any]]]:
    path = campaign_dir / "references.json"
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    for fidelity, entries in raw.items() if isinstance(raw, dict) else ():
        if fidelity not in FIDELITIES:  # e.g. "meta": where the references came from
            continue
        rows = []
        for e in entries if isinstance(entries, list) else []:
            data = e.get("data") or {}
            rows.append({
                "structure_id": data.get("structure_id") or e.get("entry_id"),
                "formula": _formula(e),
                "backend": data.get("backend"), "label": data.get("label"),
                "energy_ev": finite_float(e.get("energy")),
            })
        out[fidelity] = rows
    return out


def _formula(entry_dict: dict[str, Any]) -> str:
    try:
        from pymatgen.core import Composition

        return Composition(entry_dict.get("composition") or {}).reduced_formula
    except (ValueError, TypeError):
        return "?"


def _computed_energies(data: ReportData, cand: CandidateInfo) -> None:
    """Fill the computed E_hull / E_form of a candidate, and its predicted E_hull, from the final hull of each
    fidelity."""
    from screener.errors import ScreenerError
    from screener.hull.corrections import as_entry

    for fidelity in FIDELITIES:
        cand.computed_e_hull_ev_per_atom[fidelity] = None
        cand.computed_e_form_ev_per_atom[fidelity] = None
        cand.predicted_e_hull_final_ev_per_atom[fidelity] = None
        hull = data.hull(fidelity)
        if hull is None:
            continue
        pred = (cand.predicted_at_selection.get(fidelity) or {}).get("e_form_mean_ev_per_atom")
        twins = cand.twin_of  # a rediscovery is measured against the hull without its known twin, as the campaign did
        if pred is not None and cand.structure is not None:
            try:
                cand.predicted_e_hull_final_ev_per_atom[fidelity] = hull.e_above_hull_from_formation_energy(
                    cand.structure.composition, float(pred), exclude=twins)
            except (ScreenerError, ValueError, KeyError) as exc:
                logger.warning("%s (%s): no predicted E_hull on the final hull: %s", cand.structure_id, fidelity, exc)
        done = [j for j in cand.jobs if j.fidelity == fidelity and j.state == "done" and j.entry]
        if not done:
            continue
        try:
            # an entry is data: ComputedEntry.from_dict, never a decoder that imports what the dict names
            entry = as_entry(dict(done[-1].entry))
            cand.computed_e_hull_ev_per_atom[fidelity] = hull.e_above_hull_ev_per_atom(entry, exclude=twins)
            cand.in_final_hull[fidelity] = cand.structure_id in hull  # False: finished after the last snapshot
            cand.computed_e_form_ev_per_atom[fidelity] = hull.e_form_ev_per_atom(entry)
        except (ScreenerError, ValueError, KeyError, TypeError) as exc:  # e.g. an element without reference
            logger.warning("%s (%s): no computed E_hull: %s", cand.structure_id, fidelity, exc)


def _competing_phases(hull: Any, cand: CandidateInfo, known_counts: dict[str, Any] | None) -> CompetingPhases | None:
    """Competing phases of a candidate's system in one final hull (``known`` from the ledger's record where the
    campaign made one before round 1)."""
    if hull is None or not cand.chemsys:
        return None
    from screener.errors import ScreenerError
    from screener.hull.phase_diagram import chemsys_elements, entry_key

    try:
        elements = chemsys_elements(cand.chemsys)
    except (ScreenerError, ValueError, TypeError, KeyError):  # a chemical system that names no elements
        return None
    refs = {entry_key(e) for e in hull.references}
    known = computed = 0
    for entry in hull.entries_in_chemsys(elements):
        if len(entry.composition.elements) < 2 or entry_key(entry) == cand.structure_id or \
                entry_key(entry) in cand.twin_of:  # its own known twin is not its competitor
            continue
        if entry_key(entry) in refs:
            known += 1
        else:
            computed += 1
    source = "final hull snapshot"
    if known_counts is not None and cand.chemsys in known_counts:
        try:  # the system's count, less the candidate's own twin(s) there
            known = int(known_counts[cand.chemsys]) - sum(1 for k in cand.twin_of if k in refs)
            source = "ledger record before round 1"
        except (TypeError, ValueError):
            pass
    return CompetingPhases(known=known, computed=computed, source=source)


def _prevalence(config: dict[str, Any], candidate_ids: list[str], threshold: float,
                campaign_dir: Path) -> tuple[float | None, str]:
    """Share of stable crystals in the candidate pool, where the back-end knows the truth (a replay data set that
    carries SCAN ``e_above_hull``); ``(None, why)`` otherwise."""
    if config.get("backend") != "replay":
        return None, f"unknown (the {config.get('backend') or '?'} back-end does not know the pool's truth)"
    raw = (config.get("backend_options") or {}).get("path")
    paths = [raw] if isinstance(raw, str) else [str(p) for p in raw or []]
    paths = [p if Path(p).is_absolute() or Path(p).exists() else str(campaign_dir / p) for p in paths]
    try:
        from screener.calculators.replay import load_replay_dataset

        dataset = load_replay_dataset(paths)
    except Exception as exc:  # noqa: BLE001 - the report still builds; it says why the DAF is missing
        return None, f"unknown (replay data set not readable here: {exc})"
    values = []
    for sid in candidate_ids:
        item = dataset.entries.get((sid, "scan"))
        value = finite_float(((item or {}).get("data") or {}).get("e_above_hull"))
        if value is not None:
            values.append(value)
    if not values:
        return None, "unknown (the replay data set gives no SCAN e_above_hull for the candidates)"
    share = sum(1 for v in values if v <= threshold + 1e-6) / len(values)
    return share, (f"replay data set: {len(values)} of {len(candidate_ids)} candidates with a known SCAN "
                   f"E_hull, stable at <= {1000 * threshold:.0f} meV/atom")


def _headline(data: ReportData, found_ids: list[str], candidate_ids: list[str]) -> Headline:
    """Headline figures and per-round metrics from the jobs, predictions and final SCAN hull."""
    finished = [j for j in data.jobs if j.finished]
    cand_ids = set(candidate_ids)
    found = set(found_ids)
    mae: dict[str, float | None] = {}
    n_mae: dict[str, int] = {}
    for fidelity in FIDELITIES:
        errors = [abs(p.predicted - p.computed) for p in data.parity(fidelity, "e_form")]
        mae[fidelity] = sum(errors) / len(errors) if errors else None
        n_mae[fidelity] = len(errors)
    threshold = data.stable_threshold_ev_per_atom
    prevalence, source = _prevalence(data.config, candidate_ids, threshold, data.campaign_dir)
    numbers = sorted({r.round for r in data.rounds} | {j.round for j in finished})
    rounds, cum = [], {"found": 0, "units": 0.0, "cpu": 0.0, "scan": 0}
    for number in numbers:
        jobs = [j for j in finished if j.round == number]
        computed = {f: sorted({j.structure_id for j in jobs if j.fidelity == f and j.state == "done"
                               and j.structure_id in cand_ids}) for f in FIDELITIES}
        n_found = sum(1 for s in computed["scan"] if s in found)
        cost_units, cost_cpu = sum(j.charge for j in jobs), sum(j.cpu_hours for j in jobs)
        cum["found"] += n_found
        cum["units"] += cost_units
        cum["cpu"] += cost_cpu
        cum["scan"] += len(computed["scan"])
        rounds.append(RoundMetrics(
            round=number, n_computed={f: len(v) for f, v in computed.items()}, n_found=n_found,
            hit_rate=n_found / len(computed["scan"]) if computed["scan"] else None,
            cost_budget_units=cost_units, cost_cpu_hours=cost_cpu, cum_found=cum["found"],
            cum_budget_units=cum["units"], cum_cpu_hours=cum["cpu"], cum_scan_computed=cum["scan"]))
    n_scan = len({j.structure_id for j in finished if j.fidelity == "scan" and j.state == "done"
                  and j.structure_id in cand_ids})
    return Headline(
        found_ids=list(found_ids), spent_budget_units=data.budget.spent,
        spent_cpu_hours=sum(j.cpu_hours for j in finished), budget_total=data.budget.total,
        calculations=data.job_counts, n_scan_computed=n_scan, mae_e_form_ev_per_atom=mae, n_mae=n_mae,
        prevalence=prevalence, prevalence_source=source, rounds=rounds)


def _known_phase_counts(record: Any) -> dict[str, dict[str, int]]:
    """``{fidelity: {chemsys: n known competing phases}}`` from the ledger's record made before round 1
    (:func:`screener.campaign.hulls.record_competing_phases`: ``{"systems": {chemsys: {"pbe": n, "scan": n}}}``);
    empty when the campaign made none."""
    out: dict[str, dict[str, int]] = {}
    systems = record.get("systems") if isinstance(record, dict) else None
    for chemsys, counts in (systems or {}).items() if isinstance(systems, dict) else ():
        if not isinstance(counts, dict):
            continue
        for fidelity in FIDELITIES:
            value = counts.get(fidelity)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out.setdefault(fidelity, {})[str(chemsys)] = int(value)
    return out


def load_report_data(campaign_dir: str | Path) -> ReportData:
    """Read a campaign folder's ledger into a :class:`ReportData` (nothing is written to the campaign).

    Parameters
    ----------
    campaign_dir : path
        A campaign folder (``ledger.sqlite`` inside); :class:`~screener.errors.InvalidInputError` otherwise.

    Returns
    -------
    ReportData

    Raises
    ------
    InvalidInputError
        Not a campaign, or its ledger holds a value of the wrong kind (a damaged or hand-edited folder): one line
        naming the folder, never a traceback.
    """
    campaign_dir = Path(campaign_dir)
    try:
        return _load(campaign_dir)
    except (ValueError, TypeError, KeyError, AttributeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(
            f"{campaign_dir}: the ledger holds a value the report cannot read ({type(exc).__name__}: {exc}); "
            "nothing was written") from exc


def _load(campaign_dir: Path) -> ReportData:
    from screener._safe_json import structure_from_dict

    with Ledger.in_dir(campaign_dir, read_only=True) as ledger:
        times = ledger.job_times()
        config = ledger.get_meta("config", {}) or {}
        schema = ledger.get_meta("schema_version")
        budget = ledger.budget()
        jobs = [_job_info(r, times) for r in ledger.jobs()]
        # a large campaign: every candidate's id and formula, but structures and predictions of the selected only
        selected_ids = sorted({j.structure_id for j in jobs})
        cand_rows = ledger.candidates(role="candidate", with_structures=False)
        cand_structures = {r["structure_id"]: r.get("structure_json") for r in ledger.candidates(
            role="candidate", structure_ids=selected_ids)}
        all_decisions = ledger.decisions()
        events = ledger.events()
        numbers = _policy_numbers(events)
        round_rows = ledger.rounds()
        predictions: dict[int, list[dict[str, Any]]] = {}
        for p in ledger.predictions(None, structure_ids=selected_ids):
            predictions.setdefault(int(p["round"]), []).append(p)
        prediction_storage = ledger.get_meta("prediction_storage")
        snaps = {f: ledger.hull_snapshots(f) for f in FIDELITIES}
        learning_curve = ledger.learning_curve()
        models = ledger.models()
        job_counts = ledger.job_counts()
        known_counts = _known_phase_counts(ledger.get_meta(COMPETING_PHASES_META))
        from screener.campaign.hulls import CANDIDATE_TWINS_META, candidate_twins_of

        twins = candidate_twins_of({CANDIDATE_TWINS_META: ledger.get_meta(CANDIDATE_TWINS_META) or {}})

    stable_by_round: dict[int, dict[str, list[str]]] = {}
    hull_dicts: dict[str, dict[str, Any] | None] = {}
    latest_stable: dict[str, set[str]] = {}
    for fidelity, rows in snaps.items():
        hull_dicts[fidelity] = None
        latest_stable[fidelity] = set()
        for snap in rows:
            payload = json.loads(snap["hull_json"] or "{}")
            stable_by_round.setdefault(int(snap["round"]), {})[fidelity] = list(payload.get("stable_ids", []))
            hull_dicts[fidelity] = payload.get("hull")
            latest_stable[fidelity] = set(payload.get("stable_ids", []))

    rounds = []
    for r in round_rows:
        number = int(r["round"])
        rounds.append(RoundInfo(
            round=number, state=r["state"], started_at=r.get("started_at"), finished_at=r.get("finished_at"),
            jobs=r["jobs"], cost=r["cost"], info=r["info"], policy_numbers=numbers.get(number, {}),
            decisions=[d | {"numbers": json_object(d.get("numbers_json"))} for d in all_decisions
                       if d["round"] == number],
            stable_ids=stable_by_round.get(number, {}),
        ))

    data = ReportData(
        campaign_dir=campaign_dir, config=config, budget=budget, n_candidates=len(cand_rows), candidates=[],
        jobs=jobs, rounds=rounds, learning_curve=learning_curve, models=models, hull_dicts=hull_dicts,
        events=events, job_counts=job_counts, references=_load_references(campaign_dir), schema_version=schema,
        stable_threshold_ev_per_atom=float(config.get("stable_threshold_ev_per_atom") or 0.0),
        prediction_storage=prediction_storage if isinstance(prediction_storage, dict) else None,
    )

    by_id: dict[str, list[JobInfo]] = {}
    for job in jobs:
        by_id.setdefault(job.structure_id, []).append(job)
    data._systems = [frozenset(p for p in str(row.get("chemsys") or "").split("-") if p) for row in cand_rows
                     if row["structure_id"] in by_id]
    latest_pred: dict[tuple[str, str], dict[str, Any]] = {}
    pred_by_round: dict[tuple[int, str, str], dict[str, Any]] = {}
    for number, rows in sorted(predictions.items()):
        for p in rows:
            latest_pred[(p["structure_id"], p["fidelity"])] = p
            pred_by_round[(number, p["structure_id"], p["fidelity"])] = p
    decisions_by_id: dict[str, list[dict[str, Any]]] = {}
    for d in all_decisions:
        decisions_by_id.setdefault(str(d["structure_id"]), []).append(d)
    taken: set[str] = set()
    for row in cand_rows:
        sid = row["structure_id"]
        if sid not in by_id:
            continue
        text = cand_structures.get(sid)
        structure = (structure_from_dict(json.loads(text), f"candidate {sid!r} in the ledger") if text else None)
        cand = CandidateInfo(
            structure_id=sid, slug=slugify(sid, taken), formula=row.get("formula") or "",
            chemsys=row.get("chemsys") or "",
            n_sites=int(row.get("n_sites") or 0), structure=structure, jobs=by_id[sid],
            decisions=decisions_by_id.get(sid, []), twin_of=list(twins.get(sid, [])),
        )
        for fidelity in FIDELITIES:
            if (sid, fidelity) in latest_pred:
                cand.predicted[fidelity] = latest_pred[(sid, fidelity)]
            for job in cand.jobs:
                if job.fidelity == fidelity and (job.round, sid, fidelity) in pred_by_round:
                    cand.predicted_at_selection[fidelity] = pred_by_round[(job.round, sid, fidelity)]
            cand.stable[fidelity] = sid in latest_stable[fidelity]
        _computed_energies(data, cand)
        for fidelity in FIDELITIES:
            cand.competing[fidelity] = _competing_phases(data.hull(fidelity), cand, known_counts.get(fidelity))
        data.candidates.append(cand)
    targets = {f: {c.structure_id: c.computed_e_form_ev_per_atom[f] for c in data.candidates
                   if c.computed_e_form_ev_per_atom.get(f) is not None} for f in FIDELITIES}
    if any(targets.values()):
        from screener.campaign.ranking import prospective_errors

        with Ledger.in_dir(campaign_dir, read_only=True) as ledger:
            for fidelity in FIDELITIES:
                curve = reliability(*prospective_errors(ledger, targets, fidelity, [r.round for r in rounds]),
                                    fidelity)
                if curve is not None:
                    data.reliability[fidelity] = curve
    ids = [row["structure_id"] for row in cand_rows]
    data.headline = _headline(data, [s for s in ids if s in latest_stable["scan"]], ids)
    return data
