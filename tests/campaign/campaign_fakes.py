"""Fast fake components for campaign tests: a toy world with known energies, a pymatgen hull, a greedy planner.

The fake executor keeps one result file per *calculation actually performed* (``<uuid>__<pid>_<n>.json``, never
overwritten), so a test can count repeats: two files for one (structure, fidelity) means it was computed twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid as uuidlib
from pathlib import Path
from typing import Any

import numpy as np
from monty.json import MSONable
from pymatgen.core import Composition, Lattice, Structure

from screener.campaign import CampaignConfig, Components, ModelVersion, Plan, PlanItem, PlanRequest

ELEMENT_MU = {"pbe": {"Li": -1.9, "Na": -1.3, "K": -1.1}, "scan": {"Li": -2.3, "Na": -1.6, "K": -1.4}}


def _h(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def true_e_form(sid: str, fidelity: str) -> float:
    """Hidden formation energy (eV/atom) of a fake structure."""
    base = -0.25 + 0.3 * _h(sid)
    return base if fidelity == "pbe" else base - 0.04 + 0.04 * _h(sid + "scan")


def make_structures(n: int = 10, seed: int = 0) -> dict[str, Structure]:
    """Small real pymatgen structures in Li-Na(-K): simple-cubic supercells with mixed species."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        n_sites = int(rng.integers(2, 6))
        elements = ["Li", "Na"] if i % 3 else ["Li", "K"]
        species = [elements[j % 2] for j in range(n_sites)]
        if rng.random() < 0.3:
            species[0] = elements[1]
        coords = [[j / n_sites, 0.5 * (j % 2), 0.0] for j in range(n_sites)]
        out[f"cand-{i:02d}"] = Structure(Lattice.orthorhombic(3.0 * n_sites, 3.0, 3.0), species, coords)
    return out


class FakeFlow(MSONable):
    """Stand-in for a jobflow Job: an MSONable with a uuid."""

    def __init__(self, structure_id: str, fidelity: str, formula: str, n_sites: int,
                 estimated_cpu_hours: float = 0.0, uuid: str | None = None) -> None:
        self.structure_id, self.fidelity, self.formula, self.n_sites = structure_id, fidelity, formula, n_sites
        self.estimated_cpu_hours = estimated_cpu_hours
        self.uuid = uuid or str(uuidlib.uuid4())


class FakeCalculator:
    """Costs ~ n_sites with SCAN 5x PBE, or random (but fixed per structure) when ``salt`` is given."""

    def __init__(self, salt: str | None = None) -> None:
        self.salt = salt

    def estimate_cost_cpu_hours(self, structure: Structure, fidelity: str) -> float:
        if self.salt is not None:
            return 0.02 + 3.0 * _h(f"{self.salt}{structure.composition.formula}{len(structure)}{fidelity}")
        return 0.1 * len(structure) * (5.0 if fidelity == "scan" else 1.0)

    def make_flow(self, structure: Structure, fidelity: str, structure_id: str, *, uuid: str | None = None,
                  **kw: Any) -> FakeFlow:
        return FakeFlow(structure_id, fidelity, structure.composition.formula, len(structure),
                        estimated_cpu_hours=self.estimate_cost_cpu_hours(structure, fidelity), uuid=uuid)


