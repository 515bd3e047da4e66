"""Decode JSON from files, ledgers and job stores without running code named in it: check first, then decode.

monty's ``MontyDecoder`` imports whatever module a dict names (``@module``) and calls whatever class or function it
names (``@class``, ``@callable``); jobflow then runs whatever function a job dict names. A campaign folder, a job
store, a queue file or an entries file may come from someone else, so screener decodes none of them directly:
:func:`check` walks the raw JSON first and refuses any dict that names something not on an allow-list, before
anything is imported.

- Data (:data:`DATA_CLASSES`): pymatgen structures, compositions, lattices, entries and their energy adjustments,
  screener's CalcResult and FidelityHull, numpy arrays, datetimes, uuids.
- Jobs (``jobs=True``, queue files and job dicts): also jobflow's Job/Flow, screener's own job functions and the
  atomate2/pymatgen VASP makers and input sets its ``vasp`` back-end builds (:data:`JOB_CLASSES`,
  :data:`JOB_CALLABLES`). Keys that name a program to run (``vasp_cmd``, custodian ``handlers``, ...) are refused in
  jobs: commands come from the local atomate2 settings, never from data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from screener.errors import InvalidInputError

__all__ = [
    "DATA_CLASSES",
    "JOB_CLASSES",
    "JOB_CALLABLES",
    "TASK_DOC_CLASSES",
    "COMMAND_KEYS",
    "check",
    "decode",
    "read_json",
    "structure_from_dict",
    "entry_from_dict",
]

#: where pymatgen's entry classes live now, and where files written by older pymatgen versions say they live
_ENTRY_MODULES = ("pymatgen.core.entries", "pymatgen.entries.computed_entries")
_ENTRY_CLASSES = (
    "ComputedEntry",
    "ComputedStructureEntry",
    "EnergyAdjustment",
    "ConstantEnergyAdjustment",
    "ManualEnergyAdjustment",
    "CompositionEnergyAdjustment",
    "TemperatureEnergyAdjustment",
)

_COMPAT_MODULES = ("pymatgen.analysis.compatibility", "pymatgen.entries.compatibility")
_COMPAT_CLASSES = (
    "MaterialsProject2020Compatibility",
    "MaterialsProjectCompatibility",
    "MaterialsProjectAqueousCompatibility",
    "MITCompatibility",
    "MITAqueousCompatibility",
)

#: ``(@module, @class)`` pairs that data may name: structures, entries and plain value types.
DATA_CLASSES: frozenset[tuple[str, str]] = frozenset(
    [
        ("pymatgen.core.structure", "Structure"),
        ("pymatgen.core.structure", "IStructure"),
        ("pymatgen.core.lattice", "Lattice"),
        ("pymatgen.core.sites", "Site"),
        ("pymatgen.core.sites", "PeriodicSite"),
        ("pymatgen.core.composition", "Composition"),
        ("pymatgen.core.periodic_table", "Element"),
        ("pymatgen.core.periodic_table", "Species"),
        ("pymatgen.core.periodic_table", "DummySpecies"),
        ("pymatgen.core.periodic_table", "DummySpecie"),
        ("pymatgen.core.units", "FloatWithUnit"),
        ("pymatgen.core.units", "ArrayWithUnit"),
        *((module, cls) for module in _ENTRY_MODULES for cls in _ENTRY_CLASSES),
        ("pymatgen.entries.computed_entries", "GibbsComputedStructureEntry"),
        ("pymatgen.analysis.compatibility.computed_entries", "GibbsComputedStructureEntry"),
        # an energy adjustment records the compatibility scheme that made it (a config object, no code)
        *((module, cls) for module in _COMPAT_MODULES for cls in _COMPAT_CLASSES),
        ("pymatgen.entries.mixing_scheme", "MaterialsProjectDFTMixingScheme"),
        ("pymatgen.analysis.compatibility.mixing_scheme", "MaterialsProjectDFTMixingScheme"),
        ("pymatgen.analysis.phase_diagram", "PDEntry"),
        ("pymatgen.analysis.phase_diagram", "TransformedPDEntry"),
        ("screener.calculators.result", "CalcResult"),
        ("screener.hull.phase_diagram", "FidelityHull"),
        ("numpy", "array"),
        ("numpy", "ndarray"),
        ("datetime", "datetime"),
        ("uuid", "UUID"),
    ]
)

#: ``(@module, @class)`` pairs a job may name besides data: jobflow's containers, screener's maker, the atomate2
#: makers and pymatgen input sets of the ``vasp`` back-end (plain and double-relax, PBE and r2SCAN), job stores.
JOB_CLASSES: frozenset[tuple[str, str]] = DATA_CLASSES | frozenset(
    [
        ("jobflow.core.job", "Job"),
        ("jobflow.core.job", "JobConfig"),
        ("jobflow.core.job", "Response"),
        ("jobflow.core.flow", "Flow"),
        ("jobflow.core.reference", "OutputReference"),
        ("jobflow.core.reference", "OnMissing"),
        ("screener.calculators.standin", "StandinMaker"),
        ("atomate2.vasp.jobs.mp", "MPGGAStaticMaker"),
        ("atomate2.vasp.jobs.mp", "MPGGARelaxMaker"),
        ("atomate2.vasp.jobs.mp", "MPMetaGGAStaticMaker"),
        ("atomate2.vasp.jobs.mp", "MPMetaGGARelaxMaker"),
        ("atomate2.vasp.jobs.mp", "MPPreRelaxMaker"),
        ("atomate2.vasp.flows.mp", "MPGGADoubleRelaxMaker"),
        ("atomate2.vasp.flows.mp", "MPGGADoubleRelaxStaticMaker"),
        ("atomate2.vasp.flows.mp", "MPMetaGGADoubleRelaxMaker"),
        ("atomate2.vasp.flows.mp", "MPMetaGGADoubleRelaxStaticMaker"),
        ("pymatgen.io.vasp.sets", "MPStaticSet"),
        ("pymatgen.io.vasp.sets", "MPRelaxSet"),
        ("pymatgen.io.vasp.sets", "MPScanStaticSet"),
        ("pymatgen.io.vasp.sets", "MPScanRelaxSet"),
        # the job store a FireWorks task writes to
        ("jobflow.core.store", "JobStore"),
        ("screener.execution.stores", "AtomicJSONStore"),
        ("screener.execution.sqlite_store", "SQLiteStore"),
        ("maggma.stores.mongolike", "JSONStore"),
        ("maggma.stores.mongolike", "MemoryStore"),
        ("maggma.stores.mongolike", "MongoStore"),
        ("maggma.stores.mongolike", "MongoURIStore"),
    ]
)

#: ``(@module, @callable)`` pairs a job may name: screener's job functions, atomate2's VASP job function, and the
#: output types atomate2 names in its store configuration (classes referenced, never called while decoding).
JOB_CALLABLES: frozenset[tuple[str, str]] = frozenset(
    [
        ("screener.calculators.standin", "StandinMaker.make"),
        ("screener.calculators.replay", "replay_job"),
        ("screener.calculators.vasp", "taskdoc_to_calc_result"),
        ("screener.calculators.result", "CalcResult"),
        ("atomate2.vasp.jobs.base", "BaseVaspMaker.make"),
        ("emmet.core.tasks", "TaskDoc"),
        ("pymatgen.core.trajectory", "Trajectory"),
        ("pymatgen.electronic_structure.bandstructure", "BandStructure"),
        ("pymatgen.electronic_structure.bandstructure", "BandStructureSymmLine"),
        ("pymatgen.electronic_structure.dos", "CompleteDos"),
        ("pymatgen.electronic_structure.dos", "DOS"),
        ("pymatgen.electronic_structure.dos", "Dos"),
        ("pymatgen.io.vasp.outputs", "Chgcar"),
        ("pymatgen.io.vasp.outputs", "Locpot"),
        ("pymatgen.io.vasp.outputs", "Wavecar"),
    ]
)

#: ``(@module, @class)`` pairs a stored job output may name besides data, read back when a later job of the same
#: calculation uses it (the VASP conversion job reads atomate2's TaskDoc): emmet's task document, custodian's record
#: of the job it ran (its command is recorded, never run again), pymatgen's VASP input/output objects.
TASK_DOC_CLASSES: frozenset[tuple[str, str]] = DATA_CLASSES | frozenset(
    [
        ("emmet.core.tasks", "TaskDoc"),
        ("jobflow.core.schemas", "JobStoreDocument"),
        ("custodian.vasp.jobs", "VaspJob"),
        ("pymatgen.io.vasp.inputs", "Incar"),
        ("pymatgen.io.vasp.inputs", "Kpoints"),
        ("pymatgen.io.vasp.inputs", "Poscar"),
        ("pymatgen.io.vasp.outputs", "Outcar"),
        *((module, name) for module, name in JOB_CALLABLES if not module.startswith(("screener.", "atomate2."))),
    ]
)

#: keys that would name a program or hook to run (atomate2's ``run_vasp``, custodian); refused in jobs and in
#: back-end options that get stored in a campaign.
COMMAND_KEYS = frozenset(
    ["vasp_cmd", "vasp_gamma_cmd", "gamma_vasp_cmd", "vasp_ncl_cmd", "handlers", "validators", "terminate_func"]
)


def _refuse(what: str, where: str, named: str, jobs: bool) -> InvalidInputError:
    allowed = "structures, entries and screener's own calculation jobs" if jobs else "structures and entries"
    at = f" at {where}" if where else ""
    return InvalidInputError(
        f"{what}: refused to load {named}{at}: screener only loads {allowed} from data, nothing was run"
    )


def check(obj: Any, what: str, *, jobs: bool = False, task_docs: bool = False) -> None:
    """Raise :class:`InvalidInputError` if raw JSON ``obj`` names a class or function off the allow-list.

    Parameters
    ----------
    obj : Any
        Parsed JSON (dicts, lists, scalars), not yet decoded.
    what : str
        What it is, for the message (``"job <uuid>"``, a file name).
    jobs : bool
        Also allow jobflow jobs of screener's calculators (queue files, job dicts).
    task_docs : bool
        Also allow the task documents of atomate2's VASP jobs (:data:`TASK_DOC_CLASSES`; stored job outputs).
    """
    if isinstance(obj, Mapping) and not isinstance(obj, dict):
        obj = dict(obj)  # parsed JSON holds plain dicts below the top
    classes = JOB_CLASSES if jobs else TASK_DOC_CLASSES if task_docs else DATA_CLASSES
    callables = JOB_CALLABLES if jobs else frozenset()
    stack: list[Any] = [obj]
    while stack:  # iterative: a deeply nested file must not become a RecursionError traceback
        node = stack.pop()
        if isinstance(node, dict):
            if "@module" in node or "@class" in node or "@callable" in node:
                module, cls, func = node.get("@module"), node.get("@class"), node.get("@callable")
                # both keys are checked: MontyDecoder builds the @class when a dict names both
                if func is not None and (module, func) not in callables:
                    raise _refuse(what, _path_to(obj, node), f"function {module}.{func}", jobs)
                if (func is None or cls is not None) and (module, cls) not in classes:
                    raise _refuse(what, _path_to(obj, node), f"class {module}.{cls}", jobs)
            if jobs:
                for key in COMMAND_KEYS.intersection(node):
                    if node[key]:
                        raise _refuse(what, _path_to(obj, node, key), f"a command setting {key!r}", jobs)
            stack.extend(v for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, dict | list))


def _path_to(obj: Any, target: Any, key: str | None = None) -> str:
    """Where ``target`` sits in ``obj`` (``a.b[2].c``), for the message; only computed once something is refused."""
    stack: list[tuple[Any, str]] = [(obj, "")]
    while stack:
        node, where = stack.pop()
        if node is target:
            return f"{where}.{key}".lstrip(".") if key else where
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            if isinstance(v, dict | list):
                stack.append((v, f"{where}[{k}]" if isinstance(node, list) else f"{where}.{k}".lstrip(".")))
    return ""


def decode(obj: Any, what: str, *, jobs: bool = False) -> Any:
    """:func:`check` ``obj``, then decode it with ``MontyDecoder`` (objects for every allowed ``@class`` dict)."""
    from monty.json import MontyDecoder

    check(obj, what, jobs=jobs)
    return MontyDecoder().process_decoded(obj)


def read_json(path: str | Path, what: str | None = None) -> Any:
    """Parse a JSON file (``.gz``/``.bz2``/``.xz`` by extension) into plain dicts and lists, decoding nothing."""
    from monty.io import zopen

    path = Path(path)
    try:
        with zopen(str(path), "rt", encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError, EOFError) as exc:
        raise InvalidInputError(f"{what or path}: cannot read JSON ({exc})") from exc


def structure_from_dict(d: Mapping[str, Any], what: str) -> Any:
    """A pymatgen ``Structure`` from its dict, after :func:`check` (site properties may name classes)."""
    from pymatgen.core import Structure

    if not isinstance(d, Mapping):
        raise InvalidInputError(f"{what}: expected a structure (a JSON object), got {type(d).__name__}")
    d = dict(d)
    check(d, what)
    try:
        return Structure.from_dict(d)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InvalidInputError(f"{what}: not a valid structure ({type(exc).__name__}: {exc})") from exc


def entry_from_dict(d: Mapping[str, Any], what: str) -> Any:
    """A ``ComputedStructureEntry`` (a dict with a structure) or ``ComputedEntry``, after :func:`check`.

    pymatgen's own ``from_dict`` decodes ``energy_adjustments``, ``parameters`` and ``data`` with MontyDecoder, which
    is why the whole dict is checked first.
    """
    from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

    if not isinstance(d, Mapping):
        raise InvalidInputError(f"{what}: expected an entry (a JSON object), got {type(d).__name__}")
    d = dict(d)
    check(d, what)
    cls = ComputedStructureEntry if "structure" in d else ComputedEntry
    try:
        return cls.from_dict(d)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InvalidInputError(f"{what}: not a valid {cls.__name__} ({type(exc).__name__}: {exc})") from exc
