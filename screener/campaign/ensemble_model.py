"""The campaign's model: a PBE CGAT ensemble and a SCAN ensemble transferred from it, behind the ``Model`` interface.

* Prediction: formation energy per atom (eV/atom) per fidelity, ensemble mean and spread. Until the campaign has
  SCAN results there is no SCAN model: SCAN predictions come from the PBE model (the PBE -> SCAN transfer has not
  happened yet).
* Fine-tuning (each round, on ALL data so far, learning rate 1.25e-4, the checkpoint's target normalisation kept):
  the PBE ensemble continues training from its current weights on the campaign's PBE formation energies; the SCAN
  ensemble continues from its current weights (the first time: from the just-updated PBE ensemble, i.e. the
  PBE -> SCAN transfer) on the SCAN formation energies. ``transfer="full"``.
* The default initial model: ``models/<DEFAULT_PBE_MODEL>/`` (shipped in the wheel too) when it is there, else a
  small ensemble trained on first use on the shipped MP-20 demo set and cached in ``$SCREENER_CACHE_DIR``
  (default ``~/.cache/screener``).

torch is imported only when a prediction or a fine-tune is needed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from screener.campaign.protocols import ModelVersion

__all__ = ["EnsembleModel", "DEFAULT_PBE_MODEL", "default_model_dir", "shipped_models_dir", "MIN_POINTS_TO_FINE_TUNE",
           "pretraining_set_size", "CALIBRATION_FILENAME", "read_spread_calibration", "read_spread_exponents",
           "model_spread_calibration", "write_spread_calibration"]

logger = logging.getLogger(__name__)

MIN_POINTS_TO_FINE_TUNE = 2
#: Earlier results replayed per new result in each fine-tune epoch (a round's fine-tune costs O(new data)).
FINE_TUNE_REPLAY = 1
#: Fine-tune epochs without a better validation MAE (each member's own split) before it stops; None: every epoch
#: runs (the best-validation weights are kept either way). None because a campaign's validation splits hold a
#: handful of results, too noisy to stop on: with 3, most fine-tunes of a 1,463-candidate campaign stopped at epoch 4
#: with the epoch-1 weights where the full run's best was often epoch 10, and found one crystal fewer in each of two
#: seeds (bench/results/campaign_profile_cpu.json). An epoch costs O(new data) anyway.
FINE_TUNE_PATIENCE: int | None = None
#: False: every round's fine-tune trains on every result every epoch, also without new results (the cost grows with
#: the campaign; kept only so bench/campaign_profile.py can compare decisions with and without the sizing).
SIZED_FINE_TUNE = True
#: Beside a campaign fine-tune's ``ensemble.json``: the fidelity and structure ids it was trained on (plain JSON).
TRAINED_IDS_FILENAME = "campaign_training_ids.json"
FINE_TUNE_LR = 1.25e-4  # the paper's learning rate; the small preset's 1e-3 forgets the pre-training in a few epochs
_DEFAULT_MODEL_NAME = "pbe-formation-energy"
#: Folder name (under ``models/``) of the shipped default PBE ensemble; its MODEL_CARD.md says what it is.
DEFAULT_PBE_MODEL = "pbe-e-form-small-world20k"


#: ``command`` prefix in ``ensemble.json`` of the campaign's own fine-tunes (trained on campaign data, counted apart).
CAMPAIGN_FINE_TUNE_COMMAND = "screener run (round "


def pretraining_set_size(model_dir: str | Path, *, follow_init: bool = True) -> int:
    """Structures an ensemble learned from before the campaign, from its ``ensemble.json`` (torch is not needed).

    An ensemble's training data are its ``n_structures`` minus its common test split (``split.n_test``, which no
    member trained on): the train + validation structures, 17,616 of the 19,573 for the shipped model (each member
    trains on its own 80 % of them and validates on the rest). The campaign's own fine-tunes (trained on the
    campaign's results, which the loop counts itself) count 0; with ``follow_init`` the ``init_from`` chain is
    followed and the data of every model it was fine-tuned from are added (without it: this folder's data only).

    Returns
    -------
    int
        0 when the folder has no readable ``ensemble.json`` (a single model folder, a missing path).
    """
    total, seen, path = 0, set(), Path(model_dir)
    while str(path) not in seen and len(seen) < 32:
        seen.add(str(path))
        try:
            info = json.loads((path / "ensemble.json").read_text())
        except (OSError, ValueError):
            break
        if not str(info.get("command") or "").startswith(CAMPAIGN_FINE_TUNE_COMMAND):
            n_test = int((info.get("split") or {}).get("n_test") or 0)
            total += max(int(info.get("n_structures") or 0) - n_test, 0)
        parent = info.get("init_from")
        if not parent or not follow_init:
            break
        path = Path(parent)
    return total


#: Spread calibration of an ensemble folder, beside ``ensemble.json`` (metadata only: the weights are not touched).
CALIBRATION_FILENAME = "calibration.json"


def _recorded_calibration(model_dir: str | Path | None, *, follow_init: bool = True) -> dict[str, dict[str, float]]:
    """``{fidelity: {"scale": ..., ["exponent": ...]}}`` of the first folder in the ``init_from`` chain (only
    ``model_dir`` itself without ``follow_init``) whose ``calibration.json`` records a positive scale. A fit recorded
    for ``"model"`` (what ``screener train`` writes: the ensemble's own held-out split, whatever its fidelity) stands
    for every fidelity the file does not name. Only plain JSON numbers are read (nothing in the file is decoded into
    objects); unreadable values are ignored."""
    seen: set[str] = set()
    path = Path(model_dir) if model_dir else None
    while path is not None and str(path) not in seen and len(seen) < 32:
        seen.add(str(path))
        try:
            raw = json.loads((path / CALIBRATION_FILENAME).read_text())
            fits: dict[str, dict[str, float]] = {}
            for f, v in (raw.get("fidelities") or {}).items():
                if isinstance(v, dict) and float(v.get("scale", 0)) > 0:
                    fits[str(f)] = {"scale": float(v["scale"])}
                    exponent = v.get("exponent")
                    if isinstance(exponent, (int, float)) and 0.0 <= float(exponent) <= 1.0:
                        fits[str(f)]["exponent"] = float(exponent)
            if "model" in fits:
                for f in ("pbe", "scan"):
                    fits.setdefault(f, fits["model"])
            if fits:
                return fits
        except (OSError, ValueError, TypeError, AttributeError, KeyError):
            pass
        if not follow_init:
            break
        try:
            parent = json.loads((path / "ensemble.json").read_text()).get("init_from")
        except (OSError, ValueError, AttributeError):
            parent = None
        path = Path(parent) if parent else None
    return {}


def read_spread_calibration(model_dir: str | Path | None) -> dict[str, float]:
    """Spread scale per fidelity recorded for an ensemble (``calibration.json``), following ``init_from``.

    A campaign's fine-tunes carry no file of their own; their scale comes from the campaign's prospective errors
    (:func:`screener.campaign.ranking.spread_calibration`), with the scale found here as its prior.

    Returns
    -------
    dict
        ``{fidelity: scale}``; empty when no folder in the chain records one. Unreadable or non-positive values are
        ignored (a plain JSON number per fidelity; nothing in the file is decoded into objects).
    """
    return {f: v["scale"] for f, v in _recorded_calibration(model_dir).items()}


def read_spread_exponents(model_dir: str | Path | None) -> dict[str, float]:
    """Power-law exponent per fidelity recorded beside the scale (``calibration.json``; see
    :class:`screener.policies.calibration.SpreadCalibration`); a fidelity whose file records none is left out (a
    plain scale: exponent 1)."""
    return {f: v["exponent"] for f, v in _recorded_calibration(model_dir).items() if "exponent" in v}


def model_spread_calibration(model_dir: str | Path | None, fidelity: str = "pbe") -> Any:
    """The :class:`~screener.policies.calibration.SpreadCalibration` an ensemble's ``calibration.json`` records for
    ``fidelity`` (scale and exponent only; identity where none is recorded)."""
    from screener.policies.calibration import SpreadCalibration

    fit = _recorded_calibration(model_dir).get(fidelity, {})
    return SpreadCalibration(scale=fit.get("scale", 1.0), exponent=fit.get("exponent", 1.0))


def write_spread_calibration(model_dir: str | Path, fits: Mapping[str, Any], *, command: str = "") -> Path:
    """Write ``calibration.json`` (fits: ``{fidelity: SpreadCalibration}``) into an ensemble folder."""
    out = Path(model_dir) / CALIBRATION_FILENAME
    payload = {"what": "sigma = scale * 0.1 * (std / 0.1)^exponent in the target's unit (exponent 1 or absent: "
                       "scale * std); the scale is split-conformal (the 68.27 % quantile of |error| / (0.1 * (std / "
                       "0.1)^exponent) on held-out errors); weights unchanged",
               "command": command,
               "fidelities": {f: fit.model_dump(mode="json") for f, fit in fits.items()}}
    out.write_text(json.dumps(payload, indent=1) + "\n")
    return out


def campaign_training_ids(model_dir: str | Path, fidelity: str) -> set[str]:
    """Structure ids of the campaign's ``fidelity`` results a campaign fine-tune in ``model_dir`` was trained on.

    Empty for a model the campaign did not train (its initial model) or one of the other fidelity (the PBE model a
    first SCAN fine-tune starts from): then every result is new to it.
    """
    try:
        raw = json.loads((Path(model_dir) / TRAINED_IDS_FILENAME).read_text())
    except (OSError, ValueError):
        return set()
    if not isinstance(raw, dict) or raw.get("fidelity") != fidelity:
        return set()
    return {str(s) for s in raw.get("structure_ids") or []}


def write_campaign_training_ids(model_dir: str | Path, fidelity: str, ids: list[str]) -> Path:
    """Record the ``fidelity`` results a campaign fine-tune was trained on (read by :func:`campaign_training_ids`)."""
    out = Path(model_dir) / TRAINED_IDS_FILENAME
    out.write_text(json.dumps({"fidelity": fidelity, "structure_ids": list(ids)}) + "\n")
    return out


def _cache_root() -> Path:
    return Path(os.environ.get("SCREENER_CACHE_DIR", Path.home() / ".cache" / "screener"))


def shipped_models_dir() -> Path:
    """``models/`` of a checkout, or its copy inside an installed wheel."""
    from screener.data import data_path

    return Path(data_path("models"))


def default_model_dir(*, progress: Any = None) -> Path:
    """The shipped PBE ensemble, or a small one trained on the shipped demo set on first use (then cached).

    The shipped one is ``models/<DEFAULT_PBE_MODEL>`` of the repository, which wheels carry as package data
    (``screener/data/models`` links to ``models/``).
    """
    shipped = shipped_models_dir()
    if (shipped / DEFAULT_PBE_MODEL / "ensemble.json").is_file():
        return shipped / DEFAULT_PBE_MODEL
    cached = _cache_root() / "models" / f"{_DEFAULT_MODEL_NAME}-small-demo"
    if (cached / "ensemble.json").is_file():
        return cached
    from screener.cgat.api import DEMO_TARGET, demo_data_path, train_from_files

    logger.warning("no shipped model found: training a small PBE ensemble on the shipped demo set into %s "
                   "(once; later runs reuse it)", cached)
    tmp = cached.with_name(cached.name + ".partial")
    train_from_files([demo_data_path()], target=DEMO_TARGET, out_dir=tmp, preset="small", epochs=15, n_members=3,
                     seed=0, progress=progress, command="screener run (default model, first use)")
    tmp.replace(cached)
    return cached


class EnsembleModel:
    """PBE + SCAN CGAT ensembles of a campaign.

    Parameters
    ----------
    pbe_dir : path
        Current PBE ensemble folder.
    scan_dir : path, optional
        Current SCAN ensemble folder (None until the first SCAN fine-tune, unless the campaign started from one).
    cache_dir : path, optional
        Graph cache (the campaign's ``graphs/``).
    epochs : int
        Epochs of each fine-tune.
    device : str
        Torch device (``auto``: CUDA when available).
    initial_scan_dir : path, optional
        The SCAN ensemble the campaign started from (``scan_model``; trained on SCAN data before the campaign), whose
        training set is the SCAN pre-training of the scaling law; None: the campaign transfers its own.
    """

    def __init__(self, pbe_dir: str | Path, scan_dir: str | Path | None = None, *, cache_dir: str | Path | None = None,
                 epochs: int = 20, device: str = "auto", initial_scan_dir: str | Path | None = None) -> None:
        self.dirs: dict[str, Path | None] = {"pbe": Path(pbe_dir), "scan": Path(scan_dir) if scan_dir else None}
        self.initial_scan_dir = Path(initial_scan_dir) if initial_scan_dir else None
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.epochs, self.device = epochs, device
        self._ensembles: dict[str, Any] = {}
        self._graphs: dict[str, Any] = {}

    def _ensemble(self, fidelity: str) -> Any:
        path = self.dirs[fidelity] or self.dirs["pbe"]  # no SCAN model yet: the PBE model stands in
        key = str(path)
        if key not in self._ensembles:
            from screener.cgat import CGATEnsemble

            self._ensembles[key] = CGATEnsemble.load(path, device=self.device)
        return self._ensembles[key]

    #: Graph store of the campaign's candidates, under the graph cache folder (``<campaign>/graphs/store``).
    STORE_NAME = "store"

    def _candidate_store(self, structures: Mapping[str, Any], n_neighbors: int) -> Path | None:
        """The graph store of ``structures`` (featurised into it once, the first time; resumed if interrupted), or
        None without a cache folder. A store already there that holds other structures (a prebuilt one, or one built
        for another candidate list) is used for the ids it holds; one with other settings is rebuilt."""
        if self.cache_dir is None:
            return None
        from screener.errors import InvalidInputError
        from screener.graphs.store import _read_manifest, build_store_from_structures, is_store

        directory = self.cache_dir / self.STORE_NAME
        try:
            build_store_from_structures(list(structures.items()), directory, n_neighbors=n_neighbors)
        except InvalidInputError:
            manifest = _read_manifest(directory) if is_store(directory) else None
            if manifest is not None and manifest.complete and manifest.n_neighbors == n_neighbors:
                return directory  # holds other ids: the missing ones are built the usual way
            if directory.is_symlink():  # someone else's store: never removed or written here
                logger.warning("%s (a link) cannot serve these candidates: graphs are built one by one", directory)
                return None
            import shutil

            logger.warning("rebuilding the candidates' graph store %s (built for other settings)", directory)
            shutil.rmtree(directory, ignore_errors=True)
            build_store_from_structures(list(structures.items()), directory, n_neighbors=n_neighbors)
        return directory

    def _graphs_for(self, structures: Mapping[str, Any], n_neighbors: int) -> list[Any]:
        from screener.graphs import build_graphs

        todo = [s for s in structures if s not in self._graphs]
        if todo:
            graphs = build_graphs([structures[s] for s in todo], n_neighbors=n_neighbors, n_jobs=1,
                                  cache_dir=self.cache_dir, structure_ids=todo)
            self._graphs.update(zip(todo, graphs, strict=True))
        return [self._graphs[s] for s in structures]

    def pretraining_set_sizes(self) -> dict[str, int]:
        """Structures per fidelity the current models learned from before the campaign (the scaling law's N_p0).

        PBE: the pre-training set of the PBE ensemble the campaign started from (see :func:`pretraining_set_size`).
        SCAN: the training set of the SCAN ensemble the campaign started from (``initial_scan_dir``; it stays the
        pre-training after the campaign fine-tunes it), else of a current SCAN ensemble the campaign did not make, else
        0 (the SCAN ensemble is the campaign's own transfer of the PBE one, which learned only from the campaign).
        """
        scan_dir = self.initial_scan_dir or self.dirs["scan"]
        return {"pbe": pretraining_set_size(self.dirs["pbe"]),
                "scan": pretraining_set_size(scan_dir, follow_init=False) if scan_dir else 0}

    def spread_scales(self) -> dict[str, float]:
        """Prior spread scale per fidelity from the initial models' ``calibration.json`` (1 where none is recorded;
        SCAN predictions made by the PBE model use the PBE scale)."""
        pbe = read_spread_calibration(self.dirs["pbe"])
        scan = read_spread_calibration(self.dirs["scan"]) if self.dirs["scan"] else {}
        return {"pbe": pbe.get("pbe", 1.0), "scan": scan.get("scan", pbe.get("scan", pbe.get("pbe", 1.0)))}

    def spread_exponents(self) -> dict[str, float]:
        """Power-law exponent per fidelity recorded by the initial models' ``calibration.json`` (left out where the
        file records a plain scale or none); the campaign takes it as the prior of its refitted exponent."""
        pbe = read_spread_exponents(self.dirs["pbe"])
        scan = read_spread_exponents(self.dirs["scan"]) if self.dirs["scan"] else {}
        return {f: v for f, v in (("pbe", pbe.get("pbe")), ("scan", scan.get("scan", pbe.get("scan")))) if v is not None}

    def own_scan_calibration(self) -> Any:
        """The spread calibration the initial SCAN ensemble records for SCAN (its ``calibration.json``, fitted on its
        own held-out SCAN errors), or None: no initial SCAN ensemble, or one without a SCAN fit of its own."""
        from screener.policies.calibration import SpreadCalibration

        own = _recorded_calibration(self.initial_scan_dir, follow_init=False) if self.initial_scan_dir else {}
        if "scan" not in own:  # (a folder without its own file would inherit its PBE parent's fit)
            return None
        return SpreadCalibration(scale=own["scan"]["scale"], exponent=own["scan"].get("exponent", 1.0))

    def borrows_model(self, fidelity: str) -> bool:
        """Whether ``fidelity``'s predictions come from another fidelity's model (SCAN before any SCAN fine-tune)."""
        return self.dirs.get(fidelity) is None

    def predict_formation_energy(
        self, structures: Mapping[str, Any], fidelity: str
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Ensemble mean and std of the formation energy (eV/atom) at ``fidelity``.

        With a cache folder the structures are featurised once into the campaign's graph store and predicted shard
        by shard from its memory-mapped files (:func:`screener.campaign.ranking.predict_from_store`), so memory
        stays one batch of graphs whatever the number of candidates; anything the store lacks is built the usual
        way. The last prediction of each model folder is kept: SCAN predictions borrowed from the PBE model, or a
        model not fine-tuned since, are not computed twice.
        """
        from screener.campaign.ranking import predict_from_store

        ensemble = self._ensemble(fidelity)
        ids = list(structures)
        path = str(self.dirs[fidelity] or self.dirs["pbe"])
        kept = self.__dict__.setdefault("_predictions", {})  # model folder -> (ids, mean, std)
        if path in kept and kept[path][0] == ids:
            return kept[path][1].copy(), kept[path][2].copy()
        store = self._candidate_store(structures, ensemble.n_neighbors)
        if store is not None:
            mean, std, found = predict_from_store(ensemble, store, ids)
        else:
            mean, std, found = np.full(len(ids), np.nan), np.full(len(ids), np.nan), np.zeros(len(ids), dtype=bool)
        if not found.all():
            rest = [sid for sid, ok in zip(ids, found) if not ok]
            pred = ensemble.predict(self._graphs_for({s: structures[s] for s in rest}, ensemble.n_neighbors))
            mean[~found], std[~found] = pred.mean, pred.std
        current = {str(d) for d in self.dirs.values() if d is not None}
        kept.update({path: (ids, mean.copy(), std.copy())})
        for stale in [p for p in kept if p not in current]:  # only the current models' predictions are kept
            del kept[stale]
        return mean, std

    def fine_tune(self, targets: Mapping[str, Mapping[str, float]], structures: Mapping[str, Any], *, out_dir: str,
                  round_number: int, seed: int) -> list[ModelVersion]:
        """Continue training each fidelity's ensemble on its data so far, sized to the new data; returns the new
        versions.

        Sized so a round costs O(new data), not O(all data): a fidelity without results its current model has not
        seen keeps that model (no fine-tune, and its predictions stay valid); otherwise each epoch trains on the new
        results plus an equal number of replayed earlier ones (at least one batch; :data:`FINE_TUNE_REPLAY`), keeping
        the best weights on each member's validation split (:data:`FINE_TUNE_PATIENCE`), written
        once at the end (no per-epoch resume state: a killed fine-tune is run again from the start, same result).
        """
        from screener.cgat.api import train_config_for_preset
        from screener.cgat.ensemble import train_ensemble

        versions = []
        for fidelity in ("pbe", "scan"):
            data = dict(targets.get(fidelity, {}))
            if len(data) < MIN_POINTS_TO_FINE_TUNE:
                continue
            parent = self.dirs[fidelity] or self.dirs["pbe"]
            ids = sorted(data)
            seen = campaign_training_ids(parent, fidelity) if SIZED_FINE_TUNE else set()
            new = [i for i, s in enumerate(ids) if s not in seen]
            if not new:
                logger.info("round %d: no new %s results since %s: no fine-tune", round_number, fidelity, parent)
                continue
            base = self._ensemble(fidelity)
            graphs = self._graphs_for({s: structures[s] for s in ids}, base.n_neighbors)
            y = np.array([data[s] for s in ids])
            n, k = len(ids), len(base)
            # few points: every member sees all of them (validation = training data, stated in the metrics);
            # enough points: each member its own random 80/20 split
            if n < 10:
                splits = [(np.arange(n), np.arange(n)) for _ in range(k)]
            else:
                rngs = [np.random.default_rng([seed, j]) for j in range(k)]
                perms = [r.permutation(n) for r in rngs]
                splits = [(np.sort(p[n // 5:]), np.sort(p[: n // 5])) for p in perms]
            directory = Path(out_dir) / fidelity
            # a gentle fine-tune: the paper's transfer learning rate, and the checkpoint's target normalisation kept
            # (re-fitting mean/std on a handful of campaign points would rescale every prediction)
            batch = train_config_for_preset("small").batch_size
            samples = max(batch, (1 + FINE_TUNE_REPLAY) * len(new)) if SIZED_FINE_TUNE else n
            sized = dict(patience=FINE_TUNE_PATIENCE, samples_per_epoch=samples, write_every_epoch=False)
            config = train_config_for_preset("small", transfer=True, epochs=self.epochs, seed=seed, device=self.device,
                                             lr=FINE_TUNE_LR, **(sized if SIZED_FINE_TUNE else {}))
            ensemble = train_ensemble(
                graphs, y, directory=directory, target=base.target, target_unit=base.target_unit or "eV/atom",
                train_config=config, n_members=k, member_splits=splits, test_indices=[], init=parent,
                transfer="full", keep_normalization=True, focus_indices=new,
                resume=not SIZED_FINE_TUNE,  # it writes no resume state; one left by an older version is ignored
                command=f"{CAMPAIGN_FINE_TUNE_COMMAND}{round_number} fine-tune, {fidelity})",
            )
            write_campaign_training_ids(directory, fidelity, ids)
            self.dirs[fidelity] = directory
            self._ensembles[str(directory)] = ensemble
            metrics = {key: v for key, v in ensemble.info.metrics.items() if isinstance(v, (int, float, str))}
            metrics["validation_is_training_data"] = n < 10
            metrics["n_new"] = len(new)
            metrics["samples_per_epoch"] = min(samples, n)
            versions.append(ModelVersion(version=f"round{round_number:03d}-{fidelity}", fidelity=fidelity,
                                         path=str(directory), parent=str(parent), n_train=n, metrics=metrics))
        return versions
