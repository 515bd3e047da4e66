"""Rank candidates by predicted E_hull measured against the *current* hull of each fidelity.

The model predicts a formation energy per atom (``E_form``), never an E_hull: an E_hull target would go stale as soon
as a calculation moves the hull. Each round the prediction is measured against the hull as it is now::

    E_hull_pred(x) = E_form_pred(x) - E_form_hull(composition of x)
    std(E_hull_pred) = std(E_form_pred)

where ``E_form_hull`` is the formation energy of the lower convex hull at that composition (the hull is treated as
exact: the energies on it are computed, not predicted). A newly found stable phase lowers ``E_form_hull`` around its
composition, so its neighbours' E_hull rises in the next ranking without retraining anything.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from screener.campaign.protocols import Hulls

__all__ = ["predicted_e_hull", "probability_below", "prospective_errors", "spread_calibration"]

STD_FLOOR_EV_PER_ATOM = 1e-3


def predicted_e_hull(
    e_form_mean_ev_per_atom: Sequence[float] | NDArray[np.float64],
    e_form_std_ev_per_atom: Sequence[float] | NDArray[np.float64],
    compositions: Sequence[Any],
    hulls: Hulls,
    fidelity: str,
    *,
    fallback_fidelity: str | None = None,
    structure_ids: Sequence[str] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Predicted E_hull of candidates against the current hull of ``fidelity``.

    Parameters
    ----------
    e_form_mean_ev_per_atom, e_form_std_ev_per_atom : array, shape (n,)
        Ensemble mean and spread of the predicted formation energy.
    compositions : sequence of pymatgen Composition (or what the hulls accept), length n
    hulls : Hulls
        The campaign's per-fidelity hulls.
    fidelity : str
        Hull to measure against.
    fallback_fidelity : str, optional
        Hull to use where ``fidelity``'s hull cannot give an energy (e.g. the SCAN hull lacks an element): those rows
        are flagged in the last return value, never silently blended.
    structure_ids : sequence of str, optional
        The candidates' ids: a candidate that IS a known phase (``hulls.twins``) is measured against the hull
        without that twin, as its computed result will be.

    Returns
    -------
    e_hull_mean_ev_per_atom, e_hull_std_ev_per_atom, hull_e_form_ev_per_atom : ndarray, shape (n,)
    used_fallback : ndarray of bool, shape (n,)
    """
    mean = np.asarray(e_form_mean_ev_per_atom, dtype=float)
    std = np.asarray(e_form_std_ev_per_atom, dtype=float)
    hull_e = np.empty(len(compositions))
    fallback = np.zeros(len(compositions), dtype=bool)
    twins = getattr(hulls, "twins", None) or {}
    lookups = {f: _lookups(hulls, f) for f in (fidelity, fallback_fidelity) if f}

    def hull_energy(f: str, comp: Any, formula: str, sid: str | None) -> float:
        known = lookups[f].get(comp, formula, sid)
        if known is None:
            known = float(hulls.hull_formation_energy_ev_per_atom(f, comp, sid) if sid is not None
                          else hulls.hull_formation_energy_ev_per_atom(f, comp))
            lookups[f].put(comp, formula, sid, known)
        return known

    for i, comp in enumerate(compositions):
        formula = str(getattr(comp, "reduced_formula", comp))
        sid = str(structure_ids[i]) if structure_ids is not None and str(structure_ids[i]) in twins else None
        value = hull_energy(fidelity, comp, formula, sid)
        if not math.isfinite(value) and fallback_fidelity is not None:
            value = hull_energy(fallback_fidelity, comp, formula, sid)
            fallback[i] = True
        hull_e[i] = value
    return mean - hull_e, std.copy(), hull_e, fallback


