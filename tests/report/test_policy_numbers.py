"""The policy's numbers and the calibration in the report equal the ledger's, read here with plain SQL.

An expected-value campaign shows its per-round numbers (lambda, learning values, N_p/N_s, PBE -> SCAN relation), each
decision's numbers and no scaling-law table; the calibration table shows each round's coverage from
``rounds.info_json``; the reliability curve equals a direct count over the ledger's predictions and results.
"""

from __future__ import annotations

import json
import math
import sqlite3

import pytest
from test_headline import _ledger_e_form

from screener.report.data import RELIABILITY_K, load_report_data
from screener.report.pages import overview_page

FIGURES = {"reliability": "figures/reliability.png", "learning_curve": "figures/learning_curve.png"}


def _sql(campaign, query, *args):
    from synthetic_campaign import ledger_rows

    return ledger_rows(campaign, query, *args)


def _plan_numbers(campaign) -> dict[int, dict]:
    return {r: json.loads(d) for r, d in _sql(campaign, "SELECT round, data_json FROM events WHERE kind = 'policy'")}


def _tables(markdown: str, first_header: str) -> list[list[list[str]]]:
    """Every markdown table (also indented ones) whose header starts with ``| first_header |``: rows of cells."""
    lines = [line.strip() for line in markdown.splitlines()]
    out = []
    for i, line in enumerate(lines):
        if line.startswith(f"| {first_header} |"):
            header = [c.strip() for c in line.strip("|").split(" | ")]
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip("|").split(" | ")])
            out.append([header] + rows)
    return out


def _table_with(markdown: str, first_header: str, column: str) -> tuple[list[str], list[list[str]]]:
    found = [t for t in _tables(markdown, first_header) if column in t[0]]
    assert len(found) == 1, f"one table with column {column!r} expected, found {len(found)}"
    return found[0][0], found[0][1:]


def _close(cell: str, value: float, rel: float = 5e-3) -> bool:
    return math.isclose(float(cell.replace("\u00a0%", "")), value, rel_tol=rel, abs_tol=1e-9)


@pytest.fixture(scope="module")
def ev_overview(ev_campaign):
    return overview_page(load_report_data(ev_campaign), FIGURES, title="EV")


def test_ev_round_numbers_equal_the_ledger(ev_campaign, ev_overview):
    plans = _plan_numbers(ev_campaign)
    assert plans and all(p["policy"] == "expected-value" for p in plans.values())
    header, rows = _table_with(ev_overview, "round", "lambda (finds per CPU-h)")
    assert [int(r[0]) for r in rows] == sorted(plans)
    col = {name: header.index(name) for name in header}
    for row in rows:
        n = plans[int(row[0])]
        assert _close(row[col["lambda (finds per CPU-h)"]], n["ev_lambda_per_cpu_hour"])
        assert _close(row[col["follow-ups kept back (CPU-h)"]], n["ev_follow_ups_reserved_cpu_hours"])
        assert _close(row[col["stop rate (finds per CPU-h)"]], n["ev_stop_rate_per_cpu_hour"])
        found, spent = row[col["found / spent (CPU-h) before the round"]].split(" / ")
        assert int(found) == n["ev_n_found"] and _close(spent, n["ev_spent_cpu_hours"])
        assert _close(row[col["learning value SCAN (finds per calc.)"]], n["ev_learning_value_scan"])
        assert _close(row[col["learning value PBE (finds per calc.)"]], n["ev_learning_value_pbe"])
        assert row[col["learning value added to the rates"]] == ("yes" if n["ev_learning_value_added"] else "no")
        assert _close(row[col["SCAN model MAE now (meV/atom)"]], 1000 * n["ev_mae_now_ev_per_atom"], rel=0.02)
        assert row[col["N&#95;p (pre-training + campaign)"]] == f"{n['n_pbe_pretraining']} + {n['n_pbe_campaign']}"
        assert int(row[col["N&#95;s (campaign)"]]) == n["n_scan_campaign"]
    header, rows = _table_with(ev_overview, "round", "c1 (per eV/atom)")
    for row in rows:
        n = plans[int(row[0])]
        assert _close(row[1], n["pbe_scan_p_stable_if_pbe_stable"])
        assert _close(row[2], n["pbe_scan_p_stable_just_above_hull"])
        assert _close(row[3], n["pbe_scan_c0"])
        assert _close(row[4], n["pbe_scan_c1_per_ev_per_atom"])
        assert _close(row[5], n["pbe_scan_c_below_per_ev_per_atom"])
        assert _close(row[6], n["pbe_scan_c_sites_per_ln_sites"])  # the cell-size term (0 with equal costs)
        assert int(row[7]) == n["pbe_scan_n_pairs"]
        assert "<pairs>" not in row[8] and "&#60;pairs&#62;" in row[8]  # data escaped, not markup
    # a round fitted on the signed PBE E_hull: the caption says what its "on the PBE hull" column means
    assert "the hull&#39;s edge" in ev_overview or "the hull's edge" in ev_overview
    # no scaling-law table of dashes (nor a caption promising a fitted law) for a campaign whose policy recorded none
    assert "MAE drop per CPU-h on SCAN" not in ev_overview
    assert "scaling law the policy fitted" not in ev_overview


