"""Read-only summary of a campaign from its ledger (what ``screener status`` shows)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from screener.campaign.folder import lock_holder
from screener.campaign.ledger import LEDGER_FILENAME, Ledger, LedgerDamagedError, json_object, json_safe

__all__ = ["campaign_status"]


def campaign_status(campaign_dir: str | Path) -> dict[str, Any]:
    """Budget, calculations, discoveries, model error and rounds of a campaign.

    Parameters
    ----------
    campaign_dir : path
        A campaign folder (raises :class:`~screener.errors.InvalidInputError` when it is not one).

    Returns
    -------
    dict
        JSON-serialisable: ``budget_total``, ``budget_spent``, ``budget_reserved``, ``budget_left``, ``budget_unit``,
        ``calculations`` (``{fidelity: {state: count}}``), ``stable_found`` (ids of candidates computed at SCAN level
        whose E_hull on the latest SCAN hull, with the competing phases it holds, is at most
        ``stable_threshold_ev_per_atom``), ``n_stable_found``, ``stable_pbe``, ``e_hull_ev_per_atom`` (``{fidelity:
        {id: E_hull}}`` of the computed candidates, as the ledger's latest hull snapshot records them),
        ``stable_threshold_ev_per_atom`` (the campaign's, default 0), ``rediscoveries`` (``{candidate id: [known
        phase ids]}``: candidates that ARE a known phase, judged against the hull without it), ``n_new_stable``
        (stable finds that are not rediscoveries),
        ``model_error`` (latest prospective MAE per fidelity, eV/atom), ``rounds`` (one dict per round),
        ``finished``, ``running`` (``{"pid", "host", "since"}`` of the process running it, or None) and ``config``.
        Non-finite numbers are None, so the dict dumps to standard JSON.

    The ledger is only read (SQLite ``mode=ro``, no lock): this works while a run writes and in a read-only folder.
    """
    import sqlite3

    try:
        return _status(campaign_dir)
    except sqlite3.DatabaseError as exc:  # damage quick_check did not see, met while reading
        raise LedgerDamagedError(Path(campaign_dir) / LEDGER_FILENAME, str(exc)) from None


def _stop_reason(current: dict[str, Any] | None) -> str | None:
    """Why a finished campaign stopped, as its empty last round recorded it (text only; None if not recorded)."""
    if current is None or current["state"] != "empty":
        return None
    reason = json_object(current.get("info_json")).get("stop_reason")
    return reason if isinstance(reason, str) else None


def _status(campaign_dir: str | Path) -> dict[str, Any]:
    with Ledger.in_dir(campaign_dir, read_only=True) as ledger:
        budget = ledger.budget()
        candidates = {c["structure_id"]: c for c in ledger.candidates(role="candidate", with_structures=False)}
        config = ledger.get_meta("config", {}) or {}
        threshold = float(config.get("stable_threshold_ev_per_atom") or 0.0)
        stable: dict[str, list[str]] = {}
        e_hull: dict[str, dict[str, float]] = {}
        for fidelity in ("pbe", "scan"):
            snaps = ledger.hull_snapshots(fidelity)
            payload = json.loads(snaps[-1]["hull_json"]) if snaps else {}
            # the snapshot's own call (each candidate judged without its known twin, at the campaign's threshold)
            stable[fidelity] = [s for s in payload.get("stable_ids", []) if s in candidates]
            if fidelity == "scan" and payload.get("stable_threshold_ev_per_atom") is not None:
                threshold = float(payload["stable_threshold_ev_per_atom"])  # the one these stable ids were judged at
            e_hull[fidelity] = {s: v for s, v in (payload.get("e_hull_ev_per_atom") or {}).items() if s in candidates}
        from screener.campaign.hulls import CANDIDATE_TWINS_META, candidate_twins_of

        twins = candidate_twins_of({CANDIDATE_TWINS_META: ledger.get_meta(CANDIDATE_TWINS_META) or {}})
        model_error: dict[str, float] = {}
        for point in ledger.learning_curve():
            model_error[point["fidelity"]] = point["mae_ev_per_atom"]
        rounds = []
        for r in ledger.rounds():
            rounds.append({
                "round": r["round"], "state": r["state"], "calculations": r["jobs"], "cost": r["cost"],
                **{k: v for k, v in r["info"].items() if k.startswith("mae_")},
            })
        current = ledger.current_round()
        models = ledger.models()
        return json_safe({
            "campaign_dir": str(campaign_dir),
            "budget_total": budget.total,
            "budget_spent": budget.spent,
            "budget_reserved": budget.reserved,
            "budget_left": budget.remaining,
            "budget_unit": budget.unit,
            "calculations": ledger.job_counts(),
            "n_candidates": len(candidates),
            "stable_found": stable["scan"],
            "n_stable_found": len(stable["scan"]),
            "n_new_stable": sum(1 for s in stable["scan"] if s not in twins),
            "stable_pbe": stable["pbe"],
            "stable_threshold_ev_per_atom": threshold,
            "e_hull_ev_per_atom": e_hull,
            "rediscoveries": {s: keys for s, keys in sorted(twins.items()) if s in candidates},
            "model_error": model_error,
            "model_versions": [m["version"] for m in models],
            "rounds": rounds,
            "finished": bool(current is not None and current["state"] == "empty"),
            # why it finished, where the policy stopped with budget left (the empty round's info)
            "stop_reason": _stop_reason(current),
            "running": lock_holder(campaign_dir),
            "config": config,
        })
