"""Every headline figure of the report equals the ledger's, rebuilt here with plain SQL (not the report's code), in
the report data and in the rendered overview; the parity plot is drawn from formation energies, not E_hull.

Formation energies are recomputed from the stored result entries and the campaign's elemental references
(``references.json``) by hand: E_form = E/N - sum_el x_el mu_el with mu_el the lowest reference energy per atom.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from screener.report.data import load_report_data


def _sql(campaign, query, *args):
    from synthetic_campaign import ledger_rows

    return ledger_rows(campaign, query, *args)


def _mu(campaign) -> dict[str, dict[str, float]]:
    """Lowest elemental reference energy per atom, per fidelity and element (eV/atom)."""
    refs = json.loads((campaign / "references.json").read_text())
    mu: dict[str, dict[str, float]] = {}
    for fidelity, entries in refs.items():
        for e in entries:
            comp = e["composition"]
            if len(comp) == 1:
                (el, n), = comp.items()
                mu.setdefault(fidelity, {})
                mu[fidelity][el] = min(mu[fidelity].get(el, float("inf")), e["energy"] / n)
    return mu


def _ledger_e_form(campaign) -> dict[tuple[str, str], tuple[int, float]]:
    """``{(structure_id, fidelity): (round bought, computed E_form eV/atom)}`` of successful candidate jobs."""
    mu = _mu(campaign)
    out = {}
    rows = _sql(campaign, "SELECT j.structure_id, j.fidelity, j.round, j.result_json FROM jobs j JOIN candidates c "
                          "ON c.structure_id = j.structure_id WHERE c.role = 'candidate' AND j.state = 'done'")
    for sid, fidelity, number, result_json in rows:
        entry = json.loads(result_json)["entry"]
        comp = entry["composition"]
        n = sum(comp.values())
        out[(sid, fidelity)] = (number, entry["energy"] / n - sum(k / n * mu[fidelity][el] for el, k in comp.items()))
    return out


def _ledger_headline(campaign) -> dict:
    """The headline figures straight from the ledger tables."""
    (found_json,) = _sql(campaign, "SELECT hull_json FROM hulls WHERE fidelity = 'scan' ORDER BY round DESC LIMIT 1")[0]
    candidates = {r[0] for r in _sql(campaign, "SELECT structure_id FROM candidates WHERE role = 'candidate'")}
    found = sorted(set(json.loads(found_json)["stable_ids"]) & candidates)
    (spent, cpu_h), = _sql(campaign, "SELECT SUM(COALESCE(actual_cost, estimated_cost)), "
                                     "SUM(COALESCE(actual_cpu_hours, estimated_cpu_hours, 0)) FROM jobs "
                                     "WHERE state IN ('done', 'failed')")
    calculations: dict[str, dict[str, int]] = {}
    for fidelity, state, n in _sql(campaign, "SELECT fidelity, state, COUNT(*) FROM jobs GROUP BY fidelity, state"):
        calculations.setdefault(fidelity, {})[state] = n
    scan_computed = {r[0] for r in _sql(campaign, "SELECT j.structure_id FROM jobs j JOIN candidates c ON "
                                                  "c.structure_id = j.structure_id WHERE c.role = 'candidate' "
                                                  "AND j.fidelity = 'scan' AND j.state = 'done'")}
    e_form = _ledger_e_form(campaign)
    mae = {}
    for fidelity in ("pbe", "scan"):
        errors = []
        for (sid, f), (number, value) in e_form.items():
            if f != fidelity:
                continue
            (pred,), = _sql(campaign, "SELECT e_form_mean_ev_per_atom FROM predictions WHERE round = ? AND "
                                      "structure_id = ? AND fidelity = ?", number, sid, fidelity)
            errors.append(abs(pred - value))
        mae[fidelity] = sum(errors) / len(errors) if errors else None
    per_round = {}
    for (number,) in _sql(campaign, "SELECT round FROM rounds ORDER BY round"):
        scan = {r[0] for r in _sql(campaign, "SELECT j.structure_id FROM jobs j JOIN candidates c ON c.structure_id "
                                             "= j.structure_id WHERE c.role = 'candidate' AND j.fidelity = 'scan' "
                                             "AND j.state = 'done' AND j.round = ?", number)}
        hits = len(scan & set(found))
        per_round[number] = (len(scan), hits, hits / len(scan) if scan else None)
    return {"found": found, "spent": spent, "cpu_h": cpu_h, "calculations": calculations,
            "n_scan": len(scan_computed), "hit_rate": len(found) / len(scan_computed),
            "cpu_h_per_find": cpu_h / len(found), "mae": mae, "per_round": per_round}


class _Cells(HTMLParser):
    """``data-key`` cells of the headline table and the rows of every table, as visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.keyed: dict[str, str] = {}
        self.tables: list[list[list[str]]] = []
        self._key = None
        self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._key = attrs.get("data-key")
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            if self._key:
                self.keyed[self._key] = self._cell.strip()
            if self.tables and self.tables[-1]:
                self.tables[-1][-1].append(self._cell.strip())
            self._cell = self._key = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def test_headline_figures_equal_the_ledger(synthetic_campaign, built_report):
    truth = _ledger_headline(synthetic_campaign)
    h = load_report_data(synthetic_campaign).headline
    assert h.found_ids == truth["found"] and h.n_found == 2
    assert h.spent_budget_units == pytest.approx(truth["spent"]) and h.spent_cpu_hours == pytest.approx(truth["cpu_h"])
    assert h.calculations == truth["calculations"]
    assert h.n_scan_computed == truth["n_scan"] == 3
    assert h.hit_rate == pytest.approx(truth["hit_rate"])
    assert h.cpu_hours_per_find == pytest.approx(truth["cpu_h_per_find"])
    for fidelity in ("pbe", "scan"):
        assert h.mae_e_form_ev_per_atom[fidelity] == pytest.approx(truth["mae"][fidelity], abs=1e-9)
    assert {r.round: (r.n_computed["scan"], r.n_found, r.hit_rate) for r in h.rounds} == truth["per_round"]
    assert h.rounds[-1].cum_found == h.n_found and h.rounds[-1].cum_cpu_hours == pytest.approx(truth["cpu_h"])

    page = _Cells()
    page.feed((built_report.site_dir / "index.html").read_text())
    cell = page.keyed
    assert cell["n_found"] == str(len(truth["found"]))
    assert cell["spent_budget_units"].startswith(f"{truth['spent']:.4g} of 100 ")
    assert cell["spent_cpu_hours"] == f"{truth['cpu_h']:.4g}"
    assert cell["calculations"] == "; ".join(
        f"{f.upper()}: " + ", ".join(f"{n} {s}" for s, n in sorted(c.items()))
        for f, c in sorted(truth["calculations"].items()))
    assert cell["n_scan_computed"] == str(truth["n_scan"])
    assert cell["hit_rate"] == f"{100 * truth['hit_rate']:.1f}\u00a0%"
    assert cell["cpu_hours_per_find"] == f"{truth['cpu_h_per_find']:.4g}"
    for fidelity in ("pbe", "scan"):
        assert cell[f"mae_{fidelity}"].startswith(f"{1000 * truth['mae'][fidelity]:.0f} (over ")
    assert cell["daf"] == "-" and cell["prevalence"].startswith("unknown")  # stand-in: the truth is not known
    rounds = next(t for t in page.tables if t and t[0][:5] == ["round", "computed PBE", "computed SCAN", "found",
                                                                "hit rate"])
    shown = {int(row[0]): (int(row[2]), int(row[3]), row[4]) for row in rounds[1:]}
    assert shown == {n: (k, hits, "-" if rate is None else f"{100 * rate:.1f}\u00a0%")
                     for n, (k, hits, rate) in truth["per_round"].items()}