def test_scaling_law_table_kept_for_scaling_law_rounds(synthetic_campaign):
    page = overview_page(load_report_data(synthetic_campaign), FIGURES, title="SL")
    _, rows = _table_with(page, "round", "MAE drop per CPU-h on SCAN (meV/atom per CPU-h)")
    assert [int(r[0]) for r in rows] == sorted(_plan_numbers(synthetic_campaign))
    assert "lambda (finds per CPU-h)" not in page
    assert "scaling law the policy fitted" in page


def test_each_decision_shows_its_ledger_numbers(ev_campaign, ev_overview):
    decisions = _sql(ev_campaign, "SELECT round, position, structure_id, numbers_json FROM decisions "
                                  "ORDER BY round, position")
    tables = [t for t in _tables(ev_overview, "&#35;") if "P(SCAN-stable)" in t[0]]
    assert len(tables) == len({d[0] for d in decisions})
    rows = [r for t in tables for r in t[1:]]
    assert len(rows) == len(decisions)
    off = 0
    for row, (_, position, sid, numbers_json) in zip(rows, decisions, strict=True):
        n = json.loads(numbers_json)
        assert int(row[0]) == position and sid.split("/")[0] in row[1]
        assert _close(row[3], n["p_scan_stable"])
        assert row[4] == n["p_scan_source"]
        assert _close(row[5], n["p_scan_model_raw"])
        # a survival not estimated (off) reads "off", never an estimate of 1
        assert row[6] == "off" if n["competitor_survival"] is None else _close(row[6], n["competitor_survival"])
        off += n["competitor_survival"] is None
        assert _close(row[7], n["rate_scan_per_cpu_hour"])
        assert _close(row[8], n["rate_pbe_per_cpu_hour"])
        assert _close(row[9], n["p_go_scan_after_pbe"])
        if "composition_gp_scan_mean_ev_per_atom" in n:
            mean, std = row[10].split("\u00a0±\u00a0")
            assert _close(mean, n["composition_gp_scan_mean_ev_per_atom"])
            assert _close(std, n["composition_gp_scan_std_ev_per_atom"])
        else:
            assert row[10] == "-"
        lv_s, lv_p = row[11].split(" / ")
        assert _close(lv_s, n["learning_value_scan"]) and _close(lv_p, n["learning_value_pbe"])
        c_s, c_p = row[12].split(" / ")
        assert _close(c_s, n["cost_scan_cpu_hours"]) and _close(c_p, n["cost_pbe_cpu_hours"])
        assert row[13] == ("cost-blind share" if n.get("route") == "cost_blind" else "per unit cost")
    assert any(json.loads(d[3]).get("route") == "cost_blind" for d in decisions)
    assert off > 0  # the synthetic ledger has decisions made with the survival off


