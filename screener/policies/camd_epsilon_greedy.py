"""Peer policy ``camd-epsilon-greedy``: TRI's CAMD ``EpsilonGreedyMultiAgent``, on screener's numbers.

Follows ``camd/agent/multi_fidelity.py::EpsilonGreedyMultiAgent`` (CAMD, TRI-AMDD/CAMD at 23128c5; Palizhati et al.,
"Multi-fidelity sequential learning for accelerated materials discovery", ChemRxiv 2021). Its selection rule, per
round of ``N`` picks (CAMD's ``total_budget``):

1. rank the open high-fidelity (SCAN) candidates by the model's prediction, best first (CAMD ranks by distance to a
   target value or by ascending/descending prediction; stability is "lower E_hull is better": ascending, as CAMD's
   stability agents do);
2. take the first ``int(N * high_fidelity_fraction)`` of them with SCAN (CAMD's ``highFi_query_frac``; with
   ``similarity_threshold`` set, only those whose raw composition features lie within that L2 distance of a seed
   composition, CAMD's ``similarity_thres`` gate);
3. for each remaining SCAN candidate in rank order (the next-best, and any the gate refused), buy the
   ``low_fidelity_per_high_fidelity`` open low-fidelity (PBE) candidates nearest to it in composition-feature space
   (CAMD's ``lowFi_per_highFi``), until ``N`` picks;
4. no open PBE candidate left: the ``N`` best SCAN candidates (CAMD's ``head(total_budget)``).

Despite its name the agent is purely exploitative; "epsilon" is the fixed low-fidelity share.

What differs from CAMD, and why:

- The model is screener's CGAT ensemble (its predicted SCAN E_hull), fine-tuned on the same seed data each round.
  CAMD takes any scikit-learn regressor on Magpie features (``SVR(C=10)`` in its tests); the agent is defined by its
  selection rule, and using the campaign's own model makes the comparison one of selection rules.
- ``N`` is the round's calculation cap (``--batch``); picks also stop when the round budget (CPU-hours) is spent, and
  each SCAN pick carries the competing phases its SCAN hull needs (CAMD has neither costs nor hulls).
- Ties between SCAN candidates go to the lower predicted E_hull, then the candidate order; among equally near PBE
  candidates the SCAN candidate's own structure comes first, then the lower predicted PBE E_hull.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["plan_epsilon_greedy"]


def _features(state: Any) -> np.ndarray | None:
    if not state.formulas:
        return None
    from screener.policies.camd_features import composition_features

    return composition_features(state.formulas)


def _passes_gate(x: np.ndarray, seed: np.ndarray | None, threshold: float | None) -> bool:
    if threshold is None or seed is None:
        return True
    if not len(seed):
        return False
    return bool((np.linalg.norm(seed - x, axis=1) <= threshold).any())


def plan_epsilon_greedy(r: Any, policy: Any, state: Any) -> dict[str, Any]:
    """Plan one round of ``camd-epsilon-greedy`` into the round book-keeping ``r`` (see the module docstring).

    Parameters
    ----------
    r : screener.policies.decide._Round
        The round (costs, open masks, planned items); items are appended to it.
    policy : PolicyConfig
        Its ``camd`` block holds the agent's parameters.
    state : PolicyState
        ``formulas`` and ``seed_rows`` are needed only for the similarity gate and the nearest-PBE choice.

    Returns
    -------
    dict
        Numbers for the ledger (the count split and the gate's refusals).
    """
    cfg = policy.camd
    n_total = policy.max_calculations_per_round or policy.batch_size
    n_high = int(n_total * cfg.high_fidelity_fraction)
    ids = state.candidate_ids
    scan_open = np.flatnonzero(r.open_scan)
    rank = scan_open[np.lexsort((scan_open, r.mean_scan[scan_open]))]  # ascending predicted SCAN E_hull
    feats = _features(state)
    seed = None
    if cfg.similarity_threshold is not None and feats is not None:
        from screener.policies.camd_features import composition_features

        seed = composition_features(sorted({f for f, _, _ in state.seed_rows}))
    n_candidates = {"scan": 0, "pbe": 0}
    refused = 0

    def scan_planned() -> set[str]:
        return {it.job_id for it in r.items if it.fidelity == "scan"}

    def scan(i: int, why: str) -> bool:
        before = len(r.items)
        if r.add_scan([int(i)], r.left, why) <= 0 or not r.planned[i]:
            return False
        for item in r.items[before:]:
            if item.kind == "candidate":
                item.numbers = {"camd_rank": int(np.flatnonzero(rank == i)[0]), "camd_role": "high fidelity"}
        n_candidates["scan"] += 1
        return True

    if not r.open_pbe.any():  # CAMD: only high-fidelity candidates left, the whole count goes to them
        for i in rank:
            if n_candidates["scan"] >= n_total or r.left <= 0:
                break
            scan(int(i), "CAMD epsilon-greedy: SCAN (no PBE candidate left)")
    else:
        for i in rank:
            if n_candidates["scan"] >= n_high or r.left <= 0:
                break
            if feats is not None and not _passes_gate(feats[i], seed, cfg.similarity_threshold):
                refused += 1
                continue
            scan(int(i), "CAMD epsilon-greedy: SCAN, best predicted")
        lf_pool = [int(j) for j in np.flatnonzero(r.open_pbe & ~r.planned)]
        for i in rank:
            if n_candidates["scan"] + n_candidates["pbe"] >= n_total or r.left <= 0 or not lf_pool:
                break
            if ids[i] in scan_planned():
                continue  # selected with SCAN above (or planned as a competing phase)
            pool = np.array(lf_pool)
            if feats is not None:
                dist = np.linalg.norm(feats[pool] - feats[i], axis=1)
            else:  # no compositions: only the candidate's own structure is known to be near
                dist = np.where(pool == i, 0.0, np.inf)
            near = np.isfinite(dist)
            pool, dist = pool[near], dist[near]
            order = [int(j) for j in pool[np.lexsort((pool, r.mean_pbe[pool], pool != i, dist))]]
            taken = 0
            for j in order:
                if taken >= cfg.low_fidelity_per_high_fidelity or n_candidates["scan"] + n_candidates["pbe"] >= n_total:
                    break
                before = len(r.items)
                if r.add_pbe([j], r.left, f"CAMD epsilon-greedy: PBE near SCAN candidate {ids[i]}") > 0:
                    for item in r.items[before:]:
                        item.numbers = {"camd_rank": int(np.flatnonzero(rank == i)[0]), "camd_role": "low fidelity",
                                        "camd_for": ids[i]}
                    n_candidates["pbe"] += 1
                    taken += 1
                lf_pool.remove(j)
    return {"camd_n_total": n_total, "camd_n_high_fidelity": n_high,
            "camd_high_fidelity_fraction": cfg.high_fidelity_fraction,
            "camd_scan_picks": n_candidates["scan"], "camd_pbe_picks": n_candidates["pbe"],
            "camd_refused_by_similarity": refused}
