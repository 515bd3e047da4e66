"""The campaign's hulls: two :class:`screener.hull.FidelityHull` (PBE, SCAN) behind the loop's ``Hulls`` interface.

Each hull starts from the elemental references of its functional AND the known competing phases of every
candidate's chemical system and its subsystems (like Materials Project's GGA and r2SCAN sets), so that "stable"
means on or below a real hull, not a hull of elements. Per ``references``:

``auto``
    the back-end's own set: ``standin`` for the stand-in back-end, ``mp`` from the local cache only for ``vasp``
    (never contacts a server), ``world`` for ``replay``.
``standin``
    stand-in elemental ground states (MP lowest-energy polymorphs) and the shipped known phases
    (``screener/data/known_phases/``: real MP structures), all labelled with the stand-in calculators themselves
    (CHGNet 0.3.0 for PBE, CHGNet r2scan for SCAN): a stand-in hull must use energies of the same calculator.
    Elements the shipped set lacks are computed once at creation and not charged to the budget.
``shipped``
    only the shipped DFT elemental references (MP GGA for PBE, MatPES r2SCAN for SCAN): no competing phases.
``mp``
    Materials Project entries (GGA/GGA+U with MP2020; r2SCAN) of the candidates' systems through mp-api, cached in
    ``~/.cache/screener/mp`` (:func:`screener.hull.get_mp_entries`): asks the server for what is not cached.
``world``
    the replay data set's own entries of the candidates' systems (both fidelities), with the world's elemental
    references (``<world>/references.json.bz2``) when the data set is a world.
a file
    ComputedEntry JSON with ``data["fidelity"]`` on each entry (``screener.hull.load_entries``).

Whatever the source, a known phase that is one of the candidates (same id, or the same structure by
``StructureMatcher``) is that candidate's *twin*: it stays on both hulls (a real competitor of every other
candidate) and is left out only where that candidate itself is judged (its predicted and computed E_hull, its
stability): the candidate is measured against the hull without its twin, and flagged as a rediscovery of the known
phase (``meta["candidate_twins"]``, copied into the ledger). ``references.json`` records what was used (``meta``),
and :meth:`CampaignHulls.competing_phase_counts` says how many competing phases each hull holds in a chemical system.

"Stable" means an E_hull at most the campaign's ``stable_threshold_ev_per_atom`` (default 0) above the hull of that
fidelity, judged without the candidate's twin: :meth:`CampaignHulls.snapshot` records each computed structure's
E_hull and the ids that pass, which ``screener status``, the console and the report read.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from screener.errors import InvalidInputError

__all__ = ["CampaignHulls", "prepare_references", "record_competing_phases", "REFERENCES_FILENAME",
           "REFERENCE_MODES", "COMPETING_PHASES_META", "CANDIDATE_TWINS_META", "candidate_twins_of"]

logger = logging.getLogger(__name__)

REFERENCES_FILENAME = "references.json"
#: ``references.json`` meta and ledger meta key: ``{candidate id: [keys of the known phases it matches]}``.
CANDIDATE_TWINS_META = "candidate_twins"


REFERENCE_MODES = ("auto", "standin", "shipped", "mp", "world")


def prepare_references(
    campaign_dir: Path,
    mode: str,
    elements: Iterable[str],
    backend: str,
    *,
    candidates: Mapping[str, Any] | None = None,
    backend_options: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``<campaign>/references.json`` (once) with the reference entries of both hulls; return its path.

    Parameters
    ----------
    campaign_dir : path
    mode : str
        ``auto``, ``standin``, ``shipped``, ``mp``, ``world`` or an entries file (module docstring).
    elements : iterable of str
        Elements that need a reference (those of the candidates).
    backend : str
        The campaign's back-end (what ``auto`` resolves to).
    candidates : mapping of id to Structure, optional
        The candidates: the known phases of their chemical systems are loaded, and any known phase that IS a
        candidate is left out. Without them only elemental references are written.
    backend_options : mapping, optional
        The back-end's options (``path`` of a replay data set).
    """
    path = Path(campaign_dir) / REFERENCES_FILENAME
    if path.exists():
        return path
    from monty.json import MontyEncoder

    elements = sorted(set(elements))
    candidates = dict(candidates or {})
    systems = sorted({"-".join(sorted(str(el) for el in s.composition.elements)) for s in candidates.values()})
    requested = mode
    if mode == "auto":
        mode = {"standin": "standin", "vasp": "mp-cache", "replay": "world"}.get(backend, "shipped")
    meta: dict[str, Any] = {"requested": requested, "mode": mode, "backend": backend, "systems": systems}
    known: dict[str, list[Any]] = {"pbe": [], "scan": []}
    if mode == "shipped":
        entries = _shipped_elements(elements)
    elif mode == "standin":
        entries, known, meta["sources"] = _standin_references(elements, systems)
    elif mode in ("mp", "mp-cache"):
        known, meta["not_cached"] = _mp_known(systems, offline=mode == "mp-cache")
        entries = _shipped_elements(elements, covered=known)
        meta["sources"] = "Materials Project entries (mp-api cache) + shipped elemental references"
    elif mode == "world":
        entries, known, meta["sources"] = _world_references(elements, systems, backend_options or {})
    else:
        from screener.hull import load_entries
        from screener.hull.corrections import entry_fidelity

        if not Path(mode).is_file():
            raise InvalidInputError(f"references {mode!r}: not one of {', '.join(REFERENCE_MODES)} or an entries file")
        loaded = load_entries([mode])
        entries = {f: [e for e in loaded if entry_fidelity(e) == f] for f in ("pbe", "scan")}
        meta["sources"] = str(Path(mode).resolve())
    if candidates and meta["mode"] == "world":
        # a replay data set holds the candidates' own (hidden) answers, not known phases: they stay off every hull
        # until bought, or a replayed campaign would start from the true hull of all its candidates
        from screener.hull.known_phases import CandidateIndex, exclude_candidates

        excluded: dict[str, str] = {}
        index = CandidateIndex(candidates)
        for f in ("pbe", "scan"):
            known[f], dropped = exclude_candidates(known[f], index)
            excluded.update(dropped)
        meta["excluded_as_candidates"] = excluded
        meta[CANDIDATE_TWINS_META] = {}
    elif candidates:
        from screener.hull.known_phases import CandidateIndex, candidate_twins

        twins: dict[str, list[str]] = {}
        index = CandidateIndex(candidates)  # one for all four lists: each structure is compared once
        for f in ("pbe", "scan"):
            for group in (entries, known):
                group[f], found = candidate_twins(group[f], index)
                for cid, keys in found.items():
                    twins.setdefault(cid, [])
                    twins[cid] += [k for k in keys if k not in twins[cid]]
        if twins:  # kept on the hulls for the other candidates; left out only when their own candidate is judged
            logger.info("%d candidate(s) match a known phase (rediscoveries, judged without their twin): %s",
                        len(twins), ", ".join(f"{c} (= {', '.join(k)})" for c, k in sorted(twins.items())[:10]))
        meta[CANDIDATE_TWINS_META] = {c: sorted(k) for c, k in sorted(twins.items())}
    entries = {f: entries[f] + known[f] for f in ("pbe", "scan")}
    meta["n_entries"] = {f: len(entries[f]) for f in ("pbe", "scan")}
    tmp = path.with_suffix(".tmp")
    doc = {f: [e.as_dict() for e in es] for f, es in entries.items()}
    doc["meta"] = meta
    tmp.write_text(json.dumps(doc, cls=MontyEncoder))
    tmp.replace(path)
    return path


