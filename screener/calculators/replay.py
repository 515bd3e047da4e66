"""Replay back-end: energies read from a labelled data set instead of computed.

The data set is one or more files (``.json``, ``.json.gz``, ``.json.bz2``; Alexandria's dump format is a JSON list,
or a dict with an ``entries`` list) of ``ComputedStructureEntry`` dicts, one per structure and fidelity:
``data["structure_id"]`` links the fidelities, ``data["fidelity"]`` is "pbe" or "scan", ``data["e_form"]`` and
``data["e_above_hull"]`` (eV/atom) are kept when present. For files without these keys (Alexandria's PBE dumps)
give ``id_key="mat_id"`` and ``default_fidelity="pbe"``.

Asking for a structure/fidelity the data set does not hold raises :class:`~screener.errors.CalculationError`;
nothing is made up. Replay jobs are ordinary jobflow jobs, so every executor runs them.
"""

from __future__ import annotations

import bz2
import gzip
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobflow import job

from screener._safe_json import check, entry_from_dict
from screener.calculators.base import calc_uuid, check_fidelity
from screener.calculators.cost import CostModel
from screener.calculators.result import CalcResult, make_entry_dict
from screener.errors import CalculationError, InvalidInputError

if TYPE_CHECKING:
    from jobflow import Job
    from pymatgen.core import Structure

__all__ = ["ReplayDataset", "ReplayCalculator", "replay_job", "load_replay_dataset"]

logger = logging.getLogger(__name__)

_CACHE: dict[tuple, ReplayDataset] = {}
_LOCK = threading.Lock()


def _open(path: Path) -> Any:
    name = path.name.lower()
    if name.endswith(".bz2"):
        return bz2.open(path, "rt", encoding="utf-8")
    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


@dataclass
class ReplayDataset:
    """Entries of a labelled data set indexed by ``(structure_id, fidelity)``.

    Attributes
    ----------
    entries : dict
        ``(structure_id, fidelity) -> ComputedStructureEntry dict``.
    paths : list of str
        Files it was read from.
    """

    entries: dict[tuple[str, str], dict] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)

    @classmethod
    def from_files(
        cls, paths: str | Path | list, *, id_key: str = "structure_id", default_fidelity: str | None = None
    ) -> ReplayDataset:
        """Read the data set files.

        Parameters
        ----------
        paths : path or list of paths
            JSON (optionally gz/bz2) files.
        id_key : str
            Key in ``entry["data"]`` that holds the structure id (falls back to ``entry_id``).
        default_fidelity : {"pbe", "scan"}, optional
            Fidelity of entries without ``data["fidelity"]``.
        """
        paths = [Path(p) for p in (paths if isinstance(paths, list | tuple) else [paths])]
        dataset = cls(paths=[str(p) for p in paths])
        for path in paths:
            if not path.exists():
                raise InvalidInputError(f"replay data set {path} does not exist")
            try:
                with _open(path) as handle:
                    raw = json.load(handle)
            except (OSError, ValueError) as exc:
                raise InvalidInputError(f"cannot read replay data set {path}: {exc}") from exc
            items = raw.get("entries", []) if isinstance(raw, dict) else raw
            for i, item in enumerate(items):
                data = item.get("data") or {}
                sid = data.get(id_key) or item.get("entry_id")
                fidelity = data.get("fidelity") or default_fidelity
                if sid is None or fidelity is None:
                    raise InvalidInputError(
                        f"{path}: entry {i} has no data[{id_key!r}]/entry_id or no data['fidelity'] "
                        "(pass id_key= / default_fidelity=)"
                    )
                if "structure" not in item:
                    raise InvalidInputError(f"{path}: entry {i} ({sid}) is not a ComputedStructureEntry (no structure)")
                check(item, f"{path}: entry {i} ({sid})")  # data, never code: checked before anything decodes it
                dataset.entries[(str(sid), check_fidelity(fidelity))] = item
        logger.info("replay data set: %d entries from %d file(s)", len(dataset.entries), len(paths))
        return dataset

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, structure_id: str, fidelity: str) -> dict:
        """The entry dict of ``structure_id`` at ``fidelity``; CalculationError if the data set lacks it."""
        try:
            return self.entries[(structure_id, check_fidelity(fidelity))]
        except KeyError:
            have = sorted({f for (s, f) in self.entries if s == structure_id})
            hint = f" (it has {have} for this structure)" if have else " (no entry at all for this structure)"
            raise CalculationError(
                f"replay data set {', '.join(self.paths)} has no {fidelity} result for {structure_id!r}{hint}"
            ) from None


