"""``hull_table`` / ``write_hull_csv`` and the ``screener hull`` command."""

from __future__ import annotations

import csv

import pytest
from screener.hull import hull_table, save_entries
from screener.hull.mp_cache import mp_cache_path
from screener.hull.table import HULL_COLUMNS, read_entry_files


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_cli_writes_csv_for_li_fe_o(tmp_path, run_cli, mp_entries_readonly, mp_entries_path):
    from pymatgen.analysis.phase_diagram import PhaseDiagram

    out = tmp_path / "hull.csv"
    code, stdout, _ = run_cli(["hull", str(mp_entries_path), "-o", str(out)])
    assert code == 0 and "375 entries, 11 stable" in stdout
    rows = _rows(out)
    assert list(rows[0]) == list(HULL_COLUMNS) and len(rows) == 375
    direct = PhaseDiagram(mp_entries_readonly)
    by_id = {row["id"]: row for row in rows}
    for entry in mp_entries_readonly:
        row = by_id[entry.entry_id]
        assert float(row["e_hull_ev_per_atom"]) == pytest.approx(direct.get_e_above_hull(entry), abs=2e-6)
        assert float(row["e_form_ev_per_atom"]) == pytest.approx(direct.get_form_energy_per_atom(entry), abs=2e-6)
    assert sorted(row["formula"] for row in rows if row["stable"] == "True") == sorted(
        ["Fe", "Li", "O2", "FeO", "Fe2O3", "Li2O", "Li2O2", "LiO8", "LiFeO2", "Li2FeO3", "Li5FeO4"])


def test_cli_references_and_offline_mp_cache(tmp_path, run_cli, monkeypatch, mp_entries_readonly):
    # candidates: Li-O phases only; competing phases from a local entry file; Fe-free
    li_o = [e for e in mp_entries_readonly if {str(el) for el in e.composition.elements} <= {"Li", "O"}]
    candidates = save_entries([e for e in li_o if len(e.composition.elements) == 2][:5], tmp_path / "cands.json")
    refs = save_entries([e for e in li_o if len(e.composition.elements) == 1], tmp_path / "refs.json.gz")
    out = tmp_path / "a.csv"
    code, _, _ = run_cli(["hull", str(candidates), "--references", str(refs), "-o", str(out)])
    assert code == 0 and len(_rows(out)) == 5
    # --mp --offline with nothing cached: one-line error, exit 2
    monkeypatch.setenv("SCREENER_MP_CACHE", str(tmp_path / "mp"))
    code, _, err = run_cli(["hull", str(candidates), "--mp", "--offline", "-o", str(out)])
    assert code == 2 and err.strip().startswith("error: offline") and len(err.strip().splitlines()) == 1
    # with the cache filled, --offline works and all Li-O phases compete
    save_entries(li_o, mp_cache_path("Li-O", "pbe", tmp_path / "mp"))
    code, _, _ = run_cli(["hull", str(candidates), "--mp", "--offline", "-o", str(out)])
    rows = _rows(out)
    assert code == 0 and len(rows) == 5
    from pymatgen.analysis.phase_diagram import PhaseDiagram

    direct = PhaseDiagram(li_o)
    for row in rows:
        entry = next(e for e in li_o if e.entry_id == row["id"])
        assert float(row["e_hull_ev_per_atom"]) == pytest.approx(direct.get_e_above_hull(entry), abs=2e-6)


def test_cli_refuses_mixed_functionals(tmp_path, run_cli, toy_entry):
    path = save_entries([toy_entry("NaCl", -2.0, fidelity="pbe")], tmp_path / "pbe.json")
    code, _, err = run_cli(["hull", str(path), "--functional", "scan", "-o", str(tmp_path / "x.csv")])
    assert code == 2 and "never mix" in err
    code, _, err = run_cli(["hull", str(tmp_path / "nope.json"), "-o", str(tmp_path / "x.csv")])
    assert code == 2 and "no such file" in err


def test_shipped_references_fill_missing_elements(toy_entry):
    # NaCl alone: Na and Cl come from the shipped MP elemental references
    rows, hull = hull_table([toy_entry("NaCl", -3.5)], "pbe")
    assert {e.composition.reduced_formula for e in hull.references} == {"Na", "Cl2"}
    (row,) = rows
    na, cl = (hull.get_entry(f"ref:mp:{el}").energy_per_atom for el in ("Na", "Cl"))
    assert row["e_form_ev_per_atom"] == pytest.approx(-3.5 - (na + cl) / 2)
    assert row["stable"] is (row["e_hull_ev_per_atom"] <= 1e-6)
    with pytest.raises(Exception, match="no entries"):
        hull_table([], "pbe")


def test_read_entry_files_keeps_ids(tmp_path, mp_entries_readonly):
    path = save_entries(mp_entries_readonly[:3], tmp_path / "few.json.bz2")
    entries = read_entry_files([path])
    assert [e.data["structure_id"] for e in entries] == [e.entry_id for e in mp_entries_readonly[:3]]
