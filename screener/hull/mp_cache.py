"""Materials Project entries through mp-api, cached on disk per chemical system and functional.

``get_mp_entries("Li-Fe-O", fidelity="pbe")`` asks ``MPRester().get_entries_in_chemsys`` once (GGA/GGA+U thermo
type, MP2020-corrected; ``fidelity="scan"`` asks for the R2SCAN thermo type) and writes
``<cache_dir>/<chemsys>.<fidelity>.json.gz``; later calls, and every call with ``offline=True``, read that file.
mp-api is optional (``pip install screener[mp]``) and imported only here, inside the function: constructing an
``MPRester`` contacts the server.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from screener.errors import OfflineError, ScreenerError
from screener.hull.corrections import normalise_fidelity
from screener.hull.phase_diagram import chemsys_elements

if TYPE_CHECKING:
    from pymatgen.entries.computed_entries import ComputedEntry

__all__ = ["MPAccessError", "default_mp_cache_dir", "mp_cache_path", "get_mp_entries"]

logger = logging.getLogger(__name__)

_THERMO_TYPES = {"pbe": "GGA_GGA+U", "scan": "R2SCAN"}


class MPAccessError(ScreenerError):
    """mp-api is not installed or no Materials Project API key is configured."""


def default_mp_cache_dir() -> Path:
    """``$SCREENER_MP_CACHE`` if set, else ``$XDG_CACHE_HOME/screener/mp`` (``~/.cache/screener/mp``)."""
    if os.environ.get("SCREENER_MP_CACHE"):
        return Path(os.environ["SCREENER_MP_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "screener" / "mp"


def mp_cache_path(chemsys: Any, fidelity: str = "pbe", cache_dir: str | Path | None = None) -> Path:
    """Cache file of one chemical system and functional, e.g. ``~/.cache/screener/mp/Fe-Li-O.pbe.json.gz``."""
    name = "-".join(sorted(chemsys_elements(chemsys)))
    return Path(cache_dir or default_mp_cache_dir()) / f"{name}.{normalise_fidelity(fidelity)}.json.gz"


def _api_key(api_key: str | None) -> str | None:
    if api_key:
        return api_key
    if os.environ.get("MP_API_KEY"):
        return os.environ["MP_API_KEY"]
    try:
        from pymatgen.core import SETTINGS

        return SETTINGS.get("PMG_MAPI_KEY")
    except ImportError:  # pragma: no cover
        return None


def get_mp_entries(
    chemsys: Any,
    *,
    fidelity: str = "pbe",
    cache_dir: str | Path | None = None,
    offline: bool = False,
    refresh: bool = False,
    api_key: str | None = None,
) -> list[ComputedEntry]:
    """Materials Project entries of a chemical system (all its subsystems included), cached on disk.

    Parameters
    ----------
    chemsys : str or sequence of str
        E.g. ``"Li-Fe-O"`` or ``["Li", "Fe", "O"]``.
    fidelity : {"pbe", "scan"}
        ``"pbe"``: MP's GGA/GGA+U entries (MP2020 corrections already applied; screener does not apply them again);
        ``"scan"``: MP's r2SCAN entries.
    cache_dir : path, optional
        Default :func:`default_mp_cache_dir`.
    offline : bool
        Use the cache only; raise :class:`~screener.errors.OfflineError` when it has no file for the system.
    refresh : bool
        Ask the server even when a cached file exists.
    api_key : str, optional
        Default: ``$MP_API_KEY`` or pymatgen's ``PMG_MAPI_KEY`` setting.

    Returns
    -------
    list of ComputedStructureEntry
        With ``data["fidelity"]``, ``data["backend"] = "mp"`` and ``data["structure_id"]`` (the entry id).

    Raises
    ------
    OfflineError
        Offline and not cached, or the server could not be reached.
    MPAccessError
        mp-api is not installed (``pip install screener[mp]``) or no API key is set.
    """
    from monty.serialization import dumpfn

    from screener._safe_json import entry_from_dict, read_json

    fidelity = normalise_fidelity(fidelity)
    elements = sorted(chemsys_elements(chemsys))
    path = mp_cache_path(elements, fidelity, cache_dir)
    if path.is_file() and not refresh:
        logger.info("MP entries for %s (%s) from cache %s", "-".join(elements), fidelity, path)
        return [entry_from_dict(d, str(path)) for d in read_json(path)]  # checked: entries, never code
    if offline:
        raise OfflineError(
            f"offline and no cached Materials Project entries for {'-'.join(elements)} ({fidelity}) in {path.parent}; "
            "run once online (screener hull ... --mp) or drop --offline"
        )
    try:
        from mp_api.client import MPRester
    except ImportError as exc:
        raise MPAccessError("Materials Project access needs mp-api: pip install 'screener[mp]'") from exc
    key = _api_key(api_key)
    if not key:
        raise MPAccessError(
            "no Materials Project API key: set MP_API_KEY (https://materialsproject.org/api) or PMG_MAPI_KEY"
        )
    try:
        with MPRester(key) as mpr:
            entries = mpr.get_entries_in_chemsys(
                elements, additional_criteria={"thermo_types": [_THERMO_TYPES[fidelity]]}
            )
    except (ScreenerError, ImportError):
        raise
    except Exception as exc:  # noqa: BLE001 - network/HTTP errors of requests/mp-api have no common base class
        raise OfflineError(f"Materials Project query for {'-'.join(elements)} failed: {exc}") from exc
    entries = list(entries)
    for entry in entries:
        if entry.data is None:
            entry.data = {}
        entry.data.setdefault("fidelity", fidelity)
        entry.data.setdefault("backend", "mp")
        entry.data.setdefault("structure_id", str(entry.entry_id))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part.json.gz")
    dumpfn([entry.as_dict() for entry in entries], tmp)
    os.replace(tmp, path)
    logger.info("MP entries for %s (%s): %d, cached in %s", "-".join(elements), fidelity, len(entries), path)
    return entries
