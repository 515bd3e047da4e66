"""The calculator interface, the registry behind :func:`get_calculator`, and deterministic job ids."""

from __future__ import annotations

import hashlib
import uuid
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from screener.errors import InvalidInputError

if TYPE_CHECKING:
    from jobflow import Flow, Job
    from pymatgen.core import Structure

__all__ = ["Calculator", "get_calculator", "calc_uuid", "structure_hash", "check_fidelity", "CALCULATORS"]

#: namespace of the deterministic job uuids (uuid5), fixed forever so resumed runs find their jobs.
_NAMESPACE = uuid.UUID("6f1c2d1e-5b0a-4c1e-9d33-2a7c6f0e8b41")

#: backend name -> "module:class"
CALCULATORS = {
    "standin": "screener.calculators.standin:StandinCalculator",
    "vasp": "screener.calculators.vasp:VaspCalculator",
    "replay": "screener.calculators.replay:ReplayCalculator",
}


@runtime_checkable
class Calculator(Protocol):
    """What every back-end offers."""

    name: str

    def make_flow(
        self, structure: Structure, fidelity: str, structure_id: str, *, uuid: str | None = None, **kwargs: Any
    ) -> Flow | Job:
        """Jobflow Flow or Job whose final output is a :class:`~screener.calculators.CalcResult`.

        The job producing that output gets ``uuid`` when given (a campaign rebuilds an open job from its ledger with
        the uuid recorded there), else the deterministic :func:`calc_uuid`.
        """
        ...

    def estimate_cost_cpu_hours(self, structure: Structure, fidelity: str) -> float:
        """Modelled DFT cost of the calculation in CPU-hours."""
        ...


def get_calculator(name: str = "standin", **options: Any) -> Calculator:
    """Build a calculator back-end by name.

    Parameters
    ----------
    name : {"standin", "vasp", "replay"}
        Back-end.
    **options
        Passed to the back-end's constructor (e.g. ``relax=True``, ``cost_model=CostModel(...)``,
        ``path=...`` for replay, ``user_incar_settings={...}`` for vasp).
    """
    import importlib

    try:
        target = CALCULATORS[name]
    except KeyError:
        raise InvalidInputError(f"unknown calculator {name!r}; choose one of {sorted(CALCULATORS)}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)(**options)


def check_fidelity(fidelity: str) -> str:
    """Return ``fidelity`` lower-cased, or raise InvalidInputError."""
    value = str(fidelity).lower()
    if value not in ("pbe", "scan"):
        raise InvalidInputError(f"fidelity must be 'pbe' or 'scan', got {fidelity!r}")
    return value


def structure_hash(structure: Structure) -> str:
    """Short content hash of a structure (lattice, species, fractional coordinates rounded to 1e-6)."""
    parts = [f"{x:.6f}" for x in structure.lattice.matrix.flat]
    for site in structure:
        parts.append(site.species_string)
        parts.extend(f"{x % 1.0:.6f}" for x in site.frac_coords)
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def calc_uuid(structure_id: str, fidelity: str, backend: str, structure: Structure, *parts: str) -> str:
    """Deterministic uuid of the job that produces one CalcResult.

    The same candidate, fidelity, back-end and structure always get the same uuid, so a resumed run finds the
    outputs already in the store; ``parts`` distinguish the helper jobs of one calculation.
    """
    key = "|".join([structure_id, fidelity, backend, structure_hash(structure), *parts])
    return str(uuid.uuid5(_NAMESPACE, key))
