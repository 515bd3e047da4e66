"""The one result type of every back-end: :class:`CalcResult`, and the hull entry it carries."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

__all__ = ["CalcResult", "Backend", "MP2020_RUN_TYPES", "make_entry_dict"]

Backend = Literal["vasp", "standin", "replay"]

#: run types that MaterialsProject2020Compatibility corrects (GGA / GGA+U VASP runs).
MP2020_RUN_TYPES = ("GGA", "GGA+U")


class CalcResult(BaseModel):
    """Outcome of one calculation of one structure at one fidelity, whatever ran it.

    Energies are total energies of ``final_structure`` in eV, as the back-end computed them (for VASP the raw DFT
    energy; MP2020 corrections, where they apply, are left to the hull, which sees ``entry``).
    """

    structure_id: str = Field(..., description="Id of the candidate (links the fidelities).")
    fidelity: Literal["pbe", "scan"] = Field(..., description="Functional level asked for.")
    backend: Backend = Field(..., description="What computed it: vasp, standin (ML potential) or replay (data set).")
    label: str = Field(..., description="Honest human-readable description of the method, e.g. 'stand-in: ...'.")
    success: bool = Field(..., description="Whether an energy was obtained.")
    failure_reason: str | None = Field(None, description="Why it failed (or what fallback was used), in words.")
    energy_ev: float | None = Field(None, description="Total energy of final_structure in eV.")
    energy_per_atom_ev: float | None = Field(None, description="energy_ev / n_sites in eV/atom.")
    n_sites: int = Field(..., description="Number of sites of the calculated cell.")
    final_structure: dict | None = Field(None, description="Final (relaxed or input) structure as a pymatgen dict.")
    run_type: str | None = Field(None, description="Run type, e.g. GGA, GGA+U, r2SCAN, CHGNet-0.3.0.")
    wall_time_s: float | None = Field(None, description="Measured wall time of the job in seconds.")
    cost_cpu_hours: float = Field(0.0, description="CPU-hours charged: DFT's modelled cost for stand-in/replay.")
    band_gap_ev: float | None = Field(None, description="Band gap in eV where the back-end gives one.")
    entry: dict | None = Field(None, description="ComputedStructureEntry dict for the hull of this fidelity.")
    attempts: int = Field(1, description="How many attempts were made (1 + retries).")
    job_dir: str | None = Field(None, description="Folder the calculation ran in, where there was one.")

    @field_validator("final_structure", "entry", mode="before")
    @classmethod
    def _json_clean(cls, value: Any) -> Any:
        """Store plain JSON (tuples -> lists, numpy -> floats) so a JSON round trip gives an equal result."""
        if value is None:
            return None
        import json

        from monty.json import MontyEncoder

        if hasattr(value, "as_dict"):
            value = value.as_dict()
        return json.loads(json.dumps(value, cls=MontyEncoder))

    def structure(self) -> Any:
        """Final structure as a pymatgen ``Structure`` (None if there is none)."""
        if self.final_structure is None:
            return None
        from screener._safe_json import structure_from_dict

        return structure_from_dict(self.final_structure, f"final structure of {self.structure_id}")

    def to_entry(self) -> Any:
        """``entry`` as a pymatgen ``ComputedStructureEntry`` (None for failed calculations)."""
        if self.entry is None:
            return None
        from screener._safe_json import entry_from_dict

        return entry_from_dict(self.entry, f"entry of {self.structure_id}")

    @classmethod
    def failed(
        cls,
        *,
        structure_id: str,
        fidelity: str,
        backend: str,
        label: str,
        reason: str,
        n_sites: int,
        cost_cpu_hours: float = 0.0,
        wall_time_s: float | None = None,
        attempts: int = 1,
        job_dir: str | None = None,
    ) -> CalcResult:
        """A failed calculation: no energy, the reason in words, the cost it used."""
        return cls(
            structure_id=structure_id,
            fidelity=fidelity,
            backend=backend,
            label=label,
            success=False,
            failure_reason=reason,
            n_sites=n_sites,
            cost_cpu_hours=cost_cpu_hours,
            wall_time_s=wall_time_s,
            attempts=attempts,
            job_dir=job_dir,
        )


def make_entry_dict(
    structure: Any,
    energy_ev: float,
    *,
    structure_id: str,
    fidelity: str,
    backend: str,
    run_type: str,
    parameters: dict | None = None,
    data: dict | None = None,
    correction_ev: float = 0.0,
) -> dict:
    """Build the ``ComputedStructureEntry`` dict a :class:`CalcResult` carries for the hull.

    ``parameters["run_type"]`` is set to ``run_type``. MaterialsProject2020Compatibility only corrects entries
    whose run type is GGA or GGA+U (real VASP PBE runs); ``data["apply_mp2020"]`` says so explicitly for the hull.

    Parameters
    ----------
    structure : Structure
        Final structure.
    energy_ev : float
        Uncorrected total energy in eV.
    structure_id, fidelity, backend : str
        Put into ``entry.data`` (the hull and the ledger key on them).
    run_type : str
        E.g. "GGA", "GGA+U", "r2SCAN", "CHGNet-0.3.0 stand-in".
    parameters : dict, optional
        Extra calculation parameters (VASP: hubbards, potcar_spec, ...).
    data : dict, optional
        Extra data.
    correction_ev : float
        Correction already known (replay data sets that store one), in eV.
    """
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    if not math.isfinite(energy_ev):
        raise ValueError(f"{structure_id}: energy {energy_ev} is not finite")
    params = dict(parameters or {})
    params["run_type"] = run_type
    entry_data = dict(data or {})
    entry_data.update(
        structure_id=structure_id,
        fidelity=fidelity,
        backend=backend,
        apply_mp2020=run_type in MP2020_RUN_TYPES and backend == "vasp",
    )
    entry = ComputedStructureEntry(
        structure=structure,
        energy=energy_ev,
        correction=correction_ev,
        parameters=params,
        data=entry_data,
        entry_id=f"{structure_id}:{fidelity}:{backend}",
    )
    return entry.as_dict()