class FakeExecutor:
    """Runs FakeFlows in-process; each performed calculation leaves one file in ``store_dir``."""

    runs_locally = True

    def __init__(self, store_dir: Path, *, fail: set[tuple[str, str]] = frozenset(), actual_factor: float = 1.0,
                 on_compute: Any = None) -> None:
        self.store_dir = Path(store_dir)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.fail, self.actual_factor, self.on_compute = set(fail), actual_factor, on_compute
        self.queue: list[FakeFlow] = []
        self._n = 0

    def submit(self, flow: FakeFlow) -> list[str]:
        self.queue.append(flow)
        return [flow.uuid]

    def _stored(self, uuid: str) -> list[Path]:
        return sorted(self.store_dir.glob(f"{uuid}__*.json"))

    def run(self) -> None:
        while self.queue:
            flow = self.queue.pop(0)
            if self._stored(flow.uuid):
                continue  # already computed: never run twice
            if self.on_compute:
                self.on_compute(flow)
            self._n += 1
            result = self.compute(flow)
            tmp = self.store_dir / f".tmp-{os.getpid()}-{self._n}"
            tmp.write_text(json.dumps(result))
            os.replace(tmp, self.store_dir / f"{flow.uuid}__{os.getpid()}_{self._n}.json")

    def compute(self, flow: FakeFlow) -> dict[str, Any]:
        comp = Composition(flow.formula)
        mu = ELEMENT_MU[flow.fidelity]
        e_form = true_e_form(flow.structure_id, flow.fidelity)
        energy = (e_form + sum(comp.get_atomic_fraction(el) * mu[el.symbol] for el in comp)) * comp.num_atoms
        cost = flow.estimated_cpu_hours
        ok = (flow.structure_id, flow.fidelity) not in self.fail
        entry = {"@module": "pymatgen.entries.computed_entries", "@class": "ComputedEntry",
                 "composition": comp.as_dict(), "energy": energy, "correction": 0.0, "entry_id": flow.structure_id,
                 "data": {"structure_id": flow.structure_id, "fidelity": flow.fidelity, "backend": "fake"}}
        return {"structure_id": flow.structure_id, "fidelity": flow.fidelity, "success": ok,
                "failure_reason": None if ok else "fake SCF did not converge",
                "cost_cpu_hours": cost * self.actual_factor, "entry": entry if ok else None,
                "band_gap_ev": 1.0}

    def collect(self, uuids: list[str]) -> dict[str, Any]:
        out = {}
        for u in uuids:
            files = self._stored(u)
            out[u] = json.loads(files[0].read_text()) if files else None
        return out


class FakeHulls:
    """Per-fidelity pymatgen PhaseDiagram over elemental references (mu) plus the campaign's results."""

    def __init__(self, missing: dict[str, list[tuple[str, Structure]]] | None = None) -> None:
        self.entries: dict[str, list[Any]] = {"pbe": [], "scan": []}
        self.missing = missing or {}

    def _refs(self, fidelity: str) -> list[Any]:
        from pymatgen.entries.computed_entries import ComputedEntry

        return [ComputedEntry(el, mu, entry_id=f"ref-{el}") for el, mu in ELEMENT_MU[fidelity].items()]

    def _pd(self, fidelity: str, elements: list[str] | None = None) -> Any:
        from pymatgen.analysis.phase_diagram import PhaseDiagram

        entries = self._refs(fidelity) + self.entries[fidelity]
        if elements:
            entries = [e for e in entries if {el.symbol for el in e.composition} <= set(elements)]
        return PhaseDiagram(entries)

    def add_result(self, fidelity: str, entry: dict[str, Any]) -> None:
        from pymatgen.entries.computed_entries import ComputedEntry

        self.entries[fidelity].append(ComputedEntry.from_dict(entry))

    def hull_formation_energy_ev_per_atom(self, fidelity: str, composition: Any) -> float:
        comp = Composition(composition)
        pd = self._pd(fidelity, [el.symbol for el in comp])
        mu = ELEMENT_MU[fidelity]
        return pd.get_hull_energy_per_atom(comp) - sum(comp.get_atomic_fraction(el) * mu[el.symbol] for el in comp)

    def e_form_ev_per_atom(self, fidelity: str, entry: dict[str, Any]) -> float:
        comp = Composition(entry["composition"])
        mu = ELEMENT_MU[fidelity]
        return entry["energy"] / comp.num_atoms - sum(comp.get_atomic_fraction(el) * mu[el.symbol] for el in comp)

    def e_above_hull_ev_per_atom(self, fidelity: str, entry: dict[str, Any]) -> float:
        return self.e_form_ev_per_atom(fidelity, entry) - self.hull_formation_energy_ev_per_atom(
            fidelity, entry["composition"])

    def missing_competing_phases(self, fidelity: str, chemsys: str) -> list[tuple[str, Structure]]:
        return list(self.missing.get(fidelity, [])) if fidelity == "scan" else []

    def snapshot(self, fidelity: str) -> dict[str, Any]:
        pd = self._pd(fidelity)
        stable = sorted(e.entry_id for e in pd.stable_entries if not str(e.entry_id).startswith("ref-"))
        return {"n_entries": len(self.entries[fidelity]), "n_stable": len(stable), "stable_ids": stable, "json": None}


