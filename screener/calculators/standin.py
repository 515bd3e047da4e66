"""Stand-in calculator: CHGNet through atomate2's force-field makers, labelled honestly as not DFT.

PBE level = CHGNet 0.3.0, r2SCAN level = CHGNet ``r2scan``. CHGNet 0.3.0 learned MP2020-*corrected* energies, so
its entries carry a non-GGA run type and ``apply_mp2020=False``: the hull must not correct them again.

Failure handling: a relaxation that crashes or does not reach ``fmax`` within ``relax_steps`` falls back once to a
static single point on the input structure (recorded in ``failure_reason`` with ``success=True``); a static run
that crashes or gives a non-finite energy is a ``CalcResult(success=False)`` with the reason.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobflow import Maker, job

from screener.calculators.base import calc_uuid, check_fidelity
from screener.calculators.chgnet_models import CHECKPOINTS, checkpoint_label, load_chgnet
from screener.calculators.cost import CostModel
from screener.calculators.result import CalcResult, make_entry_dict

if TYPE_CHECKING:
    import numpy as np
    from jobflow import Job
    from pymatgen.core import Structure

__all__ = ["StandinMaker", "StandinCalculator", "energies_batch", "CALL_COUNTS"]

logger = logging.getLogger(__name__)

#: number of stand-in calculations run in this process, per checkpoint (resume tests count them).
CALL_COUNTS: Counter = Counter()

_CALCULATOR_META = {"@module": "screener.calculators.chgnet_models", "@callable": "cached_chgnet_calculator"}


def _run_type(checkpoint: str) -> str:
    return f"CHGNet-{checkpoint} stand-in"


@dataclass
class StandinMaker(Maker):
    """One jobflow job: a CHGNet single point (optionally after a relaxation) -> :class:`CalcResult`.

    Parameters
    ----------
    name : str
        Job name.
    fidelity : {"pbe", "scan"}
        Which CHGNet checkpoint (``CHECKPOINTS[fidelity]``) plays the functional.
    relax : bool
        Relax cell and positions with atomate2's ``ForceFieldRelaxMaker`` first.
    relax_steps : int
        Maximum ionic steps of the relaxation.
    fmax_ev_per_a : float
        Force convergence criterion of the relaxation in eV/Angstrom.
    use_device : str or None
        Torch device of the model.
    cost_model : dict
        ``CostModel`` fields; the modelled DFT cost is what the result is charged.
    """

    name: str = "standin static"
    fidelity: str = "pbe"
    relax: bool = False
    relax_steps: int = 200
    fmax_ev_per_a: float = 0.05
    use_device: str | None = "cpu"
    cost_model: dict = field(default_factory=dict)

    @job(output_schema=CalcResult)
    def make(self, structure: Structure, structure_id: str) -> CalcResult:
        """Run the stand-in calculation of ``structure``; never raises for a failed calculation."""
        from atomate2.forcefields.jobs import ForceFieldRelaxMaker, ForceFieldStaticMaker

        fidelity = check_fidelity(self.fidelity)
        checkpoint = CHECKPOINTS[fidelity]
        label = checkpoint_label(checkpoint)
        cost = CostModel(**self.cost_model).cpu_hours(len(structure), fidelity, relax=self.relax)
        calc_kwargs = {"checkpoint": checkpoint, "use_device": self.use_device}
        CALL_COUNTS[checkpoint] += 1
        start = time.perf_counter()
        notes: list[str] = []
        doc = None
        attempts = 0
        if self.relax:
            attempts += 1
            relaxer = ForceFieldRelaxMaker(
                force_field_name=dict(_CALCULATOR_META),
                calculator_kwargs=calc_kwargs,
                steps=self.relax_steps,
                relax_kwargs={"fmax": self.fmax_ev_per_a},
            )
            try:
                doc = _run_maker(relaxer, structure)
                n_steps = (doc.output.n_steps or 0) if doc.output is not None else 0
                # atomate2 marks a run that hit the step limit "successful": check the step count too
                if not doc.is_force_converged or n_steps >= self.relax_steps:
                    notes.append(f"relaxation not converged in {self.relax_steps} steps")
                    doc = None
            except Exception as exc:  # noqa: BLE001 - any calculator crash is recorded, not raised
                notes.append(f"relaxation failed: {type(exc).__name__}: {exc}")
                doc = None
            if doc is None:
                notes.append("fallback: static single point on the input structure")
        if doc is None:
            attempts += 1
            static = ForceFieldStaticMaker(force_field_name=dict(_CALCULATOR_META), calculator_kwargs=calc_kwargs)
            try:
                doc = _run_maker(static, structure)
            except Exception as exc:  # noqa: BLE001
                notes.append(f"static single point failed: {type(exc).__name__}: {exc}")
                doc = None
        wall_time_s = time.perf_counter() - start
        energy = None if doc is None or doc.output is None else doc.output.energy
        if energy is None or not math.isfinite(energy):
            if doc is not None:
                notes.append(f"non-finite energy {energy}")
            logger.warning("stand-in %s %s failed: %s", structure_id, fidelity, "; ".join(notes))
            return CalcResult.failed(
                structure_id=structure_id,
                fidelity=fidelity,
                backend="standin",
                label=label,
                reason="; ".join(notes),
                n_sites=len(structure),
                cost_cpu_hours=cost,
                wall_time_s=wall_time_s,
                attempts=attempts,
            )
        final = doc.output.structure or structure
        energy = float(energy)
        run_type = _run_type(checkpoint)
        entry = make_entry_dict(
            final,
            energy,
            structure_id=structure_id,
            fidelity=fidelity,
            backend="standin",
            run_type=run_type,
            parameters={"calculator": "CHGNet", "checkpoint": checkpoint, "relaxed": bool(self.relax)},
            data={"label": label},
        )
        return CalcResult(
            structure_id=structure_id,
            fidelity=fidelity,
            backend="standin",
            label=label,
            success=True,
            failure_reason="; ".join(notes) or None,
            energy_ev=energy,
            energy_per_atom_ev=energy / len(final),
            n_sites=len(final),
            final_structure=final.as_dict(),
            run_type=run_type,
            wall_time_s=wall_time_s,
            cost_cpu_hours=cost,
            entry=entry,
            attempts=attempts,
        )


def _run_maker(maker: Any, structure: Structure) -> Any:
    """Run an atomate2 force-field maker's job function in this job (one jobflow job per calculation)."""
    return type(maker).make.original(maker, structure)


