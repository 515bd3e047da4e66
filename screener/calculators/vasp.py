"""VASP back-end: atomate2's Materials Project makers, followed by a small job that makes a CalcResult.

- PBE: ``MPGGAStaticMaker`` (MP-compatible GGA/GGA+U; MP2020 applies on the hull), or
  ``MPGGADoubleRelaxStaticMaker`` with ``relax=True``.
- SCAN: ``MPMetaGGAStaticMaker`` (r2SCAN), or ``MPMetaGGADoubleRelaxStaticMaker`` with ``relax=True``. MP's r2SCAN
  k-point density (KSPACING) depends on the band gap: pass the PBE gap as ``pbe_band_gap_ev`` to ``make_flow`` and
  it is set as ``bandgap=`` on the r2SCAN input set generators.
- ``user_incar_settings`` / ``user_kpoints_settings`` / ``user_potcar_functional`` are passed to every input set
  generator. POTCARs are checked by pymatgen/atomate2 as usual (``VASP_PSP_DIR``; hash/symbol checks).

Failures: custodian's default handlers (atomate2's ``run_vasp``) fix what they can within the job. If the VASP job
still fails (exception, or an unsuccessful TaskDoc: non-converged electronic steps, wall time; the reason then names
custodian's handlers and errors from ``custodian.json`` in the run folder when it is readable), the conversion job
(``on_missing_references="none"``) records the failure and, once, replaces itself by a retry of the same maker
with ``retry_incar_settings`` (default ``ALGO = All``, ``NELM = 200``: the all-bands conjugate-gradient algorithm
and a larger SCF step limit, the usual manual fix for SCF convergence) followed by a final conversion. A second
failure is a ``CalcResult(success=False)``, charged the modelled cost of both attempts (the real use is unknown when
no TaskDoc exists).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobflow import Flow, Response, job
from jobflow.core.job import JobConfig
from jobflow.core.reference import OnMissing

from screener.calculators.base import calc_uuid, check_fidelity
from screener.calculators.cost import CostModel
from screener.calculators.result import CalcResult, make_entry_dict
from screener.errors import InvalidInputError

if TYPE_CHECKING:
    from jobflow import Maker
    from pymatgen.core import Structure

__all__ = ["VaspCalculator", "taskdoc_to_calc_result", "DEFAULT_RETRY_INCAR"]

logger = logging.getLogger(__name__)

#: INCAR changes of the one retry after a failed VASP job.
DEFAULT_RETRY_INCAR = {"ALGO": "All", "NELM": 200}

_LABELS = {
    "pbe": "VASP PBE (GGA/GGA+U), Materials Project input set (atomate2 MPGGAStaticMaker)",
    "scan": "VASP r2SCAN, Materials Project input set (atomate2 MPMetaGGAStaticMaker)",
}


@dataclass
class VaspCalculator:
    """VASP through atomate2 makers.

    Parameters
    ----------
    relax : bool
        Double relaxation before the static run (MP's double-relax-static flows).
    user_incar_settings, user_kpoints_settings : dict
        Overrides for every input set generator (pymatgen semantics).
    user_potcar_functional : str, optional
        E.g. "PBE_54"; None keeps the input set's default.
    run_vasp_kwargs : dict
        Passed to atomate2's ``run_vasp`` (``max_errors``, ``wall_time``, ...). Commands and custodian handlers
        (``vasp_cmd``, ``handlers``, ...) are refused: they would be stored in the campaign and run by whoever resumes
        a copy of it; set them in atomate2's settings (``ATOMATE2_VASP_CMD``, ``~/.atomate2.yaml``) instead.
    retry_incar_settings : dict
        INCAR changes of the single retry after a failure (empty dict: no retry).
    cost_model : CostModel
        Modelled cost, used for estimates and for failed runs without a TaskDoc.
    """

    relax: bool = False
    user_incar_settings: dict = field(default_factory=dict)
    user_kpoints_settings: dict = field(default_factory=dict)
    user_potcar_functional: str | None = None
    run_vasp_kwargs: dict = field(default_factory=dict)
    retry_incar_settings: dict = field(default_factory=lambda: dict(DEFAULT_RETRY_INCAR))
    cost_model: CostModel = field(default_factory=CostModel)
    name: str = "vasp"

    def __post_init__(self) -> None:
        from screener._safe_json import COMMAND_KEYS

        named = sorted(_keys(self.run_vasp_kwargs) & COMMAND_KEYS)
        if named:
            raise InvalidInputError(
                f"run_vasp_kwargs may not set {', '.join(named)}: commands come from atomate2's settings "
                "(ATOMATE2_VASP_CMD or VASP_CMD in ~/.atomate2.yaml), never from a campaign that others may resume"
            )

    def make_maker(self, fidelity: str, *, pbe_band_gap_ev: float | None = None) -> Maker:
        """The atomate2 maker for ``fidelity`` with this calculator's settings applied."""
        from atomate2.vasp.flows.mp import MPGGADoubleRelaxStaticMaker, MPMetaGGADoubleRelaxStaticMaker
        from atomate2.vasp.jobs.mp import MPGGAStaticMaker, MPMetaGGAStaticMaker

        fidelity = check_fidelity(fidelity)
        if fidelity == "pbe":
            maker = MPGGADoubleRelaxStaticMaker() if self.relax else MPGGAStaticMaker()
        else:
            maker = MPMetaGGADoubleRelaxStaticMaker() if self.relax else MPMetaGGAStaticMaker()
        makers = _vasp_makers(maker)
        for i, vasp_maker in enumerate(makers):
            gen = vasp_maker.input_set_generator
            if self.user_incar_settings:
                gen.user_incar_settings = {**(gen.user_incar_settings or {}), **self.user_incar_settings}
            if self.user_kpoints_settings:
                gen.user_kpoints_settings = {**(gen.user_kpoints_settings or {}), **self.user_kpoints_settings}
            if self.user_potcar_functional:
                gen.user_potcar_functional = self.user_potcar_functional
            # the PBE gap sets the k-mesh of the first r2SCAN-family run; later steps of a relax flow read the gap
            # of their previous (r2SCAN) step from its vasprun, as atomate2 does
            if fidelity == "scan" and pbe_band_gap_ev is not None and hasattr(gen, "bandgap") and i == 0:
                gen.bandgap = float(pbe_band_gap_ev)
            if self.run_vasp_kwargs:
                vasp_maker.run_vasp_kwargs = {**vasp_maker.run_vasp_kwargs, **self.run_vasp_kwargs}
        # the conversion job must see an unsuccessful final run instead of being skipped; earlier steps of a relax
        # flow keep atomate2's default (a failed relaxation stops the static run, and the conversion sees None)
        final = getattr(maker, "static_maker", None) or maker
        final.stop_children_kwargs = {**final.stop_children_kwargs, "handle_unsuccessful": False}
        return maker

    def make_flow(
        self,
        structure: Structure,
        fidelity: str,
        structure_id: str,
        *,
        pbe_band_gap_ev: float | None = None,
        uuid: str | None = None,
        **kwargs: Any,
    ) -> Flow:
        """Flow [atomate2 VASP job(s), conversion job]; its output is the conversion job's CalcResult.

        Parameters
        ----------
        structure : Structure
            Cell to calculate.
        fidelity : {"pbe", "scan"}
            Functional level.
        structure_id : str
            Candidate id (links the fidelities).
        pbe_band_gap_ev : float, optional
            PBE band gap of this structure, for the r2SCAN KSPACING rule.
        uuid : str, optional
            Uuid of the conversion job, whose output is the flow's result (default:
            :func:`~screener.calculators.base.calc_uuid`); a campaign rebuilding an open job passes the recorded one.
        """
        fidelity = check_fidelity(fidelity)
        maker = self.make_maker(fidelity, pbe_band_gap_ev=pbe_band_gap_ev)
        vasp_part = maker.make(structure)
        settings = repr(
            (self.relax, sorted(self.user_incar_settings.items()), sorted(self.user_kpoints_settings.items()),
             self.user_potcar_functional, pbe_band_gap_ev if fidelity == "scan" else None)
        )
        cost = self.estimate_cost_cpu_hours(structure, fidelity)
        convert = taskdoc_to_calc_result(
            vasp_part.output,
            structure=structure,
            structure_id=structure_id,
            fidelity=fidelity,
            maker=maker,
            retry_incar_settings=self.retry_incar_settings,
            modelled_cost_cpu_hours=cost,
            attempt=1,
        )
        convert.name = f"to CalcResult {fidelity}"
        convert.set_uuid(uuid or calc_uuid(structure_id, fidelity, "vasp", structure, settings))
        # Only the conversion job needs a deterministic uuid (collect finds results by it); the atomate2 jobs keep
        # theirs (their internal references depend on them) and are found again through the executor's queue.
        meta = {
            "structure_id": structure_id,
            "fidelity": fidelity,
            "backend": "vasp",
            "n_sites": len(structure),
            "label": _LABELS[fidelity],
            "cost_cpu_hours": cost,
        }
        convert.metadata.update(meta)
        return Flow([vasp_part, convert], output=convert.output, name=f"{structure_id} {fidelity} vasp")

    def estimate_cost_cpu_hours(self, structure: Structure, fidelity: str) -> float:
        """Modelled cost in CPU-hours."""
        return self.cost_model.cpu_hours(len(structure), check_fidelity(fidelity), relax=self.relax)


def _keys(obj: Any) -> set[str]:
    """Every dict key in a nested structure of dicts and lists."""
    if isinstance(obj, dict):
        return set(obj) | {k for v in obj.values() for k in _keys(v)}
    if isinstance(obj, list | tuple):
        return {k for v in obj for k in _keys(v)}
    return set()


def _jobs(obj: Any) -> list:
    from jobflow import Flow as _Flow

    if isinstance(obj, _Flow):
        return [j for item in obj.jobs for j in _jobs(item)]
    return [obj]


def _vasp_makers(maker: Any) -> list:
    """All makers with an input set generator inside ``maker`` (itself included)."""
    found = []
    if hasattr(maker, "input_set_generator"):
        found.append(maker)
    for value in vars(maker).values():
        if hasattr(value, "make") and hasattr(value, "name") and value is not maker:
            found.extend(_vasp_makers(value))
    return found


def _cpu_hours(task_doc: Any) -> float | None:
    """CPU-hours from custodian/VASP run statistics (total time x cores), None if unknown."""
    total = 0.0
    for stats in (getattr(task_doc, "run_stats", None) or {}).values():
        seconds = getattr(stats, "total_time", None) or getattr(stats, "elapsed_time", None)
        cores = getattr(stats, "cores", None) or 1
        if seconds:
            total += float(seconds) * float(cores) / 3600.0
    return total or None


# no output_schema: jobflow's replace-by-Flow inserts a store_inputs job that inherits it and then fails the check
@job(config=JobConfig(on_missing_references=OnMissing.NONE))
def taskdoc_to_calc_result(
    task_doc: Any,
    *,
    structure: Structure,
    structure_id: str,
    fidelity: str,
    maker: Maker,
    retry_incar_settings: dict,
    modelled_cost_cpu_hours: float,
    attempt: int = 1,
) -> CalcResult | Response:
    """Turn an atomate2 VASP TaskDoc into a CalcResult; on failure retry once with ``retry_incar_settings``.

    ``task_doc`` is None when the VASP job raised (jobflow passes None for a missing reference).
    """
    label = _LABELS[fidelity]
    reason = None
    state = str(getattr(getattr(task_doc, "state", None), "value", getattr(task_doc, "state", "")))
    if task_doc is None:
        reason = f"VASP job of attempt {attempt} failed without output (custodian could not fix it; see its run folder)"
    elif state.lower() != "successful" or task_doc.output is None or task_doc.output.energy is None:
        reason = f"VASP run of attempt {attempt} unsuccessful (state={state or 'unknown'})"
        why = _custodian_reason_of(task_doc)
        if why:
            reason = f"{why} (attempt {attempt}, state={state or 'unknown'})"
    if reason is not None:
        logger.warning("%s %s: %s", structure_id, fidelity, reason)
        if attempt == 1 and retry_incar_settings:
            from atomate2.vasp.powerups import update_user_incar_settings

            retry_maker = update_user_incar_settings(maker, dict(retry_incar_settings))
            retry_vasp = retry_maker.make(structure)
            final = taskdoc_to_calc_result(
                retry_vasp.output,
                structure=structure,
                structure_id=structure_id,
                fidelity=fidelity,
                maker=retry_maker,
                retry_incar_settings={},
                modelled_cost_cpu_hours=modelled_cost_cpu_hours,
                attempt=2,
            )
            final.name = f"to CalcResult {fidelity} (retry)"
            return Response(replace=Flow([retry_vasp, final], output=final.output))
        used = (_cpu_hours(task_doc) if task_doc is not None else None) or modelled_cost_cpu_hours * attempt
        return CalcResult.failed(
            structure_id=structure_id,
            fidelity=fidelity,
            backend="vasp",
            label=label,
            reason=reason + (f"; the retry used user INCAR settings {maker_incar_note(maker)}" if attempt > 1 else ""),
            n_sites=len(structure),
            cost_cpu_hours=used,
            attempts=attempt,
        )

    final_structure = task_doc.output.structure or structure
    energy = float(task_doc.output.energy)
    run_type = str(getattr(task_doc.run_type, "value", task_doc.run_type))
    params: dict = {}
    if task_doc.entry is not None:
        params = {k: v for k, v in (task_doc.entry.parameters or {}).items() if k != "run_type"}
    entry = make_entry_dict(
        final_structure,
        energy,
        structure_id=structure_id,
        fidelity=fidelity,
        backend="vasp",
        run_type=run_type,
        parameters=params,
        data={"label": label, "task_label": task_doc.task_label, "dir_name": task_doc.dir_name},
    )
    wall = None
    if task_doc.run_stats:
        wall = sum(float(getattr(s, "elapsed_time", 0.0) or 0.0) for s in task_doc.run_stats.values()) or None
    gap = getattr(task_doc.output, "bandgap", None)
    return CalcResult(
        structure_id=structure_id,
        fidelity=fidelity,
        backend="vasp",
        label=label,
        success=True,
        failure_reason=None if attempt == 1 else f"succeeded on retry with {maker_incar_note(maker)}",
        energy_ev=energy,
        energy_per_atom_ev=energy / len(final_structure),
        n_sites=len(final_structure),
        final_structure=final_structure.as_dict(),
        run_type=run_type,
        wall_time_s=wall,
        cost_cpu_hours=_cpu_hours(task_doc) or modelled_cost_cpu_hours,
        band_gap_ev=None if gap is None else float(gap),
        entry=entry,
        attempts=attempt,
        job_dir=task_doc.dir_name,
    )


def _custodian_reason_of(task_doc: Any) -> str | None:
    """custodian's account of an unsuccessful run, from ``custodian.json`` in its folder (``dir_name`` is atomate2's
    ``host:/path``); None when the folder cannot be read here or custodian recorded nothing."""
    from screener.execution.custodian_log import custodian_reason

    dir_name = str(getattr(task_doc, "dir_name", None) or "")
    if ":" in dir_name and not dir_name.startswith("/"):
        dir_name = dir_name.split(":", 1)[1]
    return custodian_reason([dir_name]) if dir_name else None


def maker_incar_note(maker: Any) -> str:
    """The user INCAR settings of ``maker``'s (first) input set generator, for messages."""
    makers = _vasp_makers(maker)
    return str(makers[0].input_set_generator.user_incar_settings) if makers else "{}"
