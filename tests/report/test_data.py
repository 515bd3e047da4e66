"""Tests of screener/report/data.py: what the report reads from a ledger, without changing it."""

from __future__ import annotations

import hashlib

import pytest

from screener.errors import InvalidInputError
from screener.report.data import job_timestamps, load_report_data, slugify


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_reading_leaves_the_ledger_unchanged(synthetic_campaign):
    ledger = synthetic_campaign / "ledger.sqlite"
    before = _sha(ledger)
    load_report_data(synthetic_campaign)
    job_timestamps(ledger)
    assert _sha(ledger) == before


def test_selected_candidates_and_computed_hull_energies(synthetic_campaign):
    data = load_report_data(synthetic_campaign)
    by_id = {c.structure_id: c for c in data.candidates}
    assert set(by_id) == {"Li2O-afl", "LiO2-hyp", "NaCl-rs", "Na3Cl-hyp", "Li/O odd:id"}  # never-picked has no job
    assert data.n_candidates == 6
    # hull phases sit at 0; the invented energies put LiO2 above the Li2O-O2 tie line at PBE
    for sid in ("Li2O-afl", "NaCl-rs"):
        assert by_id[sid].computed_e_hull_ev_per_atom == {"pbe": pytest.approx(0.0, abs=1e-9),
                                                         "scan": pytest.approx(0.0, abs=1e-9)}
        assert by_id[sid].stable == {"pbe": True, "scan": True}
    assert by_id["LiO2-hyp"].computed_e_hull_ev_per_atom["pbe"] > 0.05
    assert by_id["LiO2-hyp"].computed_e_hull_ev_per_atom["scan"] is None  # never computed at SCAN
    assert by_id["Li2O-afl"].computed_e_form_ev_per_atom["scan"] == pytest.approx(-2.10, abs=1e-6)
    failed = by_id["Na3Cl-hyp"]
    assert [j.state for j in failed.jobs if j.fidelity == "scan"] == ["failed"]
    assert failed.computed_e_hull_ev_per_atom["scan"] is None
    assert data.stable_candidates("scan") == ["Li2O-afl", "NaCl-rs"]


def test_budget_rounds_policy_numbers_and_predictions(synthetic_campaign):
    data = load_report_data(synthetic_campaign)
    assert data.budget.spent == pytest.approx(sum(j.charge for j in data.jobs if j.finished))
    assert [r.round for r in data.rounds] == [1, 2, 3] and data.finished
    assert data.rounds[0].policy_numbers["scaling_law"]["source"] == "prior"
    assert len(data.rounds[1].decisions) == 4 and all(d["accepted"] for d in data.rounds[1].decisions)
    cand = next(c for c in data.candidates if c.structure_id == "NaCl-rs")
    assert cand.predicted_at_selection["pbe"]["round"] == 1
    assert cand.predicted_at_selection["scan"]["round"] == 2 and cand.predicted["scan"]["round"] == 2
    assert all(j.created_at is not None for j in data.jobs)
    assert data.backends() == {"standin": [
        "stand-in: CHGNet 0.3.0 (ML potential trained on MPtrj PBE/PBE+U), not DFT",
        "stand-in: CHGNet r2scan (ML potential fine-tuned on MP r2SCAN), not DFT"]}
    assert data.hull("scan").fidelity == "scan"
    best, note = cand.best_structure()
    assert "SCAN" in note and best.volume == pytest.approx(cand.structure.volume * 1.02)


def test_slugify_is_safe_and_unique():
    taken: set[str] = set()
    assert slugify("Li/O odd:id", taken) == "Li_O_odd_id"
    assert slugify("Li O odd id", taken) == "Li_O_odd_id_2"
    assert slugify("../..", taken) == "structure"
    assert slugify("mp-149", taken) == "mp-149"


def test_not_a_campaign(tmp_path):
    with pytest.raises(InvalidInputError, match="not a screener campaign"):
        load_report_data(tmp_path)


