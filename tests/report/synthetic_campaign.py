"""A small but complete campaign ledger for report tests, written through the campaign's own ledger API.

Two chemical systems (Li-O, Na-Cl), five candidates, stand-in elemental references, two finished rounds (PBE then
SCAN, one failed SCAN job) and an empty third round. Energies are invented but consistent: the hulls are built with
:class:`screener.campaign.hulls.CampaignHulls` exactly as the campaign loop does.
"""

from __future__ import annotations

import json
import uuid as uuidlib
from pathlib import Path

from pymatgen.core import Lattice, Structure

from screener.calculators.result import CalcResult, make_entry_dict
from screener.campaign.config import CampaignConfig
from screener.campaign.hulls import CampaignHulls
from screener.campaign.ledger import Ledger
from screener.hull import make_reference_entries
from screener.policies.scaling_law import ScalingLawFit

LABEL = {"pbe": "stand-in: CHGNet 0.3.0 (ML potential trained on MPtrj PBE/PBE+U), not DFT",
         "scan": "stand-in: CHGNet r2scan (ML potential fine-tuned on MP r2SCAN), not DFT"}

# element -> (structure, energy per atom in eV) per fidelity
_REF_E = {"pbe": {"Li": -1.9, "O": -4.9, "Na": -1.3, "Cl": -1.8},
          "scan": {"Li": -2.3, "O": -6.0, "Na": -1.6, "Cl": -2.2}}
# candidate -> formation energy per atom (eV/atom) per fidelity
_E_FORM = {
    "Li2O-afl": {"pbe": -2.05, "scan": -2.10},
    "LiO2-hyp": {"pbe": -0.90, "scan": -0.85},
    "NaCl-rs": {"pbe": -2.00, "scan": -2.05},
    "Na3Cl-hyp": {"pbe": -0.40, "scan": -0.30},
    "Li/O odd:id": {"pbe": -1.10, "scan": -1.20},
}