@dataclass
class StandinCalculator:
    """CHGNet stand-in back-end (the embedded default).

    Parameters
    ----------
    relax : bool
        Relax before the single point.
    relax_steps, fmax_ev_per_a : int, float
        Relaxation settings.
    use_device : str or None
        Torch device ("cpu", "cuda").
    cost_model : CostModel
        Modelled DFT cost each result is charged.
    """

    relax: bool = False
    relax_steps: int = 200
    fmax_ev_per_a: float = 0.05
    use_device: str | None = "cpu"
    cost_model: CostModel = field(default_factory=CostModel)
    name: str = "standin"

    def make_flow(
        self, structure: Structure, fidelity: str, structure_id: str, *, uuid: str | None = None, **kwargs: Any
    ) -> Job:
        """One job whose output is the :class:`CalcResult` (extra keywords such as ``pbe_band_gap_ev`` ignored).

        ``uuid`` (default: :func:`~screener.calculators.base.calc_uuid`) is the job's uuid: a campaign rebuilding an
        open job passes the one its ledger recorded.
        """
        fidelity = check_fidelity(fidelity)
        maker = StandinMaker(
            name=f"standin {'relax+static' if self.relax else 'static'} {fidelity}",
            fidelity=fidelity,
            relax=self.relax,
            relax_steps=self.relax_steps,
            fmax_ev_per_a=self.fmax_ev_per_a,
            use_device=self.use_device,
            cost_model=self.cost_model.model_dump(),
        )
        calc_job = maker.make(structure, structure_id)
        settings = f"relax={self.relax},steps={self.relax_steps},fmax={self.fmax_ev_per_a}"
        calc_job.set_uuid(uuid or calc_uuid(structure_id, fidelity, "standin", structure, settings))
        calc_job.metadata.update(
            structure_id=structure_id,
            fidelity=fidelity,
            backend="standin",
            n_sites=len(structure),
            label=checkpoint_label(CHECKPOINTS[fidelity]),
            cost_cpu_hours=self.estimate_cost_cpu_hours(structure, fidelity),
        )
        return calc_job

    def estimate_cost_cpu_hours(self, structure: Structure, fidelity: str) -> float:
        """Modelled DFT cost in CPU-hours of the calculation this back-end stands in for."""
        return self.cost_model.cpu_hours(len(structure), check_fidelity(fidelity), relax=self.relax)


def energies_batch(
    structures: Sequence[Structure],
    fidelity: str,
    *,
    batch_size: int = 64,
    use_device: str | None = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Stand-in energies of many structures at once (batched CHGNet ``predict_structure``), no jobflow.

    For the world builder, which labels thousands of structures.

    Parameters
    ----------
    structures : sequence of Structure
        Cells to label (not relaxed).
    fidelity : {"pbe", "scan"}
        Checkpoint to use.
    batch_size : int
        Structures per forward pass.
    use_device : str or None
        Torch device.
    progress : callable, optional
        Called as ``progress(n_done, n_total)`` after each batch.

    Returns
    -------
    ndarray, shape (n,)
        Energies in eV/atom.
    """
    import numpy as np

    fidelity = check_fidelity(fidelity)
    model = load_chgnet(CHECKPOINTS[fidelity], use_device)
    out = np.empty(len(structures), dtype=np.float64)
    CALL_COUNTS[CHECKPOINTS[fidelity]] += len(structures)
    for start in range(0, len(structures), batch_size):
        chunk = list(structures[start : start + batch_size])
        preds = model.predict_structure(chunk, task="e", batch_size=batch_size)
        if isinstance(preds, dict):
            preds = [preds]
        out[start : start + len(chunk)] = [float(np.asarray(p["e"]).reshape(-1)[0]) for p in preds]
        if progress is not None:
            progress(start + len(chunk), len(structures))
    return out