def test_competing_phase_counts_from_the_ledger_record_and_elements_only(synthetic_campaign, tmp_path):
    """Known phases per hull come from the record the campaign makes before round 1; 'elements only' is flagged."""
    import shutil

    from screener.campaign.ledger import Ledger
    from screener.report.pages import candidate_page, candidates_page

    campaign = shutil.copytree(synthetic_campaign, tmp_path / "c", ignore=shutil.ignore_patterns("report"))
    data = load_report_data(campaign)  # no record: counted from the final hull snapshot
    nacl = next(c for c in data.candidates if c.structure_id == "NaCl-rs")
    assert nacl.competing["scan"].source == "final hull snapshot" and nacl.competing["scan"].elements_only
    assert (nacl.competing["pbe"].known, nacl.competing["pbe"].computed) == (0, 1)  # Na3Cl-hyp computed at PBE
    with Ledger.in_dir(campaign) as ledger:
        ledger.set_meta("competing_phases",
                        {"systems": {"Li-O": {"pbe": 3, "scan": 2}, "Cl-Na": {"pbe": 0, "scan": 0}}})
    data = load_report_data(campaign)
    li2o = next(c for c in data.candidates if c.structure_id == "Li2O-afl")
    assert (li2o.competing["pbe"].known, li2o.competing["scan"].known) == (3, 2)
    assert li2o.competing["pbe"].source == "ledger record before round 1" and not li2o.competing["scan"].elements_only
    nacl = next(c for c in data.candidates if c.structure_id == "NaCl-rs")
    assert nacl.competing["scan"].elements_only and not nacl.competing["pbe"].elements_only
    assert "elements only" in candidates_page(data)
    page = candidate_page(nacl, data, viewer="", files={}, structure_note="", energy_figure=None, hull_figures={})
    assert "Hull with the elements only" in page and "The final SCAN hull of Cl-Na" in page


def test_pool_prevalence_and_daf_from_a_replay_data_set(synthetic_campaign, tmp_path):
    """A replay data set knows every candidate's SCAN E_hull: prevalence = stable share of the pool, DAF = hit rate
    / prevalence; without it the report says 'unknown'."""
    import json
    import shutil

    from synthetic_campaign import candidate_structures

    from screener.calculators.result import make_entry_dict
    from screener.campaign.ledger import Ledger

    campaign = shutil.copytree(synthetic_campaign, tmp_path / "c", ignore=shutil.ignore_patterns("report"))
    truth = {"Li2O-afl": 0.0, "LiO2-hyp": 0.2, "NaCl-rs": 0.0, "Na3Cl-hyp": 0.5, "Li/O odd:id": 0.3,
             "never-picked": 0.1}  # 2 of 6 stable
    entries = [make_entry_dict(s, -1.0 * len(s), structure_id=sid, fidelity="scan", backend="replay",
                               run_type="r2SCAN", data={"e_above_hull": truth[sid]})
               for sid, s in candidate_structures().items()]
    (tmp_path / "world.json").write_text(json.dumps(entries))
    with Ledger.in_dir(campaign) as ledger:
        config = ledger.get_meta("config")
        ledger.set_meta("config", config | {"backend": "replay",
                                            "backend_options": {"path": str(tmp_path / "world.json")}})
    h = load_report_data(campaign).headline
    assert h.prevalence == pytest.approx(2 / 6) and "6 of 6 candidates" in h.prevalence_source
    assert h.daf == pytest.approx(h.hit_rate / (2 / 6)) and h.daf == pytest.approx((2 / 3) / (2 / 6))
    assert load_report_data(synthetic_campaign).headline.daf is None  # stand-in: unknown


def test_a_result_newer_than_the_last_hull_snapshot_is_not_called_above_hull(synthetic_campaign, tmp_path):
    import shutil
    import sqlite3

    campaign = shutil.copytree(synthetic_campaign, tmp_path / "c", ignore=shutil.ignore_patterns("report"))
    conn = sqlite3.connect(campaign / "ledger.sqlite")
    conn.execute("DELETE FROM hulls WHERE round = 2")  # as if round 2's results came in but its snapshot did not
    conn.commit()
    conn.close()
    by_id = {c.structure_id: c for c in load_report_data(campaign).candidates}
    assert by_id["Li/O odd:id"].status("scan") == "not in a hull yet"  # SCAN done in round 2
    assert by_id["LiO2-hyp"].status("pbe") == "above hull" and by_id["LiO2-hyp"].status("scan") == "not computed"
    assert by_id["Na3Cl-hyp"].status("scan") == "failed"


def test_a_ledger_value_of_the_wrong_kind_is_one_clear_error(synthetic_campaign, tmp_path):
    import shutil
    import sqlite3

    campaign = shutil.copytree(synthetic_campaign, tmp_path / "c", ignore=shutil.ignore_patterns("report"))
    conn = sqlite3.connect(campaign / "ledger.sqlite")
    conn.execute("UPDATE candidates SET n_sites = 'many' WHERE structure_id = 'NaCl-rs'")
    conn.commit()
    conn.close()
    with pytest.raises(InvalidInputError, match="the ledger holds a value the report cannot read"):
        load_report_data(campaign)
