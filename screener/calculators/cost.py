"""Cost model: what one calculation costs in CPU-hours, as a DFT user would budget it.

Plane-wave DFT cost per k-point grows as N^2 log N (FFTs over bands x plane waves) to N^3 (subspace
diagonalisation and orthogonalisation) in the number of atoms/electrons N. At fixed k-point density, as the MP
input sets use (KPPRA for PBE, KSPACING for r2SCAN), the number of k-points falls roughly as 1/N, so the cost of
a whole calculation for cells of 1-100 atoms scales between N^1 and N^2. We take ``exponent = 2.0``: the upper end,
which is conservative for budgets and matches the N^2 behaviour usually quoted for small cells; users with their
own timings override it. r2SCAN costs ``scan_to_pbe_ratio = 5`` PBE runs for the same cell by default (harder
SCF convergence, larger ENCUT 680 vs 520 eV, denser k-mesh, meta-GGA grids; users of MP's r2SCAN workflow quote
3-10x). A relaxation costs ``relax_factor`` static runs (ionic steps).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

__all__ = ["CostModel", "Fidelity"]

Fidelity = Literal["pbe", "scan"]


class CostModel(BaseModel):
    """CPU-hour cost of one calculation: ``base * (n_sites / reference_n_sites) ** exponent``.

    ``base`` is ``base_cpu_hours`` for PBE and ``base_cpu_hours * scan_to_pbe_ratio`` for r2SCAN; relaxations
    multiply by ``relax_factor``.

    Examples
    --------
    >>> model = CostModel()
    >>> model.cpu_hours(10, "pbe")
    4.0
    >>> model.cpu_hours(20, "scan")
    80.0
    """

    base_cpu_hours: float = Field(4.0, gt=0, description="CPU-hours of one PBE static run on the reference cell.")
    reference_n_sites: int = Field(10, gt=0, description="Number of sites of the reference cell.")
    exponent: float = Field(2.0, ge=0, description="Power of n_sites / reference_n_sites (see module docs).")
    scan_to_pbe_ratio: float = Field(5.0, gt=0, description="Cost of an r2SCAN run in units of a PBE run.")
    relax_factor: float = Field(5.0, ge=1, description="Cost of a relaxation in units of a static run.")

    @field_validator("exponent")
    @classmethod
    def _sane_exponent(cls, value: float) -> float:
        if value > 4:
            raise ValueError(f"exponent {value} is not plausible for plane-wave DFT (expected 1..3)")
        return value

    def cpu_hours(self, n_sites: int, fidelity: Fidelity, *, relax: bool = False) -> float:
        """Modelled cost of one calculation in CPU-hours.

        Parameters
        ----------
        n_sites : int
            Number of sites in the cell that is calculated.
        fidelity : {"pbe", "scan"}
            Functional level.
        relax : bool
            Whether the job relaxes the structure before the final static run.

        Returns
        -------
        float
            CPU-hours (core-hours).
        """
        if n_sites < 1:
            raise ValueError(f"n_sites must be >= 1, got {n_sites}")
        if fidelity not in ("pbe", "scan"):
            raise ValueError(f"fidelity must be 'pbe' or 'scan', got {fidelity!r}")
        base = self.base_cpu_hours * (self.scan_to_pbe_ratio if fidelity == "scan" else 1.0)
        cost = base * (n_sites / self.reference_n_sites) ** self.exponent
        return float(cost * (self.relax_factor if relax else 1.0))
