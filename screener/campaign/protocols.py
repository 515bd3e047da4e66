"""The small interfaces the campaign loop is built on (so it can run with real components or test fakes).

The real implementations are adapters in :mod:`screener.campaign.components` over ``screener.calculators``,
``screener.execution``, ``screener.hull``, ``screener.policies`` and ``screener.cgat``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "Calculator",
    "Executor",
    "Model",
    "Hulls",
    "Planner",
    "PlanItem",
    "PlanRequest",
    "Plan",
    "ModelVersion",
]


@runtime_checkable
class Calculator(Protocol):
    """Makes calculations (jobflow Flow/Job, or any MSONable with a ``uuid``) and prices them."""

    def make_flow(self, structure: Any, fidelity: str, structure_id: str, **kwargs: Any) -> Any: ...

    def estimate_cost_cpu_hours(self, structure: Any, fidelity: str) -> float: ...


@runtime_checkable
class Executor(Protocol):
    """Runs or submits flows and returns their results by uuid (None = not finished)."""

    def submit(self, flow: Any) -> list[str]: ...

    def run(self) -> None: ...

    def collect(self, uuids: Sequence[str]) -> Mapping[str, Any]: ...


@dataclass
class ModelVersion:
    """A saved model: which fidelity it predicts, where it lies, what it was trained on."""

    version: str
    fidelity: str
    path: str
    parent: str | None
    n_train: int
    metrics: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Model(Protocol):
    """Predicts formation energies (eV/atom) per fidelity with an uncertainty, and fine-tunes on new results."""

    def predict_formation_energy(
        self, structures: Mapping[str, Any], fidelity: str
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Mean and std (eV/atom) for ``structures`` in their mapping order."""
        ...

    def fine_tune(
        self,
        targets: Mapping[str, Mapping[str, float]],
        structures: Mapping[str, Any],
        *,
        out_dir: str,
        round_number: int,
        seed: int,
    ) -> list[ModelVersion]:
        """Train on ``targets[fidelity][structure_id] = e_form_ev_per_atom`` (all data so far); save under out_dir."""
        ...

    # Optional (the loop uses ``getattr``): ``pretraining_set_sizes() -> {"pbe": int, "scan": int}``, the number of
    # structures per fidelity the model learned from before the campaign (0 when unknown).


@runtime_checkable
class Hulls(Protocol):
    """Per-fidelity convex hulls fed with calculation results (ComputedStructureEntry dicts)."""

    def add_result(self, fidelity: str, entry: Mapping[str, Any]) -> None: ...

    def hull_formation_energy_ev_per_atom(self, fidelity: str, composition: Any) -> float:
        """Formation energy of the current hull at ``composition`` (nan when the hull cannot say)."""
        ...

    def e_form_ev_per_atom(self, fidelity: str, entry: Mapping[str, Any]) -> float: ...

    def e_above_hull_ev_per_atom(self, fidelity: str, entry: Mapping[str, Any]) -> float: ...

    def missing_competing_phases(self, fidelity: str, chemsys: str) -> list[tuple[str, Any]]:
        """(id, structure) of phases this fidelity's hull needs in ``chemsys`` before its E_hull can be trusted."""
        ...

    def snapshot(self, fidelity: str) -> dict[str, Any]:
        """``{"n_entries", "n_stable", "stable_ids", "json"}`` for the ledger (optionally ``e_hull_ev_per_atom``:
        ``{id: E_hull}`` of every computed structure, and ``stable_threshold_ev_per_atom``)."""
        ...

    # Optional (the loop and the ranking use ``getattr``): ``twins``, ``{candidate id: [known phase keys]}`` of the
    # candidates that ARE known phases; then ``hull_formation_energy_ev_per_atom(fidelity, composition, structure_id)``
    # measures that candidate against the hull without them.


@dataclass
class PlanItem:
    """One calculation the policy wants (cost in budget units)."""

    structure_id: str
    fidelity: str
    reason: str
    estimated_cost: float
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass
class PlanRequest:
    """Plain numbers the policy decides on (costs in budget units, energies in eV/atom)."""

    round_number: int
    structure_ids: list[str]
    chemsys: list[str]
    e_hull_mean: dict[str, NDArray[np.float64]]
    e_hull_std: dict[str, NDArray[np.float64]]
    cost: dict[str, NDArray[np.float64]]
    done: set[tuple[str, str]]
    n_scan: int
    n_pbe: int
    learning_curve: list[dict[str, Any]]
    remaining_budget: float
    batch_size: int
    seed: int
    competing: list[PlanItem] = field(default_factory=list)
    #: Data behind the current model from before the campaign (the PBE pre-training set size N_p0 from the model's
    #: card / ensemble metadata, and any SCAN pre-training data); the scaling law's N_p is ``n_pbe_pretraining +
    #: n_pbe`` and its N_s is ``n_scan_pretraining + n_scan``.
    n_pbe_pretraining: int = 0
    n_scan_pretraining: int = 0
    #: Campaign PBE results behind the model that makes the SCAN predictions: those the PBE model had learned when
    #: the SCAN ensemble was transferred from it (the PBE model's own, before any SCAN model). The scaling law's N_p
    #: is then ``n_pbe_pretraining + n_pbe_behind_scan_model``; None: ``n_pbe`` (a planner of older campaigns).
    n_pbe_behind_scan_model: int | None = None
    #: False once a SCAN model exists: it continues from its own weights, so later PBE results never reach it.
    pbe_reaches_scan_model: bool = True


@dataclass
class Plan:
    """The policy's ordered plan and the numbers behind it (logged in the ledger)."""

    items: list[PlanItem]
    numbers: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Planner(Protocol):
    """Picks which candidates to compute at which fidelity (a pure function of the request)."""

    def plan(self, request: PlanRequest) -> Plan: ...