def _elements() -> dict[str, Structure]:
    return {
        "Li": Structure(Lattice.cubic(3.44), ["Li", "Li"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        "Na": Structure(Lattice.cubic(4.23), ["Na", "Na"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        "O": Structure(Lattice.tetragonal(4.0, 6.0), ["O", "O"], [[0, 0, 0], [0, 0, 0.2]]),
        "Cl": Structure(Lattice.tetragonal(4.5, 6.5), ["Cl", "Cl"], [[0, 0, 0], [0, 0, 0.31]]),
    }


def candidate_structures() -> dict[str, Structure]:
    """The five candidates (real, valid pymatgen structures)."""
    return {
        "Li2O-afl": Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.61), ["Li", "O"], [[0.25] * 3, [0, 0, 0]]),
        "LiO2-hyp": Structure(Lattice.orthorhombic(3.0, 4.2, 5.0), ["Li", "O", "O"],
                              [[0, 0, 0], [0.5, 0.5, 0.35], [0.5, 0.5, 0.65]]),
        "NaCl-rs": Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3]),
        "Na3Cl-hyp": Structure(Lattice.cubic(5.2), ["Na", "Na", "Na", "Cl"],
                               [[0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5], [0, 0, 0]]),
        "Li/O odd:id": Structure(Lattice.hexagonal(3.1, 5.0), ["Li", "O"], [[0, 0, 0], [1 / 3, 2 / 3, 0.5]]),
        "never-picked": Structure(Lattice.cubic(4.0), ["Na", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    }


def _result(sid: str, structure: Structure, fidelity: str, *, success: bool = True) -> CalcResult:
    n = len(structure)
    comp = structure.composition
    cost = 0.44 * n * (5.0 if fidelity == "scan" else 1.0)  # 10 % above the estimate the plan reserved
    if not success:
        return CalcResult.failed(structure_id=sid, fidelity=fidelity, backend="standin", label=LABEL[fidelity],
                                 reason="relaxation did not converge in 200 steps", n_sites=n, cost_cpu_hours=cost)
    refs = sum(comp.get_atomic_fraction(el) * _REF_E[fidelity][str(el)] for el in comp.elements)
    e_per_atom = refs + _E_FORM[sid][fidelity]
    final = structure.copy()
    final.scale_lattice(structure.volume * 1.02)
    entry = make_entry_dict(final, e_per_atom * n, structure_id=sid, fidelity=fidelity, backend="standin",
                            run_type="CHGNet-0.3.0" if fidelity == "pbe" else "CHGNet-r2scan",
                            data={"label": LABEL[fidelity]})
    return CalcResult(structure_id=sid, fidelity=fidelity, backend="standin", label=LABEL[fidelity], success=True,
                      energy_ev=e_per_atom * n, energy_per_atom_ev=e_per_atom, n_sites=n,
                      final_structure=final.as_dict(), run_type=entry["parameters"]["run_type"], wall_time_s=0.8,
                      cost_cpu_hours=cost, entry=entry)


def _predictions(ids: list[str], shift: float) -> list[dict]:
    rows = []
    for i, sid in enumerate(ids):
        for fidelity in ("pbe", "scan"):
            e_form = _E_FORM.get(sid, {"pbe": -0.5, "scan": -0.5})[fidelity] + shift * (1 if i % 2 else -1)
            rows.append({"structure_id": sid, "fidelity": fidelity, "e_form_mean_ev_per_atom": e_form,
                         "e_form_std_ev_per_atom": 0.05 + 0.01 * i, "hull_e_form_ev_per_atom": -1.0,
                         "e_hull_mean_ev_per_atom": 0.02 * i - shift, "e_hull_std_ev_per_atom": 0.04 + 0.01 * i,
                         "p_stable": 0.5 - 0.05 * i})
    return rows


def _numbers(round_number: int, n_scan: int, n_pbe: int) -> dict:
    fit = ScalingLawFit.from_prior().model_dump(mode="json")
    return {"policy": "scaling-law", "kind": "scaling-law", "round_budget_cpu_hours": 20.0, "fit_source": "prior",
            "a": -0.3, "b": -0.24, "a_std": 0.1, "b_std": 0.1, "n_scan_planned": n_scan, "n_pbe_planned": n_pbe,
            "scaling_law": fit,
            "allocation": {"decision": "mixed", "n_scan": n_scan, "n_pbe": n_pbe, "mae_now": 0.08,
                           "gain_per_cpu_hour_scan": 1e-4, "gain_per_cpu_hour_pbe": 2e-4 / round_number,
                           "reason": f"round {round_number}: PBE buys more per CPU-hour"}}


def _ev_numbers(round_number: int, n_scan: int, n_pbe: int, n_done: dict[str, int]) -> dict:
    """Plan numbers as the expected-value policy records them (distinct per round, so a mix-up shows)."""
    return {"policy": "expected-value", "kind": "expected-value", "n_scan_planned": n_scan, "n_pbe_planned": n_pbe,
            "n_pbe_pretraining": 17616, "n_pbe_campaign": n_done["pbe"], "n_scan_campaign": n_done["scan"],
            "ev_lambda_per_cpu_hour": 0.0123 * round_number, "ev_follow_ups_reserved_cpu_hours": 7.5 + round_number,
            "ev_stop_rate_per_cpu_hour": 0.0031 * round_number, "ev_n_found": 2 + round_number,
            "ev_spent_cpu_hours": 41.5 * round_number,
            "ev_learning_value_scan": 0.0456 / round_number,
            "ev_learning_value_pbe": 0.00078 * round_number, "ev_learning_value_added": round_number % 2 == 0,
            "ev_mae_now_ev_per_atom": 0.0912 / round_number,
            "ev_picks_left": 4 - round_number, "pbe_scan_p_stable_if_pbe_stable": 0.8123 - 0.01 * round_number,
            "pbe_scan_p_stable_just_above_hull": 0.2345 + 0.01 * round_number,
            "pbe_scan_c0": 0.887 + 0.1 * round_number, "pbe_scan_c1_per_ev_per_atom": 14.6 - round_number,
            "pbe_scan_n_pairs": 150 + round_number, "pbe_scan_relation_source": "probit on <pairs> | known set",
            "pbe_scan_c_below_per_ev_per_atom": 0.0 if round_number == 1 else 8.5 + round_number,
            "pbe_scan_c_sites_per_ln_sites": 0.1 * round_number,
            "pbe_scan_signed_depth": round_number > 1,
            "outcome_calibration_a": -0.21 * round_number, "outcome_calibration_b": 0.93 - 0.05 * round_number,
            "outcome_calibration_pbe_a": -0.34 * round_number, "outcome_calibration_pbe_b": 0.88,
            "outcome_calibration_pbe_n_purchases": 4 * round_number,
            "outcome_calibration_scan_a": -0.12 * round_number, "outcome_calibration_scan_b": 0.97,
            "outcome_calibration_scan_n_purchases": 3 * round_number,
            "outcome_calibration_cost_classes": 2,
            "outcome_calibration_cost_class_0_offset": -0.17 * round_number,
            "outcome_calibration_cost_class_0_purchases": 5 * round_number,
            "outcome_calibration_cost_class_0_upper_log_cost": 0.0,
            "outcome_calibration_cost_class_1_offset": 0.23 * round_number,
            "outcome_calibration_cost_class_1_purchases": 2 * round_number,
            "outcome_calibration_cost_class_1_upper_log_cost": None,
            "outcome_calibration_n_purchases": 7 * round_number, "outcome_calibration_n_stable": 2 * round_number,
            "outcome_calibration_mean_p_at_purchase": 0.61 - 0.02 * round_number,
            "outcome_calibration_mean_p_calibrated": 0.33 - 0.01 * round_number,
            **({"composition_gp_skipped": "1 computed structure(s) to learn from (2 needed)"} if round_number == 1
               else {"composition_gp_n_train": 90 + round_number, "composition_gp_noise_variance": 0.04 * round_number,
                     "composition_gp_length_scale": 2.5 + round_number, "composition_pool_weight": 0.15 * round_number,
                     "composition_pool_n": 6 * round_number, "composition_pool_loglik_gain": 1.7 * round_number}),
            "competitor_plausible": 40 + round_number, "competitor_from_pbe_results": 3 * round_number,
            "competitor_overall_survival": 0.57 + 0.01 * round_number,
            "round_budget_cpu_hours": 18.5 + round_number, "ev_cost_blind_share": 0.5, "ev_spent_before_cpu_hours": 31.7 * (round_number - 1),
            "ev_cost_blind_spent_before_cpu_hours": 13.9 * (round_number - 1),
            "ev_cost_blind_allowance_cpu_hours": 7.3 + round_number, "ev_cost_blind_planned_cpu_hours": 2.8 + round_number,
            "calibration": {f"{f}_{k}": v for f, base in (("pbe", 1.51), ("scan", 1.73))
                            for k, v in (("scale", base + 0.11 * round_number), ("n_errors", 3 * round_number))}}


def _ev_decision_numbers(sid: str, position: int, round_number: int) -> dict:
    x = 0.1 * position + 0.013 * round_number
    return {"score": 0.9 - x, "for_candidate": sid, "kind": "candidate", "p_scan_stable": 0.93 - x,
            "p_scan_source": "pbe result" if position % 2 else "model", "q_pbe_route_finds": 0.41 - x / 2,
            "p_scan_model_raw": 0.97 - x / 2,
            "competitor_survival": 0.88 - x / 3 if position != 2 else None,  # None: the survival was off
            "p_go_scan_after_pbe": 0.77 - x / 3, "rate_scan_per_cpu_hour": 0.529 - x / 4,
            "rate_pbe_per_cpu_hour": 0.141 + x / 5, "learning_value_scan": 0.0134 + x / 100,
            "learning_value_pbe": 0.00029 + x / 1000, "lambda_per_cpu_hour": 0.0426,
            "cost_scan_cpu_hours": 1.8 + position, "cost_pbe_cpu_hours": 0.36 + position / 10,
            **({"composition_gp_scan_mean_ev_per_atom": 0.071 - x, "composition_gp_scan_std_ev_per_atom": 0.31 + x}
               if position != 1 else {}),
            **({"route": "cost_blind"} if position == 0 else {})}


def _ev_round_info(round_number: int, items: list[tuple[str, str]]) -> dict:
    """Per-round coverage as the campaign loop records it (values invented, distinct per round and fidelity)."""
    info = {}
    for j, fidelity in enumerate(sorted({f for _, f in items})):
        for k in (1, 2):
            for t, tag in enumerate(("raw", "calibrated")):
                info[f"within_{k}_sigma_{tag}_{fidelity}"] = round(0.1 * k + 0.05 * t + 0.01 * j + 0.2 * round_number,
                                                                    4)
        info[f"mae_{fidelity}_ev_per_atom"] = 0.05 * round_number + 0.01 * j
        info[f"mae_se_{fidelity}_ev_per_atom"] = 0.01
        info[f"n_{fidelity}_measured"] = sum(1 for _, f in items if f == fidelity)
    return info


def build_synthetic_campaign(campaign_dir: str | Path, *, policy: str = "scaling-law") -> Path:
    """Write the campaign into ``campaign_dir`` (created) and return it.

    ``policy="expected-value"`` records the numbers the expected-value policy writes (plan, decisions, per-round
    coverage) instead of the scaling-law allocation.
    """
    ev = policy == "expected-value"
    campaign_dir = Path(campaign_dir)
    structures = candidate_structures()
    config = CampaignConfig(budget_total=100.0, unit_cpu_hours=1.0, backend="standin", batch_size=4,
                            candidates=["synthetic"], screener_version="test")
    elements = _elements()
    references = {f: make_reference_entries(elements, {el: _REF_E[f][el] * len(s) for el, s in elements.items()},
                                            f, backend="standin", label="stand-in elemental reference (CHGNet)")
                  for f in ("pbe", "scan")}
    campaign_dir.mkdir(parents=True, exist_ok=True)
    (campaign_dir / "references.json").write_text(json.dumps({f: [e.as_dict() for e in es]
                                                              for f, es in references.items()}))
    hulls = CampaignHulls(references)
    ids = list(structures)
    plan = {1: [("Li2O-afl", "pbe"), ("LiO2-hyp", "pbe"), ("NaCl-rs", "pbe"), ("Na3Cl-hyp", "pbe"),
                ("Li/O odd:id", "pbe")],
            2: [("Li2O-afl", "scan"), ("NaCl-rs", "scan"), ("Na3Cl-hyp", "scan"), ("Li/O odd:id", "scan")]}
    failing = {("Na3Cl-hyp", "scan")}
    with Ledger.in_dir(campaign_dir, create=True) as ledger:
        ledger.add_candidates([{"structure_id": sid, "formula": s.composition.reduced_formula,
                                "chemsys": s.composition.chemical_system, "n_sites": len(s),
                                "role": "candidate", "structure_json": json.dumps(s.as_dict())}
                               for sid, s in structures.items()])
        ledger.set_meta("budget_unit", config.budget_unit)
        ledger.set_meta("budget_total", config.budget_total)
        ledger.set_meta("config", config.model_dump(mode="json"))
        n_done = {"pbe": 0, "scan": 0}
        for number, items in plan.items():
            ledger.start_round(number)
            ledger.record_predictions(number, _predictions(ids, 0.03 / number))
            jobs, decisions = [], []
            for position, (sid, fidelity) in enumerate(items):
                cost = 0.4 * len(structures[sid]) * (5.0 if fidelity == "scan" else 1.0)
                jobs.append({"uuid": str(uuidlib.uuid4()), "structure_id": sid, "fidelity": fidelity,
                             "estimated_cost": cost, "estimated_cpu_hours": cost, "flow_json": "{}"})
                decisions.append({"structure_id": sid, "fidelity": fidelity, "estimated_cost": cost,
                                  "reason": f"scaling law: {fidelity.upper()}",
                                  "numbers": (_ev_decision_numbers(sid, position, number) if ev else
                                              {"score": 0.5, "for_candidate": sid, "kind": "candidate"})})
            n_scan = sum(1 for _, f in items if f == "scan")
            numbers = (_ev_numbers(number, n_scan, len(items) - n_scan, n_done) if ev
                       else _numbers(number, n_scan, len(items) - n_scan))
            accepted = ledger.commit_plan(number, decisions=decisions, jobs=jobs, numbers=numbers)
            ledger.mark_submitted(accepted)
            for job in jobs:
                sid, fidelity = job["structure_id"], job["fidelity"]
                result = _result(sid, structures[sid], fidelity, success=(sid, fidelity) not in failing)
                ledger.finish_job(job["uuid"], success=result.success, result_json=result.model_dump_json(),
                                  actual_cost=result.cost_cpu_hours, actual_cpu_hours=result.cost_cpu_hours,
                                  failure_reason=result.failure_reason)
                if result.entry:
                    hulls.add_result(fidelity, result.entry)
            ledger.set_round_state(number, "collected")
            for fidelity in ("pbe", "scan"):
                snap = hulls.snapshot(fidelity)
                ledger.record_hull(number, fidelity, n_entries=snap["n_entries"], n_stable=snap["n_stable"],
                                   hull_json=json.dumps({"stable_ids": snap["stable_ids"], "hull": snap["json"]}))
            for fidelity in ("pbe", "scan"):
                if any(f == fidelity for _, f in items):
                    ledger.add_learning_curve_point(round_number=number, fidelity=fidelity, n_scan=n_done["scan"],
                                                    n_pbe=n_done["pbe"] + 20, mae_ev_per_atom=0.12 / number,
                                                    source="prospective")
            for _, f in items:
                n_done[f] += 1
            ledger.record_model(version=f"scan-r{number}", round_number=number, fidelity="scan",
                                path=str(campaign_dir / "models" / f"round_{number:03d}" / "scan"),
                                parent=None, n_train=n_done["scan"], metrics={"val_mae_ev_per_atom": 0.1 / number})
            ledger.set_round_state(number, "finished", info=_ev_round_info(number, items) if ev
                                   else {"mae_pbe_ev_per_atom": 0.12 / number})
        ledger.start_round(3)
        ledger.set_round_state(3, "empty")
    return campaign_dir


def ledger_rows(campaign: Path, query: str, *args) -> list[tuple]:
    """Rows of a plain SQL query on a campaign's ledger, opened read-only (what the report must agree with)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{campaign / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        return conn.execute(query, args).fetchall()
    finally:
        conn.close()