def _shipped_elements(elements: list[str], covered: Mapping[str, list[Any]] | None = None) -> dict[str, list[Any]]:
    """Shipped DFT elemental references (MP GGA, MatPES r2SCAN) of the elements ``covered`` entries lack."""
    from screener.hull import reference_entries

    out = {}
    for f in ("pbe", "scan"):
        have = {str(e.composition.elements[0]) for e in (covered or {}).get(f, []) if len(e.composition.elements) == 1}
        out[f] = reference_entries(f, elements=[el for el in elements if el not in have])
    return out


def _standin_references(elements: list[str], systems: list[str]
                        ) -> tuple[dict[str, list[Any]], dict[str, list[Any]], str]:
    """Stand-in elemental references (shipped, else computed now) and the shipped stand-in known phases."""
    from screener.hull.known_phases import (
        read_known_phases,
        standin_elemental_references,
        standin_known_phases,
    )

    entries = {f: standin_elemental_references(elements, f) for f in ("pbe", "scan")}
    have = {str(e.composition.elements[0]) for e in entries["pbe"]}
    missing = [el for el in elements if el not in have]
    if missing:  # elements the shipped set lacks: computed with the stand-in now (set-up, not charged)
        from screener.calculators.standin import energies_batch
        from screener.hull import elemental_reference_structures, make_reference_entries

        structures = {}
        for el in missing:  # MP's lowest-energy polymorph; MatPES's ground state where MP's file lacks the element
            try:
                structures.update(elemental_reference_structures([el], source="mp-polymorphs"))
            except InvalidInputError:
                structures.update(elemental_reference_structures([el], source="matpes"))
        for fidelity in ("pbe", "scan"):
            e_per_atom = energies_batch(list(structures.values()), fidelity)
            energies = {el: float(e) * len(s) for (el, s), e in zip(structures.items(), e_per_atom, strict=True)}
            entries[fidelity] += make_reference_entries(structures, energies, fidelity, backend="standin",
                                                        label="stand-in elemental reference (CHGNet)")
    known = {f: standin_known_phases(systems, f) for f in ("pbe", "scan")} if systems else {"pbe": [], "scan": []}
    command = read_known_phases().get("command", "")
    return entries, known, f"shipped stand-in known phases (screener/data/known_phases, built by `{command}`)"