def test_cost_blind_share_table_equals_the_plan_numbers_and_the_bought_decisions(ev_campaign, ev_overview):
    plans = _plan_numbers(ev_campaign)
    bought = {}
    for number, accepted, numbers_json in _sql(ev_campaign, "SELECT round, accepted, numbers_json FROM decisions"):
        n = json.loads(numbers_json)
        if accepted and n.get("route") == "cost_blind":
            bought.setdefault(number, []).append(n.get("kind", "candidate"))
    assert bought
    header, rows = _table_with(ev_overview, "round", "allowance (CPU-h)")
    assert [int(r[0]) for r in rows] == sorted(plans)
    for row in rows:
        n = plans[int(row[0])]
        assert _close(row[1], n["ev_cost_blind_share"])
        assert _close(row[2], n["ev_spent_before_cpu_hours"], rel=1e-3)
        assert _close(row[3], n["round_budget_cpu_hours"], rel=1e-3)
        assert _close(row[4], n["ev_cost_blind_spent_before_cpu_hours"], rel=1e-3)
        assert _close(row[5], n["ev_cost_blind_allowance_cpu_hours"], rel=1e-3)
        assert _close(row[6], n["ev_cost_blind_planned_cpu_hours"], rel=1e-3)
        kinds = bought.get(int(row[0]), [])
        assert row[7] == f"{kinds.count('candidate')} ({len(kinds)})"


def test_no_cost_blind_table_where_costs_are_equal(ev_campaign):
    # with equal costs the policy records only a share of 0 (no allowance) and no decision takes that route
    data = load_report_data(ev_campaign)
    for r in data.rounds:
        r.policy_numbers = {k: v for k, v in r.policy_numbers.items()
                            if not k.startswith(("ev_cost_blind_", "ev_spent_"))} | {"ev_cost_blind_share": 0.0}
        for d in r.decisions:
            (d.get("numbers") or {}).pop("route", None)
    page = overview_page(data, FIGURES, title="EV")
    assert "lambda (finds per CPU-h)" in page and "allowance (CPU-h)" not in page
    assert "cost-blind share |" not in page and "| per unit cost |" in page


def test_outcome_calibration_and_competitor_table_equals_the_plan_numbers(ev_campaign, ev_overview):
    plans = _plan_numbers(ev_campaign)
    header, rows = _table_with(ev_overview, "round", "mean P recalibrated")
    assert len(rows) == len(plans)
    for row in rows:
        n = plans[int(row[0])]
        assert int(row[1]) == n["outcome_calibration_n_purchases"] and int(row[2]) == n["outcome_calibration_n_stable"]
        assert _close(row[3], n["outcome_calibration_mean_p_at_purchase"])
        assert _close(row[4], n["outcome_calibration_mean_p_calibrated"])
        for cell, key in zip(row[5:8], ("outcome_calibration_", "outcome_calibration_pbe_",
                                        "outcome_calibration_scan_")):
            a, rest = cell.split(" / ")
            assert _close(a, n[f"{key}a"]) and _close(rest.split(" (")[0], n[f"{key}b"])
            if key != "outcome_calibration_":
                assert int(rest.split(" (")[1].rstrip(")")) == n[f"{key}n_purchases"]
        offsets = row[8].split(" / ")
        assert len(offsets) == n["outcome_calibration_cost_classes"]
        for k, text in enumerate(offsets):
            d, bought = text.split(" (")
            assert _close(d, n[f"outcome_calibration_cost_class_{k}_offset"])
            assert int(bought.rstrip(")")) == n[f"outcome_calibration_cost_class_{k}_purchases"]
    header, rows = _table_with(ev_overview, "round", "share surviving the competitors")
    assert len(rows) == len(plans)
    for row in rows:
        n = plans[int(row[0])]
        assert int(row[1]) == n["competitor_plausible"] and int(row[2]) == n["competitor_from_pbe_results"]
        assert _close(row[3], n["competitor_overall_survival"])


