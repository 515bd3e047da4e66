"""Which energy scale an entry is on, and the MP2020 corrections the PBE hull needs.

Rules (one per energy scale, never blended):

* real GGA / GGA+U VASP entries (``parameters["run_type"]`` GGA, GGA+U, PBE or PBE+U, any back-end except the
  stand-in) get :class:`~pymatgen.entries.compatibility.MaterialsProject2020Compatibility`, unless they already carry
  MP2020 adjustments (Materials Project entries do): those are kept as they are, so MP2020 is never applied twice;
* r2SCAN entries are used uncorrected (Materials Project does the same for its r2SCAN hull);
* stand-in entries (``data["backend"] == "standin"``: CHGNet 0.3.0 / CHGNet r2SCAN) are used uncorrected, because
  CHGNet 0.3.0 learned MP2020-*corrected* energies and correcting them again would count the corrections twice;
  so is any entry with ``data["apply_mp2020"] = False`` (screener's calculators set this flag explicitly).
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

from screener.errors import InvalidInputError, ScreenerError

if TYPE_CHECKING:
    from pymatgen.entries.computed_entries import ComputedEntry

__all__ = [
    "Fidelity",
    "FIDELITIES",
    "FidelityMismatchError",
    "entry_fidelity",
    "entry_backend",
    "entry_run_type",
    "has_mp2020",
    "needs_mp2020",
    "prepare_entries",
    "as_entry",
]

logger = logging.getLogger(__name__)

Fidelity = Literal["pbe", "scan"]
FIDELITIES: tuple[str, ...] = ("pbe", "scan")

_PBE_RUN_TYPES = {"GGA", "GGA+U", "PBE", "PBE+U"}
_SCAN_RUN_TYPES = {"R2SCAN", "R2SCAN+U", "SCAN", "SCAN+U"}
_FIDELITY_ALIASES = {"pbe": "pbe", "gga": "pbe", "gga+u": "pbe", "pbe+u": "pbe", "scan": "scan", "r2scan": "scan"}


class FidelityMismatchError(ScreenerError):
    """An entry of one functional was given to the hull of another: scales are never mixed."""


def as_entry(entry: ComputedEntry | dict) -> ComputedEntry:
    """A ComputedEntry from an entry or its ``as_dict()`` (e.g. ``CalcResult.entry``).

    A dict is checked against :mod:`screener._safe_json`'s allow-list first (pymatgen's ``from_dict`` would decode
    whatever classes its ``data``, ``parameters`` and adjustments name).
    """
    if isinstance(entry, dict):
        from screener._safe_json import entry_from_dict

        return entry_from_dict(entry, f"entry {entry.get('entry_id') or ''}".strip())
    return entry


def normalise_fidelity(fidelity: str) -> str:
    """Return ``"pbe"`` or ``"scan"`` for a fidelity name or alias (``r2scan``, ``gga``...); raise otherwise."""
    key = str(fidelity).strip().lower()
    if key not in _FIDELITY_ALIASES:
        raise InvalidInputError(f"unknown functional {fidelity!r}: use 'pbe' or 'scan'")
    return _FIDELITY_ALIASES[key]


def entry_run_type(entry: ComputedEntry) -> str | None:
    """The run type of an entry (``parameters["run_type"]``, else ``data["run_type"]``), or None."""
    run_type = (entry.parameters or {}).get("run_type") or (entry.data or {}).get("run_type")
    return str(run_type) if run_type else None


def entry_backend(entry: ComputedEntry) -> str | None:
    """The back-end that computed an entry (``data["backend"]``: vasp, standin, replay), or None when unknown."""
    backend = (entry.data or {}).get("backend")
    return str(backend).lower() if backend else None


def entry_fidelity(entry: ComputedEntry) -> str | None:
    """The functional of an entry: ``data["fidelity"]`` if set, else inferred from the run type; None if unknown."""
    fidelity = (entry.data or {}).get("fidelity")
    if fidelity:
        return normalise_fidelity(fidelity)
    run_type = (entry_run_type(entry) or "").upper()
    if run_type in _PBE_RUN_TYPES:
        return "pbe"
    if run_type in _SCAN_RUN_TYPES:
        return "scan"
    return None


def has_mp2020(entry: ComputedEntry) -> bool:
    """True when the entry already carries MaterialsProject2020Compatibility energy adjustments."""
    for adjustment in entry.energy_adjustments:
        cls = getattr(adjustment, "cls", None)
        cls_name = cls.get("@class") if isinstance(cls, dict) else type(cls).__name__ if cls is not None else ""
        generated_by = getattr(adjustment, "generated_by", "") or ""
        if (
            adjustment.name.startswith("MP2020")
            or cls_name == "MaterialsProject2020Compatibility"
            or generated_by == "MaterialsProject2020Compatibility"
        ):
            return True
    return False


def needs_mp2020(entry: ComputedEntry) -> bool:
    """True for a real GGA/GGA+U (PBE/PBE+U) compound that is not from the stand-in and lacks MP2020 adjustments.

    ``data["apply_mp2020"] = False`` (set by screener's calculators for stand-in and replay entries) always wins.
    """
    if entry_backend(entry) == "standin" or (entry.data or {}).get("apply_mp2020") is False:
        return False
    if (entry_run_type(entry) or "").upper() not in _PBE_RUN_TYPES:
        return False
    if len(entry.composition.elements) == 1:
        # MP2020 never corrects a pure element (no anion, no GGA/GGA+U mixing term); skipping it also spares
        # elemental references without POTCAR information the POTCAR check.
        return False
    return not has_mp2020(entry)


def _apply_mp2020(entry: ComputedEntry, compat, on_incompatible: str) -> ComputedEntry | None:
    from pymatgen.entries.compatibility import CompatibilityError

    work = copy.deepcopy(entry)
    run_type = str(entry_run_type(work)).upper()
    # MP2020 accepts only the run-type labels GGA / GGA+U; PBE / PBE+U (emmet's names for an explicit GGA=PE) mean
    # the same functional.
    work.parameters = {**work.parameters, "run_type": {"PBE": "GGA", "PBE+U": "GGA+U"}.get(run_type, run_type)}
    if work.energy_adjustments:
        logger.info("%s: replacing non-MP2020 adjustments %s with MP2020", work.entry_id, work.energy_adjustments)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # clean=True: start from the uncorrected energy, so nothing is ever applied twice.
            processed = compat.process_entries([work], clean=True, inplace=True, on_error="raise")
        for item in caught:
            logger.debug("MP2020 %s: %s", work.entry_id, item.message)
    except CompatibilityError as exc:
        processed, reason = [], str(exc)
    else:
        reason = "MP2020 discarded it (conflicting adjustments)"
    if processed:
        return processed[0]
    message = f"entry {entry.entry_id} ({entry.composition.reduced_formula}) is not MP2020-compatible: {reason}"
    if on_incompatible == "raise":
        raise InvalidInputError(message)
    if on_incompatible == "warn":
        logger.warning("%s; skipped", message)
    return None


def prepare_entries(
    entries: Iterable[ComputedEntry],
    fidelity: str,
    *,
    on_incompatible: Literal["raise", "warn", "skip"] = "raise",
    check_potcar: bool = True,
) -> list[ComputedEntry]:
    """Check the functional of every entry and put it on the energy scale of the ``fidelity`` hull.

    Parameters
    ----------
    entries : iterable of ComputedEntry or dict
        Entries (or their ``as_dict()``) from calculations, files or the Materials Project. They are not modified
        (corrected ones are copies).
    fidelity : {"pbe", "scan"}
        The hull the entries are meant for.
    on_incompatible : {"raise", "warn", "skip"}
        What to do with a GGA/GGA+U entry that MP2020 rejects (e.g. non-MP POTCARs or U values).
    check_potcar : bool
        Passed to MaterialsProject2020Compatibility; set False for entries without POTCAR information.

    Returns
    -------
    list of ComputedEntry
        Entries ready for a PhaseDiagram of that functional (same order; rejected entries left out).

    Raises
    ------
    FidelityMismatchError
        An entry is of the other functional.
    InvalidInputError
        An entry's functional cannot be told (set ``entry.data["fidelity"]``), or MP2020 rejects it and
        ``on_incompatible="raise"``.
    """
    fidelity = normalise_fidelity(fidelity)
    compat = None
    prepared: list[ComputedEntry] = []
    for entry in map(as_entry, entries):
        found = entry_fidelity(entry)
        if found is None:
            raise InvalidInputError(
                f"entry {entry.entry_id} ({entry.composition.reduced_formula}): cannot tell its functional; set "
                "entry.data['fidelity'] to 'pbe' or 'scan' or parameters['run_type']"
            )
        if found != fidelity:
            raise FidelityMismatchError(
                f"entry {entry.entry_id} ({entry.composition.reduced_formula}) is a {found} entry and cannot join the "
                f"{fidelity} hull: hulls never mix functionals"
            )
        if fidelity == "pbe" and needs_mp2020(entry):
            if compat is None:
                from pymatgen.entries.compatibility import MaterialsProject2020Compatibility

                compat = MaterialsProject2020Compatibility(check_potcar=check_potcar)
            corrected = _apply_mp2020(entry, compat, on_incompatible)
            if corrected is not None:
                prepared.append(corrected)
            continue
        if fidelity == "scan" and has_mp2020(entry):
            raise InvalidInputError(
                f"entry {entry.entry_id}: an r2SCAN entry carries MP2020 (GGA) corrections; remove them "
                "(entry.energy_adjustments = []) or use the explicit mixing scheme"
            )
        prepared.append(entry)
    return prepared