def _mp_known(systems: list[str], *, offline: bool) -> tuple[dict[str, list[Any]], list[str]]:
    """Materials Project entries of every system (subsystems included) at both fidelities, de-duplicated by id.

    ``offline``: the cache only; a system without cached entries is listed (its hulls will hold only elements).
    """
    from screener.errors import OfflineError
    from screener.hull import get_mp_entries

    known: dict[str, dict[str, Any]] = {"pbe": {}, "scan": {}}
    not_cached: list[str] = []
    for chemsys in systems:
        for f in ("pbe", "scan"):
            try:
                entries = get_mp_entries(chemsys, fidelity=f, offline=offline)
            except OfflineError:
                if not offline:
                    raise
                not_cached.append(f"{chemsys} ({f})")
                continue
            for e in entries:
                known[f].setdefault(str(e.entry_id), e)
    if not_cached:
        logger.warning(
            "no cached Materials Project entries for %s: those hulls hold only elements; download them with "
            "--references mp (needs mp-api and MP_API_KEY) or give --references FILE",
            ", ".join(not_cached[:8]) + (f" and {len(not_cached) - 8} more" if len(not_cached) > 8 else ""))
    return {f: list(v.values()) for f, v in known.items()}, not_cached


def _world_references(elements: list[str], systems: list[str], options: Mapping[str, Any]
                      ) -> tuple[dict[str, list[Any]], dict[str, list[Any]], str]:
    """The replay data set's entries of the candidates' systems and its world's elemental references."""
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    from screener._safe_json import structure_from_dict
    from screener.hull.known_phases import subsystems

    raw = options.get("path")
    paths = [str(p) for p in (raw if isinstance(raw, list | tuple) else [raw] if raw else [])]
    if not paths:
        raise InvalidInputError("--references world needs the replay data set (--backend-option path=...)")
    from screener.calculators.replay import load_replay_dataset

    dataset = load_replay_dataset([str(Path(p).resolve()) for p in paths], options.get("id_key", "structure_id"),
                                  options.get("default_fidelity"))
    wanted = subsystems(systems)

    def entry(item: Mapping[str, Any], sid: str, fidelity: str) -> Any:
        # built field by field (no MontyDecoder): the data set is data, never code
        return ComputedStructureEntry(
            structure_from_dict(item["structure"], f"replay data set entry {sid}"), float(item["energy"]),
            correction=float(item.get("correction") or 0.0),
            parameters={"run_type": str((item.get("parameters") or {}).get("run_type") or f"replayed {fidelity}")},
            data={"fidelity": fidelity, "backend": "replay", "structure_id": sid, "apply_mp2020": False,
                  "known_phase": True},
            entry_id=sid,
        )

    known: dict[str, list[Any]] = {"pbe": [], "scan": []}
    elemental: dict[str, list[Any]] = {"pbe": [], "scan": []}
    for (sid, fidelity), item in dataset.entries.items():
        species = {"".join(c for c in str(sp["element"]) if c.isalpha())
                   for site in item["structure"]["sites"] for sp in site["species"]}
        if frozenset(species) in wanted:
            (elemental if len(species) == 1 else known)[fidelity].append(entry(item, sid, fidelity))
    refs: dict[str, list[Any]] = {"pbe": [], "scan": []}
    for p in paths:  # a world's shard <world>/<fidelity>/part_000.json.bz2: its elemental references
        world_refs = Path(p).resolve().parent.parent / "references.json.bz2"
        if world_refs.is_file():
            from screener.world.io import read_json_bz2

            for item in read_json_bz2(world_refs):
                f = (item.get("data") or {}).get("fidelity")
                el = {"".join(c for c in str(sp["element"]) if c.isalpha())
                      for site in item["structure"]["sites"] for sp in site["species"]}
                if f in refs and len(el) == 1 and next(iter(el)) in elements:
                    refs[f].append(entry(item, str((item.get("data") or {}).get("structure_id") or f"ref:{el}"), f))
            break
    for f in ("pbe", "scan"):
        refs[f] += elemental[f]
    shipped = _shipped_elements(elements, covered=refs)
    for f in ("pbe", "scan"):
        if shipped[f]:
            logger.warning("the replay data set has no %s reference for %s: shipped DFT references used", f,
                           ", ".join(str(e.composition.elements[0]) for e in shipped[f]))
        refs[f] += shipped[f]
    return refs, known, f"replay data set {', '.join(paths)}"