def test_composition_model_table_equals_the_plan_numbers(ev_campaign, ev_overview):
    plans = _plan_numbers(ev_campaign)
    header, rows = _table_with(ev_overview, "round", "pool weight a")
    assert [int(r[0]) for r in rows] == sorted(plans)
    col = {name: header.index(name) for name in header}
    for row in rows:
        n = plans[int(row[0])]
        if "composition_gp_skipped" in n:  # nothing to learn from yet: said, with dashes for the fit
            assert "2 needed" in row[col["skipped"]] and row[col["pool weight a"]] == "-"
            continue
        assert int(row[col["GP training rows"]]) == n["composition_gp_n_train"]
        assert _close(row[col["GP noise (eV/atom)"]], n["composition_gp_noise_variance"] ** 0.5)
        assert _close(row[col["GP length scale"]], n["composition_gp_length_scale"])
        assert _close(row[col["pool weight a"]], n["composition_pool_weight"])
        assert int(row[col["purchases judged"]]) == n["composition_pool_n"]
        assert _close(row[col["log-likelihood gain"]], n["composition_pool_loglik_gain"])
        assert row[col["skipped"]] == "-"
    assert any("composition_gp_skipped" in n for n in plans.values())


def test_calibration_table_equals_round_info(ev_campaign, ev_overview):
    info = {r: json.loads(i or "{}") for r, i in _sql(ev_campaign, "SELECT round, info_json FROM rounds")}
    plans = _plan_numbers(ev_campaign)
    header, rows = _table_with(ev_overview, "round", "within 1 sigma, calibrated")
    expected = {(r, f) for r, i in info.items() for f in ("pbe", "scan") if f"within_1_sigma_raw_{f}" in i}
    assert expected and expected <= {(int(row[0]), row[1].lower()) for row in rows}
    for row in rows:
        number, fidelity = int(row[0]), row[1].lower()
        i = info[number]
        for k in (1, 2):
            for tag in ("raw", "calibrated"):
                value = i.get(f"within_{k}_sigma_{tag}_{fidelity}")
                cell = row[header.index(f"within {k} sigma, {tag}")]
                assert cell == "-" if value is None else _close(cell, 100 * value)
        scale, n_errors = plans[number]["calibration"][f"{fidelity}_scale"], \
            plans[number]["calibration"][f"{fidelity}_n_errors"]
        exponent = plans[number]["calibration"].get(f"{fidelity}_exponent", 1.0)
        cell = row[header.index("sigma scale (and exponent) used (fitted on)")]
        assert _close(cell.split(" (")[0].split(",")[0], scale) and cell.endswith(f"(n = {n_errors})")
        if exponent != 1.0:  # the campaign's default calibration is a power law: its exponent is shown
            assert abs(float(cell.split("exponent ")[1].split(" ")[0]) - exponent) <= 0.005 + 1e-9
        else:
            assert "exponent" not in cell


def test_reliability_equals_a_direct_count_over_the_ledger(ev_campaign, ev_overview):
    """Pooled over rounds: round r's prediction (made before purchase) of each structure bought in round r, minus its
    computed formation energy; share with |error| <= k * sigma, raw std and the std the round ranked with."""
    data = load_report_data(ev_campaign)
    e_form = _ledger_e_form(ev_campaign)
    for fidelity in ("pbe", "scan"):
        err, raw, used = [], [], []
        for (sid, f), (number, value) in e_form.items():
            if f != fidelity:
                continue
            (mean, std, std_used), = _sql(ev_campaign, "SELECT e_form_mean_ev_per_atom, e_form_std_ev_per_atom, "
                                                       "e_hull_std_ev_per_atom FROM predictions WHERE round = ? AND "
                                                       "structure_id = ? AND fidelity = ?", number, sid, fidelity)
            err.append(mean - value)
            raw.append(max(std, 1e-3))
            used.append(max(std_used, 1e-3))
        curve = data.reliability[fidelity]
        assert curve.n_errors == len(err) > 0
        assert curve.k == pytest.approx(list(RELIABILITY_K))
        assert curve.k[0] == 0.25 and curve.k[-1] == 3.0
        for i, k in enumerate(curve.k):
            assert curve.raw[i] == pytest.approx(sum(abs(e) <= k * s for e, s in zip(err, raw)) / len(err))
            assert curve.calibrated[i] == pytest.approx(sum(abs(e) <= k * s for e, s in zip(err, used)) / len(err))
            assert curve.nominal[i] == pytest.approx(math.erf(k / math.sqrt(2)))
    # the raw and calibrated curves differ in this campaign (else the test could not tell them apart)
    assert any(a != b for c in data.reliability.values() for a, b in zip(c.raw, c.calibrated))
    assert "![Reliability of the predicted spread](figures/reliability.png)" in ev_overview


