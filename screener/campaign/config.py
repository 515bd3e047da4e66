"""Campaign configuration: what the user asked for, stored in the ledger so a resumed run needs no options."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from screener.policies.calibration import DEFAULT_EXPONENT_PRIOR

__all__ = ["CampaignConfig", "BACKENDS", "EXECUTORS", "BUDGET_UNITS", "FIDELITIES"]

BACKENDS = ("standin", "vasp", "replay")
EXECUTORS = ("local", "fireworks", "jobflow-remote")
BUDGET_UNITS = ("pbe-equivalent", "core-hours")
FIDELITIES = ("pbe", "scan")


class CampaignConfig(BaseModel):
    """Everything that defines a campaign; written once into the ledger (``meta.config``).

    Budget units: with ``budget_unit="pbe-equivalent"`` one unit is the modelled cost of one PBE single point of a
    median-size candidate (``unit_cpu_hours``, fixed when the campaign is created), so ``budget_total=20`` buys about
    20 PBE or 4 SCAN single points (SCAN ~ 5x PBE in the default cost model). With ``"core-hours"`` one unit is one
    CPU core-hour of the back-end's cost model (the real accounting for VASP).
    """

    model_config = ConfigDict(extra="forbid")

    budget_total: float = Field(..., gt=0, allow_inf_nan=False, description="Total budget in budget units.")
    budget_unit: Literal["pbe-equivalent", "core-hours"] = Field("pbe-equivalent", description="Unit of the budget.")
    unit_cpu_hours: float | None = Field(
        None, gt=0, description="CPU-hours of one budget unit (set at creation; 1 for core-hours)."
    )
    candidates: list[str] = Field(default_factory=list, description="Candidate files the campaign was created from.")
    model: str | None = Field(None, description="Folder of the initial (PBE) CGAT ensemble; None = shipped default.")
    scan_model: str | None = Field(
        None, description="Folder of an initial SCAN (r2SCAN) CGAT ensemble, e.g. the PBE model transferred on SCAN "
                          "data you already have (`screener train --init PBE_MODEL --transfer full`); None: SCAN "
                          "predictions come from the PBE model until the campaign's first SCAN results transfer it.")
    backend: Literal["standin", "vasp", "replay"] = Field("standin", description="Calculator back-end.")
    backend_options: dict[str, Any] = Field(default_factory=dict, description="Keyword options of get_calculator.")
    references: str = Field(
        "auto", description="Reference phases of the hulls: auto, standin, shipped, mp, world or an entries file."
    )
    require_competing_phases: bool = Field(
        False, description="Refuse to start when a candidate's PBE or SCAN hull holds only elements."
    )
    executor: Literal["local", "fireworks", "jobflow-remote"] = Field("local", description="Where jobs run.")
    executor_options: dict[str, Any] = Field(default_factory=dict, description="Keyword options of get_executor.")
    policy: str = Field("expected-value", description="Policy preset name or YAML path.")
    batch_size: int = Field(16, ge=1, description="Calculations acquired per round (at most).")
    max_rounds: int | None = Field(None, ge=1, description="Stop after this many rounds (None: until the budget ends).")
    seed: int = Field(0, description="Seed of every random choice (policy, fine-tuning).")
    stable_threshold_ev_per_atom: float = Field(
        0.0, description="E_hull at or below which a crystal counts as stable (discoveries, P(stable))."
    )
    spread_exponent_prior: float | None = Field(
        DEFAULT_EXPONENT_PRIOR, ge=0, le=1, description="Prior of the exponent of the spread calibration, sigma = "
        "scale * 0.1 * (std / 0.1)^exponent (eV/atom), refitted each round on the prospective errors: the ensemble "
        "std understates the error of confident predictions most (see screener.policies.calibration; maximum "
        "likelihood on the initial models' errors of whole pools: 0.29-0.35, bench/results/spread_exponent_*.json); "
        "null: one plain scale (exponent 1, campaigns before 2026-12). Where the initial model's calibration.json "
        "records an exponent (fitted on its held-out split), that takes the place of this prior.")
    fine_tune_epochs: int = Field(
        20, ge=0, description="Epochs of each round's fine-tuning, each on the round's new results plus as many "
        "earlier ones (0 = never fine-tune).")
    poll_interval_s: float = Field(30.0, gt=0, description="Seconds between polls of remote executors.")
    screener_version: str = Field("", description="screener version that created the campaign.")

    @field_validator("policy")
    @classmethod
    def _policy_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("policy must be a preset name or a YAML file")
        return value

    def to_budget_units(self, cost_cpu_hours: float) -> float:
        """Convert CPU-hours into budget units."""
        if self.unit_cpu_hours is None:
            raise ValueError("unit_cpu_hours is not set; the campaign was not created yet")
        return float(cost_cpu_hours) / self.unit_cpu_hours