COMPETING_PHASES_META = "competing_phases"


def record_competing_phases(ledger: Any, hulls: Any, chemsys_by_id: Mapping[str, str], *,
                            require: bool = False) -> dict[str, Any]:
    """Count the competing phases each hull holds per chemical system, record it, warn (or refuse) where none.

    Written to the ledger's meta key ``competing_phases`` (``{"systems": {chemsys: {"pbe": n, "scan": n}},
    "candidates": {id: {"chemsys", "pbe", "scan"}}, "elements_only": {chemsys: [fidelities]}, "references": ...}``)
    and as a ``hulls`` event, so the report and ``screener status`` can show it per candidate.

    Raises
    ------
    InvalidInputError
        ``require`` and some candidate's PBE or SCAN hull holds only elements.
    """
    counts = getattr(hulls, "competing_phase_counts", None)
    if counts is None:  # a Hulls implementation without known phases (test fakes)
        return {}
    systems = {cs: counts(cs) for cs in sorted(set(chemsys_by_id.values()))}
    twins = {sid: keys for sid, keys in getattr(hulls, "twins", {}).items() if sid in chemsys_by_id}
    elements_only = {cs: [f for f in ("pbe", "scan") if n[f] == 0] for cs, n in systems.items()
                     if min(n.values()) == 0}
    meta = dict(getattr(hulls, "meta", {}) or {})
    record = {
        "systems": systems,
        # a candidate's own twin is not its competitor: counted without it
        "candidates": {sid: {"chemsys": cs, **(counts(cs, exclude=twins[sid]) if sid in twins else systems[cs])}
                       for sid, cs in chemsys_by_id.items()},
        "elements_only": elements_only,
        "references": {k: meta[k] for k in ("requested", "mode", "sources", "not_cached") if k in meta},
        "n_excluded_as_candidates": len(meta.get("excluded_as_candidates") or {}),
        "n_candidates_matching_known_phases": len(twins),
    }
    n = [v for counts_ in systems.values() for v in counts_.values()]
    summary = (f"competing phases on the hulls (compounds, elements not counted) in {len(systems)} chemical "
               f"system(s): PBE {sum(v['pbe'] for v in systems.values())}, SCAN "
               f"{sum(v['scan'] for v in systems.values())} in all, at least {min(n) if n else 0} per system")
    if elements_only:
        listed = sorted(elements_only.items())
        names = ", ".join(f"{cs} ({'/'.join(f.upper() for f in fs)})" for cs, fs in listed[:10])
        if len(listed) > 10:  # one readable line, not hundreds of systems (all are in the ledger record)
            names += f" and {len(listed) - 10} more"
        message = (f"{len(elements_only)} of {len(systems)} chemical system(s) have a hull that holds ONLY ELEMENTS, "
                   f"so nearly every compound there will be called stable: {names}; give known phases with "
                   "--references FILE (or mp for MP entries), or --require-competing-phases to refuse this")
        if require:
            raise InvalidInputError(
                f"--require-competing-phases: no known competing phase on the hull of {names}; give them with "
                "--references FILE (or --references mp)")
        logger.warning("%s", message)
        summary += f"; {message}"
    else:
        logger.info("%s", summary)
    if twins:
        summary += (f"; {len(twins)} candidate(s) ARE known phases (rediscoveries, each judged without its twin): "
                    + ", ".join(f"{sid} = {', '.join(keys)}" for sid, keys in sorted(twins.items())[:10]))
    ledger.set_meta(COMPETING_PHASES_META, record)
    ledger.set_meta(CANDIDATE_TWINS_META, {sid: list(keys) for sid, keys in sorted(twins.items())})
    ledger.log_event("hulls", summary, data={"elements_only": elements_only,
                                              "candidate_twins": {s: list(k) for s, k in sorted(twins.items())}})
    return record