def load_replay_dataset(
    paths: list[str], id_key: str = "structure_id", default_fidelity: str | None = None
) -> ReplayDataset:
    """:meth:`ReplayDataset.from_files`, cached per process (keyed by paths and modification times)."""
    key = (tuple(paths), tuple(Path(p).stat().st_mtime_ns if Path(p).exists() else 0 for p in paths), id_key,
           default_fidelity)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = ReplayDataset.from_files(list(paths), id_key=id_key, default_fidelity=default_fidelity)
        return _CACHE[key]


@job(output_schema=CalcResult)
def replay_job(
    structure_id: str,
    fidelity: str,
    paths: list[str],
    id_key: str = "structure_id",
    default_fidelity: str | None = None,
    cost_model: dict | None = None,
) -> CalcResult:
    """Read one result from the data set and return it as a CalcResult (raises CalculationError if absent)."""
    start = time.perf_counter()
    item = load_replay_dataset(paths, id_key, default_fidelity).get(structure_id, fidelity)
    entry = entry_from_dict(item, f"replay entry {structure_id} ({fidelity})")
    structure = entry.structure
    energy = float(entry.uncorrected_energy)
    data = dict(entry.data)
    run_type = str(entry.parameters.get("run_type") or f"replayed {fidelity.upper()} data")
    label = f"replay: {fidelity.upper()} energy read from {', '.join(Path(p).name for p in paths)}, not computed"
    keep = {k: data[k] for k in ("e_form", "e_above_hull", "mat_id", "source") if k in data}
    hull_entry = make_entry_dict(
        structure,
        energy,
        structure_id=structure_id,
        fidelity=fidelity,
        backend="replay",
        run_type=run_type,
        parameters={k: v for k, v in entry.parameters.items() if k != "run_type"},
        data={**keep, "label": label},
        correction_ev=float(entry.correction),
    )
    gap = data.get("band_gap", data.get("band_gap_ind"))
    return CalcResult(
        structure_id=structure_id,
        fidelity=fidelity,
        backend="replay",
        label=label,
        success=True,
        energy_ev=energy,
        energy_per_atom_ev=energy / len(structure),
        n_sites=len(structure),
        final_structure=structure.as_dict(),
        run_type=run_type,
        wall_time_s=time.perf_counter() - start,
        cost_cpu_hours=CostModel(**(cost_model or {})).cpu_hours(len(structure), fidelity),
        band_gap_ev=None if gap is None else float(gap),
        entry=hull_entry,
    )


@dataclass
class ReplayCalculator:
    """Back-end that replays a labelled data set.

    Parameters
    ----------
    path : path or list of paths
        Data set file(s).
    id_key : str
        Key of the structure id in ``entry.data``.
    default_fidelity : {"pbe", "scan"}, optional
        Fidelity of entries that do not say.
    cost_model : CostModel
        Modelled DFT cost each result is charged.
    """

    path: str | Path | list = ""
    id_key: str = "structure_id"
    default_fidelity: str | None = None
    cost_model: CostModel = field(default_factory=CostModel)
    name: str = "replay"

    def __post_init__(self) -> None:
        if isinstance(self.cost_model, dict):  # from a campaign's stored backend options (plain JSON)
            self.cost_model = CostModel(**self.cost_model)
        raw = self.path if isinstance(self.path, list | tuple) else [self.path]
        if not raw or raw == [""]:
            raise InvalidInputError("the replay calculator needs path= (a labelled data set file)")
        self.paths = [str(Path(p).resolve()) for p in raw]
        self.dataset = load_replay_dataset(self.paths, self.id_key, self.default_fidelity)

    def make_flow(
        self, structure: Structure, fidelity: str, structure_id: str, *, uuid: str | None = None, **kwargs: Any
    ) -> Job:
        """One job returning the stored result; CalculationError now if the data set lacks it.

        ``uuid`` (default: :func:`~screener.calculators.base.calc_uuid`) is the job's uuid.
        """
        fidelity = check_fidelity(fidelity)
        item = self.dataset.get(structure_id, fidelity)
        calc_job = replay_job(
            structure_id, fidelity, self.paths, self.id_key, self.default_fidelity, self.cost_model.model_dump()
        )
        calc_job.name = f"replay {fidelity}"
        calc_job.set_uuid(uuid or calc_uuid(structure_id, fidelity, "replay", structure, *self.paths))
        calc_job.metadata.update(
            structure_id=structure_id,
            fidelity=fidelity,
            backend="replay",
            n_sites=len(item["structure"]["sites"]),
            cost_cpu_hours=self.estimate_cost_cpu_hours(structure, fidelity),
        )
        return calc_job

    def estimate_cost_cpu_hours(self, structure: Structure, fidelity: str) -> float:
        """Modelled DFT cost in CPU-hours of the calculation being replayed."""
        return self.cost_model.cpu_hours(len(structure), check_fidelity(fidelity))
