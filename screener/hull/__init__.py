"""Per-functional convex hulls, reference phases and the Materials Project entry cache.

``FidelityHull`` keeps the PBE and the r2SCAN hulls apart (never a silent blend), applies MP2020 only to real
GGA/GGA+U entries, and reports which competing phases a SCAN hull still needs. See docs/hulls.md.
"""

from __future__ import annotations

from screener._lazy import lazy_getattr


_LAZY = {
    "FidelityMismatchError": "screener.hull.corrections",
    "entry_fidelity": "screener.hull.corrections",
    "prepare_entries": "screener.hull.corrections",
    "as_entry": "screener.hull.corrections",
    "has_mp2020": "screener.hull.corrections",
    "needs_mp2020": "screener.hull.corrections",
    "FidelityHull": "screener.hull.phase_diagram",
    "CompetingPhase": "screener.hull.phase_diagram",
    "MissingReferenceError": "screener.hull.phase_diagram",
    "chemsys_elements": "screener.hull.phase_diagram",
    "HullSet": "screener.hull.hull_set",
    "HullEvaluation": "screener.hull.hull_set",
    "IncompleteHullError": "screener.hull.hull_set",
    "reference_entries": "screener.hull.references",
    "elemental_reference_structures": "screener.hull.references",
    "make_reference_entries": "screener.hull.references",
    "load_entries": "screener.hull.references",
    "save_entries": "screener.hull.references",
    "get_mp_entries": "screener.hull.mp_cache",
    "default_mp_cache_dir": "screener.hull.mp_cache",
    "MPAccessError": "screener.hull.mp_cache",
    "hull_table": "screener.hull.table",
    "write_hull_csv": "screener.hull.table",
    "read_entry_files": "screener.hull.table",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