def _entry(entry: Mapping[str, Any] | Any, what: str = "a result entry") -> Any:
    if not isinstance(entry, Mapping):
        return entry
    from screener._safe_json import entry_from_dict

    return entry_from_dict(entry, what)  # checked against the allow-list first: entries, never code


class CampaignHulls:
    """PBE and SCAN hulls of one campaign, fed with its results.

    Parameters
    ----------
    references : mapping fidelity -> list of ComputedEntry (or dicts)
        Reference phases of each hull: elemental references and known competing phases (``references.json``; its
        ``meta`` key, if any, is kept as :attr:`meta`).
    """

    def __init__(self, references: Mapping[str, Any], *, stable_threshold_ev_per_atom: float = 0.0) -> None:
        from screener.hull import FidelityHull

        # Reference phases join the hulls as plain ComputedEntry (composition and energy are all a hull needs):
        # decoding hundreds of structures at every start, and storing them in every snapshot, would dominate a
        # small campaign. Their structures stay here, decoded only for a competing phase that must be computed.
        self._structures: dict[str, Mapping[str, Any]] = {}
        self.hulls = {
            f: FidelityHull(f, references=[self._without_structure(e) for e in references.get(f, [])],
                            on_mixed_backends="warn")
            for f in ("pbe", "scan")
        }
        self.meta: dict[str, Any] = dict(references.get("meta") or {})
        #: candidate id -> keys of the known phases it IS (left out only when that candidate is judged)
        self.twins: dict[str, list[str]] = candidate_twins_of(self.meta)
        #: E_hull (eV/atom) at or below which a structure counts as stable in :meth:`snapshot`
        self.stable_threshold_ev_per_atom = float(stable_threshold_ev_per_atom)

    def _without_structure(self, entry: Mapping[str, Any] | Any) -> Any:
        if not isinstance(entry, Mapping) or "structure" not in entry:
            return _entry(entry, "a reference entry")
        d = {k: v for k, v in entry.items() if k != "structure"}
        d["@class"] = "ComputedEntry"
        key = (d.get("data") or {}).get("structure_id") or d.get("entry_id")
        if key is not None:
            self._structures[str(key)] = entry["structure"]
        return _entry(d, "a reference entry")

    def _structure(self, key: str) -> Any:
        from screener._safe_json import structure_from_dict

        raw = self._structures.get(key)
        return None if raw is None else structure_from_dict(raw, f"structure of reference {key}")

    def competing_phase_counts(self, chemsys: Any, *, exclude: Iterable[str] = ()) -> dict[str, int]:
        """How many known competing phases each hull holds in a chemical system and its subsystems.

        Counts the reference phases with two or more elements (the elements themselves are not competing phases;
        the campaign's own results are not counted), e.g. ``{"pbe": 12, "scan": 12}``; 0 means that hull holds only
        elements there and calls nearly every compound stable.

        Parameters
        ----------
        chemsys : str or sequence of str or Composition
            E.g. ``"Fe-Li-O"`` or a candidate's composition.
        exclude : iterable of str
            Ids not to count (a candidate's own id).
        """
        from screener.hull.known_phases import count_compounds

        return {f: count_compounds(self.hulls[f].references, chemsys, exclude=exclude) for f in ("pbe", "scan")}

    @classmethod
    def from_file(cls, path: str | Path, *, stable_threshold_ev_per_atom: float = 0.0) -> CampaignHulls:
        """Hulls over the references stored by :func:`prepare_references` (checked before anything is decoded)."""
        from screener._safe_json import check, read_json

        raw = read_json(path)
        check(raw, str(path))
        return cls(raw, stable_threshold_ev_per_atom=stable_threshold_ev_per_atom)

    def _twins(self, structure_id: Any) -> list[str]:
        return self.twins.get(str(structure_id), []) if structure_id is not None else []

    def add_result(self, fidelity: str, entry: Mapping[str, Any]) -> None:
        self.hulls[fidelity].add_entries([_entry(entry)])

    def hull_formation_energy_ev_per_atom(self, fidelity: str, composition: Any, structure_id: str | None = None
                                          ) -> float:
        """Formation energy of the hull at a composition; for candidate ``structure_id``, of the hull without the
        known phase(s) that candidate IS (nan where the hull lacks an element)."""
        from screener.hull import MissingReferenceError

        try:
            return self.hulls[fidelity].hull_formation_energy_ev_per_atom(composition,
                                                                          exclude=self._twins(structure_id))
        except MissingReferenceError:
            return math.nan

    def e_form_ev_per_atom(self, fidelity: str, entry: Mapping[str, Any]) -> float:
        from screener.hull import MissingReferenceError

        try:
            return self.hulls[fidelity].e_form_ev_per_atom(_entry(entry))
        except MissingReferenceError:
            return math.nan

    def e_above_hull_ev_per_atom(self, fidelity: str, entry: Mapping[str, Any]) -> float:
        """E_hull of a result entry, judged without the known phase(s) its structure IS (nan without a hull)."""
        from screener.hull import MissingReferenceError
        from screener.hull.phase_diagram import entry_key

        entry = _entry(entry)
        try:
            return self.hulls[fidelity].e_above_hull_ev_per_atom(entry, exclude=self._twins(entry_key(entry)))
        except MissingReferenceError:
            return math.nan

    def e_hull_signed_ev_per_atom(self, fidelity: str, entry: Mapping[str, Any] | Any) -> float:
        """E_hull of an entry against the hull of the OTHER phases (itself and its twins left out): negative for a
        stable one, by how far it lies below them (pymatgen's ``allow_negative``); the usual E_hull for an unstable
        one. nan without a hull."""
        from screener.hull import MissingReferenceError
        from screener.hull.phase_diagram import entry_key

        entry = _entry(entry)
        key = entry_key(entry)
        exclude = ([str(key)] if key is not None else []) + self._twins(key)
        try:
            return self.hulls[fidelity].e_above_hull_ev_per_atom(entry, exclude=exclude)
        except MissingReferenceError:
            return math.nan

    def missing_competing_phases(self, fidelity: str, chemsys: str) -> list[tuple[str, Any]]:
        """SCAN: known phases on/near the PBE hull of ``chemsys`` without a SCAN energy. PBE: none (nothing is known
        below PBE).

        Only *known* phases (the PBE hull's references, e.g. an MP GGA entry whose r2SCAN twin the references lack)
        are listed; the campaign's own candidates never are: whether a candidate is computed at SCAN is the policy's
        decision, so it is never planned a second time as somebody's competing phase. With a known-phase set at both
        fidelities (the shipped stand-in set, MP GGA + r2SCAN) this list is usually empty.
        """
        if fidelity != "scan":
            return []
        from screener.hull import MissingReferenceError
        from screener.hull.phase_diagram import entry_key

        from screener.hull.phase_diagram import chemsys_elements

        elements = chemsys_elements(chemsys)
        # a candidate's twin is not bought as a competing phase: the candidate's own SCAN run is that structure
        twin_keys = {k for keys in self.twins.values() for k in keys}
        known = {entry_key(e) for e in self.hulls["pbe"].references
                 if len(e.composition.elements) > 1 and {str(el) for el in e.composition.elements} <= elements
                 and entry_key(e) not in twin_keys}
        if all(k in self.hulls["scan"] for k in known):  # the usual case: known at both fidelities, nothing to buy
            return []
        try:
            phases = self.hulls["scan"].missing_competing_phases(chemsys, self.hulls["pbe"])
        except MissingReferenceError:
            return []
        out = []
        for p in phases:
            if p.structure_id in known:
                structure = p.structure if p.structure is not None else self._structure(p.structure_id)
                if structure is not None:
                    out.append((p.structure_id, structure))
        return out

    def snapshot(self, fidelity: str) -> dict[str, Any]:
        """The hull's state for the ledger: every computed structure's E_hull and those that count as stable.

        Each structure the campaign computed is judged on its own (without its twin, if it is a candidate that IS
        a known phase) and counts as stable when its E_hull is at most ``stable_threshold_ev_per_atom``
        (+ 1e-6 eV/atom of round-off). Returns ``n_entries`` (computed structures), ``n_stable``, ``stable_ids``,
        ``e_hull_ev_per_atom`` (``{id: value}``), ``stable_threshold_ev_per_atom`` and ``json`` (the hull).
        """
        from screener.hull import FidelityHull, MissingReferenceError
        from screener.hull.phase_diagram import entry_key

        hull = self.hulls[fidelity]
        refs = {entry_key(e) for e in hull.references}
        e_hull: dict[str, float] = {}
        for entry in hull.entries:
            key = entry_key(entry)
            if key in refs:
                continue
            try:
                value = float(hull.e_above_hull_ev_per_atom(entry, exclude=self._twins(key)))
            except MissingReferenceError as exc:  # an element without reference: nothing there can be called stable
                logger.warning("%s", exc)
                continue
            if math.isfinite(value):
                e_hull[str(key)] = value
        limit = self.stable_threshold_ev_per_atom + FidelityHull.STABLE_TOL_EV_PER_ATOM
        stable = sorted(k for k, v in e_hull.items() if v <= limit)
        return {"n_entries": len(hull) - len(refs), "n_stable": len(stable), "stable_ids": stable,
                "e_hull_ev_per_atom": dict(sorted(e_hull.items())),
                "stable_threshold_ev_per_atom": self.stable_threshold_ev_per_atom, "json": hull.as_dict()}


def candidate_twins_of(meta: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """``{candidate id: [known phase keys]}`` from a references or ledger record: ``candidate_twins``, and the
    ``excluded_as_candidates`` map (``{known key: candidate id}``) of campaigns made before twins stayed on the hulls
    (those twins are not on their hulls; they still say the candidate is a rediscovery)."""
    out: dict[str, list[str]] = {}
    if not isinstance(meta, Mapping):
        return out
    twins = meta.get(CANDIDATE_TWINS_META)
    for cid, keys in (twins.items() if isinstance(twins, Mapping) else ()):
        if isinstance(keys, list):
            out[str(cid)] = [str(k) for k in keys]
    old = meta.get("excluded_as_candidates")
    for key, cid in (old.items() if isinstance(old, Mapping) else ()):
        out.setdefault(str(cid), [])
        if str(key) not in out[str(cid)]:
            out[str(cid)].append(str(key))
    return out
