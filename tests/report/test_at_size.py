"""Report at size: pages for the top N selected candidates only; per-candidate predictions as the policy ranked."""

from __future__ import annotations

import json
import re

import pytest
from synthetic_campaign import ledger_rows

from screener.report.data import load_report_data, report_order
from screener.report.pages import candidates_page
from screener.report.site import run_mkdocs_build, write_report


def _final_scan_stable(campaign) -> set[str]:
    (payload,), = ledger_rows(campaign, "SELECT hull_json FROM hulls WHERE fidelity = 'scan' ORDER BY round DESC "
                                        "LIMIT 1")
    return set(json.loads(payload)["stable_ids"])


def test_top_n_pages_found_first_and_every_selected_candidate_listed(synthetic_campaign, tmp_path):
    selected = {r[0] for r in ledger_rows(synthetic_campaign, "SELECT DISTINCT j.structure_id FROM jobs j JOIN "
                                                              "candidates c USING (structure_id) WHERE c.role = "
                                                              "'candidate'")}
    found = _final_scan_stable(synthetic_campaign) & selected
    assert found and len(selected) > len(found) + 1
    result = write_report(synthetic_campaign, tmp_path / "rep", top_n=len(found))
    pages = {p.stem for p in (result.project_dir / "docs" / "candidates").glob("*.md")}
    data = load_report_data(synthetic_campaign)
    slug = {c.structure_id: c.slug for c in data.candidates}
    assert pages == {slug[s] for s in found}  # the found ones first
    assert result.n_candidates == len(found) and result.n_selected == len(selected)
    table = (result.project_dir / "docs" / "candidates.md").read_text()
    assert table.count("<tr>") == 1 + len(selected)  # the table still lists every selected candidate
    assert set(re.findall(r'href="candidates/([^"]+)\.html"', table)) == pages
    assert "--all-candidates" in table
    run_mkdocs_build(result.project_dir)  # strict: no link to a page that was not written
    everything = write_report(synthetic_campaign, tmp_path / "all", top_n=None)
    assert everything.n_candidates == len(selected)


def test_report_order_is_found_then_computed_scan_e_hull(synthetic_campaign):
    data = load_report_data(synthetic_campaign)
    ordered = report_order(data.candidates)
    stable = [c.stable.get("scan", False) for c in ordered]
    assert stable == sorted(stable, reverse=True)
    rest = [c.computed_e_hull_ev_per_atom.get("scan") for c in ordered if not c.stable.get("scan")]
    known = [x for x in rest if x is not None]
    assert known == sorted(known) and rest[: len(known)] == known  # computed ones first, lowest first


def test_candidate_columns_show_what_the_policy_ranked_with(synthetic_campaign, tmp_path):
    data = load_report_data(synthetic_campaign)
    table = candidates_page(data)
    checked = 0
    for cand in data.candidates:
        for fidelity in ("scan", "pbe"):
            job_round = [j.round for j in cand.jobs if j.fidelity == fidelity]
            if not job_round or cand.predicted_e_hull_final_ev_per_atom.get(fidelity) is None:
                continue
            (e_form, hull_e, e_hull, used_std), = ledger_rows(
                synthetic_campaign, "SELECT e_form_mean_ev_per_atom, hull_e_form_ev_per_atom, e_hull_mean_ev_per_atom, "
                "e_hull_std_ev_per_atom FROM predictions WHERE round = ? AND structure_id = ? AND fidelity = ?",
                job_round[0], cand.structure_id, fidelity)
            ranked = hull_e + e_hull  # the shifted mean the policy used (differs from the raw mean here)
            assert abs(ranked - e_form) > 1e-3
            assert cand.as_ranked(fidelity) == pytest.approx((ranked, used_std))
            expected = cand.predicted_e_hull_final_ev_per_atom[fidelity] - (e_form - ranked)
            assert cand.predicted_e_hull_as_ranked(fidelity) == pytest.approx(expected)
            assert f'data-sort="{1000 * expected:.3f}"' in table
            assert f"{1000 * expected:.0f}\u00a0±\u00a0{1000 * used_std:.0f}" in table  # calibrated sigma
            checked += 1
    assert checked >= 3
    result = write_report(synthetic_campaign, tmp_path / "rep", top_n=None)
    cand = next(c for c in data.candidates if c.as_ranked("scan")[0] is not None)
    page = (result.project_dir / "docs" / "candidates" / f"{cand.slug}.md").read_text()
    mean, std = cand.as_ranked("scan")
    assert "predicted, as ranked (eV/atom)" in page and f"{mean:.3f}\u00a0±\u00a0{std:.3f}" in page


def test_cli_top_and_all_candidates(synthetic_campaign, tmp_path, run_cli):
    code, stdout, err = run_cli(["report", synthetic_campaign, "-o", tmp_path / "one", "--no-build", "--top", "1"])
    assert code == 0, err
    assert "5 selected candidate(s) (1 with a page)" in stdout
    assert len(list((tmp_path / "one" / "docs" / "candidates").glob("*.md"))) == 1
    code, stdout, err = run_cli(["report", synthetic_campaign, "-o", tmp_path / "all", "--no-build", "--top", "1",
                                 "--all-candidates"])
    assert code == 0 and "(5 with a page)" in stdout
    code, stdout, err = run_cli(["report", synthetic_campaign, "-o", tmp_path / "bad", "--top", "-1"])
    assert code == 2 and "--top" in err and "Traceback" not in err and not (tmp_path / "bad").exists()


def test_methods_page_says_when_a_large_campaign_kept_part_of_its_predictions(synthetic_campaign, tmp_path):
    import shutil

    from screener.campaign.ledger import Ledger
    from screener.campaign.ranking import PREDICTION_STORAGE_META, prediction_storage_rule
    from screener.report.pages import methods_page

    page = methods_page(load_report_data(synthetic_campaign), model_cards={}, versions={}, provenance={})
    assert "every candidate at PBE and SCAN" in page
    copy = tmp_path / "campaign"
    shutil.copytree(synthetic_campaign, copy)
    with Ledger.in_dir(copy) as ledger:
        ledger.set_meta(PREDICTION_STORAGE_META, prediction_storage_rule())
    page = methods_page(load_report_data(copy), model_cards={}, versions={}, provenance={})
    assert "the 1000 best by P(stable) and every planned candidate (ledger meta prediction" in page
