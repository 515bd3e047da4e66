"""``screener hull`` as a Python function: entries in, one row per entry (formation energy, E_hull, stable) out."""

from __future__ import annotations

import copy
import csv
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from screener.errors import InvalidInputError
from screener.hull.corrections import entry_fidelity, normalise_fidelity
from screener.hull.phase_diagram import FidelityHull, entry_key

if TYPE_CHECKING:
    from pymatgen.entries.computed_entries import ComputedEntry

__all__ = ["HULL_COLUMNS", "read_entry_files", "hull_table", "write_hull_csv"]

logger = logging.getLogger(__name__)

HULL_COLUMNS = ("id", "formula", "fidelity", "e_form_ev_per_atom", "e_hull_ev_per_atom", "stable")


def read_entry_files(paths: Sequence[str | Path]) -> list[ComputedEntry]:
    """Read ComputedStructureEntry / ComputedEntry files (JSON, .json.gz, .json.bz2).

    Uses :func:`screener.structures.read_structures` (which understands every structure format screener reads) and
    keeps the records that carry an entry; files it cannot read as entries fall back to
    :func:`screener.hull.references.load_entries` (plain ComputedEntry lists without structures).
    """
    from screener.hull.references import load_entries

    entries: list[ComputedEntry] = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise InvalidInputError(f"{path}: no such file")
        records = None
        try:
            from screener.structures import read_structures

            records = read_structures([path], validate=False).records
        except ImportError:  # pragma: no cover - structures is part of screener
            records = None
        except InvalidInputError as exc:
            logger.debug("%s: read_structures could not read it (%s); trying plain entry JSON", path, exc)
            records = None
        if records and all(getattr(r, "entry", None) is not None for r in records):
            for record in records:
                entry = record.entry
                if entry.data is None:
                    entry.data = {}
                entry.data.setdefault("structure_id", record.structure_id)
                entries.append(entry)
        else:
            if records:
                logger.debug("%s: some records have no energy; reading it as plain entries", path)
            entries.extend(load_entries([path]))
    return entries


def hull_table(
    entries: Iterable[ComputedEntry],
    fidelity: str = "pbe",
    *,
    references: Iterable[ComputedEntry] = (),
    reference_source: str | None = "default",
    mp: bool = False,
    offline: bool = False,
    mp_cache_dir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[dict[str, Any]], FidelityHull]:
    """Formation energy and E_hull of every entry on the hull of one functional.

    The hull holds the given ``entries``, the user's ``references``, optionally the Materials Project entries of the
    same chemical systems (``mp=True``, cached; ``offline=True`` uses the cache only) and, for elements still
    without any elemental entry, the shipped elemental references (``reference_source``; None to not use them).

    Parameters
    ----------
    entries : iterable of ComputedEntry
        Entries to evaluate. Entries that do not say their functional (no ``data["fidelity"]``, no run type) are
        taken to be of ``fidelity`` and used as given (no correction).
    fidelity : {"pbe", "scan"}
    references : iterable of ComputedEntry
        Extra phases (a local entry database).
    reference_source : str or None
        Shipped elemental references to fill in missing elements (``"default"``: MP for PBE, MatPES for r2SCAN).
    mp, offline, mp_cache_dir
        Materials Project entries through :func:`screener.hull.mp_cache.get_mp_entries`.
    progress : callable, optional
        ``progress(done, total)`` after each entry.

    Returns
    -------
    rows : list of dict
        One per input entry, keys :data:`HULL_COLUMNS`.
    hull : FidelityHull
        The hull used.
    """
    fidelity = normalise_fidelity(fidelity)
    entries = list(entries)
    if not entries:
        raise InvalidInputError("no entries to place on a hull")
    tagged: list[ComputedEntry] = []
    for entry in entries:
        if entry_fidelity(entry) is None:
            entry = copy.copy(entry)
            entry.data = {**(entry.data or {}), "fidelity": fidelity}
            logger.info("%s: functional not recorded; taken as %s, uncorrected", entry_key(entry), fidelity)
        tagged.append(entry)
    hull = FidelityHull(fidelity)
    hull.add_entries(references, reference=True)
    if mp:
        from screener.hull.mp_cache import get_mp_entries

        systems = {frozenset(str(el) for el in e.composition.elements) for e in tagged}
        maximal = [s for s in systems if not any(s < other for other in systems)]
        for elements in sorted(maximal, key=sorted):
            hull.add_entries(
                get_mp_entries(sorted(elements), fidelity=fidelity, cache_dir=mp_cache_dir, offline=offline),
                reference=True,
            )
    keys = hull.add_entries(tagged)
    if len(set(keys)) < len(keys):
        n_repeated = len(keys) - len(set(keys))
        logger.warning("%d entries share an id with another; the last one of each id is kept", n_repeated)
        keys = list(dict.fromkeys(keys))
    if reference_source is not None:
        from screener.hull.references import reference_entries

        needed = {str(el) for e in tagged for el in e.composition.elements}
        have = {str(e.composition.elements[0]) for e in hull.entries if len(e.composition.elements) == 1}
        missing = sorted(needed - have)
        if missing:
            source = None if reference_source == "default" else reference_source
            logger.info("shipped %s references added for %s", fidelity, ", ".join(missing))
            hull.add_entries(reference_entries(fidelity, source, elements=missing), reference=True)
    rows: list[dict[str, Any]] = []
    for i, key in enumerate(keys):
        entry = hull.get_entry(key)
        e_hull = hull.e_above_hull_ev_per_atom(entry)
        rows.append(
            {
                "id": key,
                "formula": entry.composition.reduced_formula,
                "fidelity": fidelity,
                "e_form_ev_per_atom": hull.e_form_ev_per_atom(entry),
                "e_hull_ev_per_atom": e_hull,
                "stable": bool(e_hull <= hull.STABLE_TOL_EV_PER_ATOM),
            }
        )
        if progress is not None:
            progress(i + 1, len(keys))
    return rows, hull


def write_hull_csv(rows: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Write :func:`hull_table` rows as CSV (energies in eV/atom, 6 decimals)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(HULL_COLUMNS))
        writer.writeheader()
        for row in rows:
            out = dict(row)
            for name in ("e_form_ev_per_atom", "e_hull_ev_per_atom"):
                out[name] = f"{float(out[name]):.6f}"
            writer.writerow({k: out[k] for k in HULL_COLUMNS})
    return path