def test_reliability_plot_is_written(ev_campaign, tmp_path):
    from screener.report.plots import plot_reliability

    data = load_report_data(ev_campaign)
    path = plot_reliability(data.reliability, tmp_path / "reliability.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hand_edited_numbers_are_escaped_and_never_crash(ev_campaign, tmp_path):
    """Numbers of the wrong shape (a list for a plan, a string or broken JSON for a decision's numbers) read as
    missing; text in them is shown escaped."""
    import shutil

    campaign = tmp_path / "campaign"
    shutil.copytree(ev_campaign, campaign)
    conn = sqlite3.connect(campaign / "ledger.sqlite")
    conn.execute("UPDATE events SET data_json = ? WHERE kind = 'policy' AND round = 1",
                 (json.dumps({"policy": "expected-value", "calibration": [1, 2], "ev_lambda_per_cpu_hour": "<b>"}),))
    conn.execute("UPDATE events SET data_json = '[1, 2]' WHERE kind = 'policy' AND round = 2")
    conn.execute("UPDATE rounds SET info_json = '[3]' WHERE round = 1")
    conn.execute("UPDATE decisions SET numbers_json = '\"p_scan_stable\"' WHERE round = 2 AND position = 0")
    conn.execute("UPDATE decisions SET numbers_json = '{\"route\": ' WHERE round = 2 AND position = 1")  # not JSON
    conn.execute("UPDATE decisions SET numbers_json = ? WHERE round = 1 AND position = 0",
                 (json.dumps({"p_scan_stable": 0.5, "p_scan_source": "<script>x</script>"}),))
    conn.commit()
    conn.close()
    page = overview_page(load_report_data(campaign), FIGURES, title="EV")
    assert "<script>" not in page and "<b>" not in page
    assert "&#60;script&#62;x&#60;/script&#62;" in page and "&#60;b&#62;" in page


@pytest.mark.parametrize("info", [{"stop_reason": "nothing left worth buying: <b>stop</b> rate 0.004"}, [3], {}])
def test_summary_says_why_a_finished_campaign_stopped(ev_campaign, tmp_path, info):
    """The empty last round's ``stop_reason`` (the policy declined everything with budget left) is the summary's
    state, escaped; without one (or a hand-edited one of the wrong shape) it says nothing more fit the budget."""
    import shutil

    campaign = tmp_path / "campaign"
    shutil.copytree(ev_campaign, campaign)
    conn = sqlite3.connect(campaign / "ledger.sqlite")
    last = conn.execute("SELECT MAX(round) FROM rounds").fetchone()[0]
    conn.execute("INSERT INTO rounds (round, state, info_json) VALUES (?, 'empty', ?)", (last + 1, json.dumps(info)))
    conn.commit()
    conn.close()
    page = overview_page(load_report_data(campaign), FIGURES, title="EV")
    if isinstance(info, dict) and info:
        assert "finished (nothing left worth buying: &#60;b&#62;stop&#60;/b&#62; rate 0.004)" in page
        assert "<b>stop" not in page
    else:
        assert "finished (nothing more fits the budget)" in page