def test_parity_plot_data_are_formation_energies(synthetic_campaign, tmp_path, monkeypatch):
    from screener.report import plots, write_report

    drawn = {}
    original = plots.plot_parity

    def spy(points, quantity, path):
        drawn[quantity] = points
        return original(points, quantity, path)

    monkeypatch.setattr(plots, "plot_parity", spy)
    write_report(synthetic_campaign, tmp_path / "rep")
    e_form = _ledger_e_form(synthetic_campaign)
    for fidelity in ("pbe", "scan"):
        points = drawn["e_form"][fidelity]
        assert {p.structure_id for p in points} == {s for s, f in e_form if f == fidelity}
        for p in points:
            number, computed = e_form[(p.structure_id, fidelity)]
            assert p.computed == pytest.approx(computed, abs=1e-9)  # E_form (about -2 eV/atom), not E_hull (~0)
            (pred,), = _sql(synthetic_campaign, "SELECT e_form_mean_ev_per_atom FROM predictions WHERE round = ? "
                                                "AND structure_id = ? AND fidelity = ?",
                            number, p.structure_id, fidelity)
            assert p.predicted == pytest.approx(pred) and p.round == number  # made before the purchase
    # the E_hull panel: prediction and result on the same final hull, so their difference is the E_form error
    for fidelity in ("pbe", "scan"):
        by_id = {p.structure_id: p for p in drawn["e_form"][fidelity]}
        for p in drawn["e_hull"][fidelity]:
            q = by_id[p.structure_id]
            assert p.predicted - p.computed == pytest.approx(q.predicted - q.computed, abs=1e-9)