class _HullLookups:
    """Hull formation energies of one fidelity's hull, kept from round to round.

    The worst case of a large campaign is every candidate in its own chemical system: a pymatgen phase diagram per
    system, fidelity and round. Two things avoid most of them, both exact:

    * a system whose hull holds nothing but elemental references (most random systems) has hull formation energy 0;
      it is answered from the set of element sets present, without a diagram;
    * a value depends only on the entries of its system (subsystems included): it is kept until an entry whose
      elements are a subset of the system is added, removed or changed (a round adds a few results).

    Hulls that do not expose their entries (``hulls.hulls[fidelity].entries``) get a per-call cache only.
    """

    def __init__(self, hull: Any) -> None:
        self.hull = hull
        self.seen: set[tuple[str, float, frozenset[str]]] = set()
        self.values: dict[tuple[str, str | None], tuple[frozenset[str], float]] = {}
        self.elements: set[str] = set()
        self.compounds: set[frozenset[str]] = set()
        self.elements_only: dict[frozenset[str], bool] = {}

    def refresh(self) -> None:
        """Forget the values of the systems whose entries changed since the last call."""
        if self.hull is None:
            self.values.clear()
            return
        current = {(str(getattr(e, "entry_id", None)), float(e.energy),
                    frozenset(str(el) for el in e.composition.elements)) for e in self.hull.entries}
        changed = {els for _, _, els in current ^ self.seen}
        if not changed:
            return
        self.seen = current
        self.values = {k: v for k, v in self.values.items() if not any(c <= v[0] for c in changed)}
        sets = {els for _, _, els in current}
        self.elements = {next(iter(els)) for els in sets if len(els) == 1}
        self.compounds = {els for els in sets if len(els) > 1}
        self.elements_only.clear()

    @staticmethod
    def _elements(comp: Any) -> frozenset[str]:
        if not hasattr(comp, "elements"):
            from pymatgen.core import Composition

            comp = Composition(str(comp))
        return frozenset(str(el) for el in comp.elements)

    def get(self, comp: Any, formula: str, sid: str | None) -> float | None:
        kept = self.values.get((formula, sid))
        if kept is not None:
            return kept[1]
        if self.hull is None or sid is not None:
            return None
        els = self._elements(comp)
        if els not in self.elements_only:
            import itertools

            self.elements_only[els] = len(els) <= 8 and els <= self.elements and not any(
                frozenset(sub) in self.compounds for k in range(2, len(els) + 1)
                for sub in itertools.combinations(sorted(els), k))
        if self.elements_only[els]:
            self.values[(formula, sid)] = (els, 0.0)  # only elemental references in its system
            return 0.0
        return None

    def put(self, comp: Any, formula: str, sid: str | None, value: float) -> None:
        # without a hull to watch, kept for this call only (refresh() clears it)
        self.values[(formula, sid)] = (self._elements(comp) if self.hull is not None else frozenset(), value)


_LOOKUPS: weakref.WeakKeyDictionary[Any, dict[str, _HullLookups]] = weakref.WeakKeyDictionary()


def _lookups(hulls: Hulls, fidelity: str) -> _HullLookups:
    """The kept look-ups of ``hulls``' ``fidelity`` hull, refreshed (a fresh, per-call one for other hulls)."""
    inner = getattr(hulls, "hulls", None)
    hull = inner.get(fidelity) if isinstance(inner, dict) else None
    if hull is None or not hasattr(hull, "entries"):
        return _HullLookups(None)
    try:
        per_fidelity = _LOOKUPS.setdefault(hulls, {})
    except TypeError:  # not weak-referenceable: nothing kept between calls
        per_fidelity = {}
    if fidelity not in per_fidelity or per_fidelity[fidelity].hull is not hull:
        per_fidelity[fidelity] = _HullLookups(hull)
    per_fidelity[fidelity].refresh()
    return per_fidelity[fidelity]


def probability_below(
    mean: NDArray[np.float64], std: NDArray[np.float64], threshold: float = 0.0
) -> NDArray[np.float64]:
    """Gaussian probability that a value with ``mean`` and ``std`` lies at or below ``threshold``."""
    mean = np.asarray(mean, dtype=float)
    std = np.maximum(np.asarray(std, dtype=float), STD_FLOOR_EV_PER_ATOM)
    z = (threshold - mean) / (std * math.sqrt(2.0))
    return 0.5 * (1.0 + np.vectorize(math.erf, otypes=[float])(z)) if z.size else np.zeros(0)


