"""Everything the campaign report shows, read from the campaign ledger (read-only) into plain dataclasses.

The ledger (:class:`screener.campaign.ledger.Ledger`) is only read: its public read API, plus one read-only SQL query
(:func:`job_timestamps`, opened with ``mode=ro``) for the submission and finish times of the jobs, which the read API
does not expose. Computed energies above the hull come from the latest hull snapshot of each fidelity that the
campaign recorded (never a blend of the two functionals).
"""

from __future__ import annotations

import json
import logging
import math
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from screener.campaign.ledger import LEDGER_FILENAME, BudgetSummary, Ledger

__all__ = [
    "FIDELITIES",
    "JobInfo",
    "CandidateInfo",
    "RoundInfo",
    "ReportData",
    "load_report_data",
    "job_timestamps",
    "slugify",
    "backend_labels",
]

logger = logging.getLogger(__name__)

FIDELITIES = ("pbe", "scan")


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


@dataclass
class CandidateInfo:
    """A candidate the campaign selected (at least one calculation bought), with predictions and results.

    ``predicted`` holds the latest prediction row of each fidelity, ``predicted_at_selection`` the prediction of the
    round in which that fidelity's calculation was planned (what the policy saw). E_hull values are in eV/atom.
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
    stable: dict[str, bool] = field(default_factory=dict)

    def best_structure(self) -> tuple[Any, str]:
        """The structure to show: the final structure of the SCAN result, else of the PBE result, else the input."""
        from pymatgen.core import Structure

        for fidelity in ("scan", "pbe"):
            for job in self.jobs:
                if job.fidelity == fidelity and job.state == "done" and job.final_structure:
                    return Structure.from_dict(job.final_structure), f"final structure of the {fidelity.upper()} job"
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
    _hulls: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def finished(self) -> bool:
        return bool(self.rounds) and self.rounds[-1].state == "empty"

    def hull(self, fidelity: str) -> Any:
        """The latest :class:`~screener.hull.FidelityHull` of ``fidelity`` (None before the first snapshot)."""
        if fidelity not in self._hulls:
            d = self.hull_dicts.get(fidelity)
            if d is None:
                self._hulls[fidelity] = None
            else:
                from screener.hull import FidelityHull

                self._hulls[fidelity] = FidelityHull.from_dict(d)
        return self._hulls[fidelity]

    def stable_candidates(self, fidelity: str = "scan") -> list[str]:
        """Ids of selected candidates on the latest hull of ``fidelity``."""
        return [c.structure_id for c in self.candidates if c.stable.get(fidelity)]

    def backends(self) -> dict[str, list[str]]:
        """``{backend: [labels]}`` of the calculators that produced results (each distinct label once)."""
        return backend_labels(self.jobs)


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
    """``{uuid: (created_at, updated_at)}`` of every job, read through a read-only SQLite connection.

    The ledger's read API does not return these times; the report needs them for the spend-over-time plot.
    """
    uri = Path(ledger_path).resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=30.0)
    try:
        rows = conn.execute("SELECT uuid, created_at, updated_at FROM jobs").fetchall()
    finally:
        conn.close()
    return {str(u): (c, m) for u, c, m in rows}


def _float(x: Any) -> float | None:
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
        state=row.state, estimated_cost=float(row.estimated_cost), actual_cost=_float(row.actual_cost),
        estimated_cpu_hours=_float(row.estimated_cpu_hours), actual_cpu_hours=_float(row.actual_cpu_hours),
        failure_reason=row.failure_reason or result.get("failure_reason"),
        backend=result.get("backend"), label=result.get("label"), run_type=result.get("run_type"),
        wall_time_s=_float(result.get("wall_time_s")), energy_per_atom_ev=_float(result.get("energy_per_atom_ev")),
        created_at=created, finished_at=updated if row.state in ("done", "failed") else None,
        final_structure=result.get("final_structure"), entry=result.get("entry"),
    )


def _policy_numbers(events: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The numbers each round's plan was based on (stored with the ``policy`` event of ``commit_plan``)."""
    out: dict[int, dict[str, Any]] = {}
    for ev in events:
        if ev.get("kind") == "policy" and ev.get("round") is not None and ev.get("data_json"):
            try:
                out[int(ev["round"])] = json.loads(ev["data_json"])
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
    for fidelity, entries in raw.items():
        rows = []
        for e in entries if isinstance(entries, list) else []:
            data = e.get("data") or {}
            rows.append({
                "structure_id": data.get("structure_id") or e.get("entry_id"),
                "formula": _formula(e),
                "backend": data.get("backend"), "label": data.get("label"),
                "energy_ev": _float(e.get("energy")),
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
    """Fill the computed E_hull / E_form of a candidate from the latest hull of each fidelity."""
    from monty.json import MontyDecoder

    from screener.errors import ScreenerError

    for fidelity in FIDELITIES:
        cand.computed_e_hull_ev_per_atom[fidelity] = None
        cand.computed_e_form_ev_per_atom[fidelity] = None
        done = [j for j in cand.jobs if j.fidelity == fidelity and j.state == "done" and j.entry]
        hull = data.hull(fidelity)
        if not done or hull is None:
            continue
        entry = MontyDecoder().process_decoded(dict(done[-1].entry))
        try:
            cand.computed_e_hull_ev_per_atom[fidelity] = hull.e_above_hull_ev_per_atom(entry)
            cand.computed_e_form_ev_per_atom[fidelity] = hull.e_form_ev_per_atom(entry)
        except (ScreenerError, ValueError, KeyError) as exc:  # e.g. an element without reference in that hull
            logger.warning("%s (%s): no computed E_hull: %s", cand.structure_id, fidelity, exc)


def load_report_data(campaign_dir: str | Path) -> ReportData:
    """Read a campaign folder's ledger into a :class:`ReportData` (nothing is written to the campaign).

    Parameters
    ----------
    campaign_dir : path
        A campaign folder (``ledger.sqlite`` inside); :class:`~screener.errors.InvalidInputError` otherwise.

    Returns
    -------
    ReportData
    """
    from pymatgen.core import Structure

    campaign_dir = Path(campaign_dir)
    times = job_timestamps(campaign_dir / LEDGER_FILENAME) if (campaign_dir / LEDGER_FILENAME).is_file() else {}
    with Ledger.in_dir(campaign_dir) as ledger:
        config = ledger.get_meta("config", {}) or {}
        schema = ledger.get_meta("schema_version")
        budget = ledger.budget()
        cand_rows = ledger.candidates(role="candidate")
        jobs = [_job_info(r, times) for r in ledger.jobs()]
        all_decisions = ledger.decisions()
        events = ledger.events()
        numbers = _policy_numbers(events)
        round_rows = ledger.rounds()
        predictions = {r["round"]: ledger.predictions(r["round"]) for r in round_rows}
        snaps = {f: ledger.hull_snapshots(f) for f in FIDELITIES}
        learning_curve = ledger.learning_curve()
        models = ledger.models()
        job_counts = ledger.job_counts()

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
            decisions=[d | {"numbers": json.loads(d.get("numbers_json") or "{}")} for d in all_decisions
                       if d["round"] == number],
            stable_ids=stable_by_round.get(number, {}),
        ))

    data = ReportData(
        campaign_dir=campaign_dir, config=config, budget=budget, n_candidates=len(cand_rows), candidates=[],
        jobs=jobs, rounds=rounds, learning_curve=learning_curve, models=models, hull_dicts=hull_dicts,
        events=events, job_counts=job_counts, references=_load_references(campaign_dir), schema_version=schema,
    )

    by_id: dict[str, list[JobInfo]] = {}
    for job in jobs:
        by_id.setdefault(job.structure_id, []).append(job)
    latest_pred: dict[tuple[str, str], dict[str, Any]] = {}
    pred_by_round: dict[tuple[int, str, str], dict[str, Any]] = {}
    for number, rows in sorted(predictions.items()):
        for p in rows:
            latest_pred[(p["structure_id"], p["fidelity"])] = p
            pred_by_round[(number, p["structure_id"], p["fidelity"])] = p
    taken: set[str] = set()
    for row in cand_rows:
        sid = row["structure_id"]
        if sid not in by_id:
            continue
        structure = Structure.from_dict(json.loads(row["structure_json"])) if row.get("structure_json") else None
        cand = CandidateInfo(
            structure_id=sid, slug=slugify(sid, taken), formula=row.get("formula") or "",
            chemsys=row.get("chemsys") or "",
            n_sites=int(row.get("n_sites") or 0), structure=structure, jobs=by_id[sid],
            decisions=[d for d in all_decisions if d["structure_id"] == sid],
        )
        for fidelity in FIDELITIES:
            if (sid, fidelity) in latest_pred:
                cand.predicted[fidelity] = latest_pred[(sid, fidelity)]
            for job in cand.jobs:
                if job.fidelity == fidelity and (job.round, sid, fidelity) in pred_by_round:
                    cand.predicted_at_selection[fidelity] = pred_by_round[(job.round, sid, fidelity)]
            cand.stable[fidelity] = sid in latest_stable[fidelity]
        _computed_energies(data, cand)
        data.candidates.append(cand)
    return data