class FakeModel:
    """Predicts the hidden formation energy plus a per-structure error that shrinks after fine-tuning."""

    def __init__(self, calls_file: Path | None = None) -> None:
        self.trained: dict[str, dict[str, float]] = {"pbe": {}, "scan": {}}
        self.calls_file = calls_file
        self.n_fine_tunes = 0

    def predict_formation_energy(self, structures: dict[str, Any], fidelity: str) -> tuple[np.ndarray, np.ndarray]:
        mean, std = [], []
        for sid in structures:
            if sid in self.trained[fidelity]:
                mean.append(self.trained[fidelity][sid])
                std.append(0.01)
            else:
                mean.append(true_e_form(sid, fidelity) + 0.1 * (_h(sid + "err") - 0.5))
                std.append(0.05)
        return np.array(mean), np.array(std)

    def fine_tune(self, targets: dict[str, dict[str, float]], structures: dict[str, Any], *, out_dir: str,
                  round_number: int, seed: int) -> list[ModelVersion]:
        self.n_fine_tunes += 1
        self.trained = {f: dict(v) for f, v in targets.items()}
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        return [ModelVersion(f"round{round_number}-{f}", f, out_dir, None, len(v), {"epochs": 1})
                for f, v in targets.items() if v]


class GreedyPlanner:
    """Competing phases first, then the lowest predicted SCAN E_hull: PBE first, SCAN once PBE is done."""

    def plan(self, request: PlanRequest) -> Plan:
        items: list[PlanItem] = list(request.competing)
        budget = request.remaining_budget - sum(i.estimated_cost for i in items)
        order = np.argsort(request.e_hull_mean["scan"], kind="stable")
        for i in order:
            sid = request.structure_ids[i]
            for fidelity in ("pbe", "scan"):
                if (sid, fidelity) in request.done:
                    continue
                cost = float(request.cost[fidelity][i])
                if cost <= budget and len(items) < request.batch_size:
                    items.append(PlanItem(sid, fidelity, "lowest predicted SCAN E_hull", cost,
                                          {"e_hull_mean": float(request.e_hull_mean[fidelity][i])}))
                    budget -= cost
                break
        return Plan(items, {"n_scan": request.n_scan, "n_pbe": request.n_pbe,
                            "remaining_budget": request.remaining_budget})


def fake_factory(store_dir: Path, *, salt: str | None = None, missing: Any = None, **executor_kw: Any) -> Any:
    """A ComponentsFactory building fresh fakes."""

    def factory(config: CampaignConfig, campaign_dir: Path, ledger: Any) -> Components:
        return Components(FakeCalculator(salt), FakeExecutor(store_dir, **executor_kw), FakeModel(),
                          FakeHulls(missing), GreedyPlanner())

    return factory


def count_performed(store_dir: Path) -> dict[tuple[str, str], int]:
    """(structure_id, fidelity) -> how many times it was computed."""
    counts: dict[tuple[str, str], int] = {}
    for f in Path(store_dir).glob("*__*.json"):
        d = json.loads(f.read_text())
        key = (d["structure_id"], d["fidelity"])
        counts[key] = counts.get(key, 0) + 1
    return counts