def prospective_errors(ledger: Any, targets: dict[str, dict[str, float]], fidelity: str,
                       rounds: Sequence[int], *, as_ranked: bool = False
                       ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Errors of predictions made before purchase: round r's recorded prediction of each structure computed in round r
    at ``fidelity`` minus its result (formation energy, eV/atom), with the raw ensemble std and the calibrated std the
    round ranked with (``e_hull_std_ev_per_atom``; equal to the raw one in ledgers written before calibration).

    ``as_ranked``: the error of the mean the round ranked with (``e_hull_mean + hull_e_form``: a borrowed SCAN
    prediction shifted by the learned bias), the one its calibrated std belongs to; else of the model's raw mean.

    Returns
    -------
    errors, raw_std, used_std : ndarray
    """
    done: dict[int, list[str]] = {}
    for number, sid, _ in ledger.done_calculations(fidelity):
        if number in rounds and sid in targets.get(fidelity, {}):
            done.setdefault(number, []).append(sid)
    err, raw, used = [], [], []
    for r, sids in sorted(done.items()):
        preds = {p["structure_id"]: p for p in ledger.predictions(r, structure_ids=sids)
                 if p["fidelity"] == fidelity}
        for sid in sids:
            p = preds.get(sid)
            if p is None or p.get("e_form_mean_ev_per_atom") is None:
                continue
            mean = p["e_form_mean_ev_per_atom"]
            ranked, hull_e = p.get("e_hull_mean_ev_per_atom"), p.get("hull_e_form_ev_per_atom")
            if as_ranked and ranked is not None and hull_e is not None:
                mean = ranked + hull_e
            err.append(mean - targets[fidelity][sid])
            raw.append(p.get("e_form_std_ev_per_atom") or 0.0)
            used.append(p.get("e_hull_std_ev_per_atom") or raw[-1])
    return np.asarray(err, float), np.asarray(raw, float), np.asarray(used, float)


#: The spread scale is fitted on the most recent rounds that hold at least this many prospective errors.
CALIBRATION_MIN_ERRORS = 20


def calibration_rounds(ledger: Any, targets: dict[str, dict[str, float]], fidelity: str, before_round: int,
                       min_errors: int = CALIBRATION_MIN_ERRORS) -> range:
    """The latest rounds before ``before_round`` that together hold at least ``min_errors`` computed structures of
    ``fidelity`` (all earlier rounds if they hold fewer). Each round's fine-tune changes the model, so its older errors
    are not exchangeable with the next round's: fitted on every round since the start, the PBE scale of a
    fine-tuned ensemble ran large (80 % of the next errors within 1 sigma on the issue-12 worlds)."""
    counts: dict[int, int] = {}
    for number, sid, _ in ledger.done_calculations(fidelity):
        if number < before_round and sid in targets.get(fidelity, {}):
            counts[number] = counts.get(number, 0) + 1
    start, total = before_round, 0
    for r in sorted(counts, reverse=True):
        start, total = r, total + counts[r]
        if total >= min_errors:
            break
    return range(start, before_round) if total >= min_errors else range(1, before_round)


def spread_calibration(ledger: Any, targets: dict[str, dict[str, float]], fidelity: str, before_round: int,
                       prior_scale: float = 1.0, prior_weight: float = 5.0, debias: bool = False,
                       min_errors: int = CALIBRATION_MIN_ERRORS, exponent_prior: float | None = None) -> Any:
    """The spread scale of ``fidelity`` refitted on the campaign's prospective errors of the latest rounds before
    ``before_round`` that hold ``min_errors`` of them (:func:`calibration_rounds`), shrunk toward ``prior_scale``
    (the model card's); ``debias``: the predictions will be shifted by the fitted bias, so the scale is fitted on
    the de-biased errors; ``exponent_prior``: fit the power-law exponent of the std with this prior (None: one
    plain scale); see :mod:`screener.policies.calibration`."""
    from screener.policies.calibration import fit_spread_calibration

    rounds = calibration_rounds(ledger, targets, fidelity, before_round, min_errors)
    err, raw, _ = prospective_errors(ledger, targets, fidelity, rounds)
    first = rounds.start if len(rounds) else before_round
    return fit_spread_calibration(err, raw, prior_scale=prior_scale, prior_weight=prior_weight, debias=debias,
                                  exponent_prior=exponent_prior,
                                  source=f"prospective errors of rounds {first}-{before_round - 1} (prior scale "
                                         f"{prior_scale:.3g})")


def predict_from_store(ensemble: Any, store_dir: Any, structure_ids: Sequence[str]
                       ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Ensemble mean and std of the entries of a graph store, shard by shard (:func:`screener.cgat.rank.predict_chunk`:
    one batch of graphs read from the memory-mapped shards at a time, whatever the number of candidates).

    Returns
    -------
    mean, std : ndarray, shape (n,)
        NaN where ``found`` is False.
    found : ndarray of bool, shape (n,)
        Ids the store holds a readable graph for (the caller builds the others the usual way).
    """
    from screener.cgat.rank import RankChunk, predict_chunk
    from screener.graphs.store import GraphStore

    store = GraphStore(store_dir)
    position = {sid: i for i, sid in enumerate(structure_ids)}
    mean = np.full(len(structure_ids), np.nan)
    std = np.full(len(structure_ids), np.nan)
    found = np.zeros(len(structure_ids), dtype=bool)
    for k in range(store.n_shards):
        rows = [row for row, sid in enumerate(store.shard(k).ids) if sid in position]
        if not rows:
            continue
        chunk = RankChunk("store", str(store.directory), k)
        for batch, m, s in predict_chunk(ensemble, chunk, rows=rows, skip_invalid=True):
            idx = np.fromiter((position[sid] for sid, _ in batch), dtype=np.int64, count=len(batch))
            mean[idx], std[idx], found[idx] = m, s, True
    return mean, std, found


#: A campaign with more candidates than this records, per round and fidelity, only the predictions of the
#: :data:`STORED_TOP_N` best by predicted E_hull, the :data:`STORED_TOP_N` best by P(stable) and every planned
#: candidate (what the report, the calibration and the learning curve read); a smaller one records every prediction.
STORE_ALL_PREDICTIONS_UP_TO = 20_000
STORED_TOP_N = 1_000
#: Ledger meta key saying that (and with which numbers) a campaign recorded only part of its predictions.
PREDICTION_STORAGE_META = "prediction_storage"


def prediction_storage_rule() -> dict[str, Any]:
    """What :func:`stored_prediction_rows` keeps, for the ledger (``meta.prediction_storage``) and the report."""
    return {"store_all_up_to": STORE_ALL_PREDICTIONS_UP_TO, "top_n": STORED_TOP_N,
            "rule": f"more than {STORE_ALL_PREDICTIONS_UP_TO} candidates: per round and fidelity, the {STORED_TOP_N} "
                    f"best by predicted E_hull, the {STORED_TOP_N} best by P(stable) and every planned candidate"}


def stored_prediction_rows(e_hull_mean_ev_per_atom: NDArray[np.float64], p_stable: NDArray[np.float64]
                           ) -> NDArray[np.int64] | None:
    """Rows of one fidelity's ranking the ledger records: None (all) up to :data:`STORE_ALL_PREDICTIONS_UP_TO`
    candidates, else the indices (ascending) of the best :data:`STORED_TOP_N` by E_hull and by P(stable)."""
    e_hull = np.asarray(e_hull_mean_ev_per_atom, dtype=float)
    if e_hull.size <= STORE_ALL_PREDICTIONS_UP_TO:
        return None
    by_e_hull = np.argsort(np.where(np.isfinite(e_hull), e_hull, np.inf), kind="stable")[:STORED_TOP_N]
    by_p = np.argsort(-np.nan_to_num(np.asarray(p_stable, dtype=float), nan=-1.0), kind="stable")[:STORED_TOP_N]
    return np.union1d(by_e_hull, by_p)


def prediction_row(structure_id: str, fidelity: str, ranking: dict[str, Any], i: int) -> dict[str, Any]:
    """The ledger's prediction row of candidate ``i`` of a round's ranking of one fidelity (the arrays of
    :meth:`screener.campaign.loop.Campaign.rank`): the model's raw E_form mean/std, the hull formation energy, and the
    calibrated (and, for a borrowed model, shifted) E_hull mean/std and P(stable) the policy used."""

    def finite(x: Any) -> float | None:
        return float(x) if np.isfinite(x) else None

    return {"structure_id": structure_id, "fidelity": fidelity,
            "e_form_mean_ev_per_atom": float(ranking["e_form_mean"][i]),
            "e_form_std_ev_per_atom": float(ranking["e_form_std"][i]),
            "hull_e_form_ev_per_atom": finite(ranking["hull_e_form"][i]),
            "e_hull_mean_ev_per_atom": finite(ranking["e_hull_mean"][i]),
            "e_hull_std_ev_per_atom": float(ranking["e_hull_std"][i]), "p_stable": finite(ranking["p_stable"][i]),
            "hull_fidelity": "pbe (fallback)" if ranking["fallback"][i] else fidelity}
