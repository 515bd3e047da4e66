"""run_calculations / write_results and the `screener calc` command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

CSV = Path(__file__).parents[1] / "calculators" / "data" / "mp20_candidates.csv"


@pytest.fixture
def three_cifs(tmp_path) -> Path:
    csv.field_size_limit(10**8)
    with open(CSV, newline="") as handle:
        rows = list(csv.DictReader(handle))[:3]
    folder = tmp_path / "cifs"
    folder.mkdir()
    for row in rows:
        (folder / f"{row['material_id']}.cif").write_text(row["cif"])
    return folder


def _completed(campaign: Path) -> dict[str, str]:
    """uuid -> completed_at of the campaign's stored job outputs."""
    from screener.execution import make_job_store

    store = make_job_store("local", campaign)
    store.connect()
    return {d["uuid"]: d["completed_at"] for d in store.query({}, properties=["uuid", "completed_at"], load=False)}


def test_run_calculations_both_fidelities(tmp_path, two_candidates):
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    from screener.execution.batch import run_calculations, write_results

    seen = []
    results = run_calculations(two_candidates, ("scan", "pbe"), campaign_dir=tmp_path / "c",
                               progress=lambda d, t: seen.append(d))
    assert [(r.structure_id, r.fidelity) for r in results] == [
        (sid, f) for sid, _ in two_candidates for f in ("pbe", "scan")
    ]
    assert all(r.success for r in results) and seen == [1, 2, 1, 2]
    paths = write_results(results, tmp_path / "out")
    entries = [ComputedStructureEntry.from_dict(d) for d in json.loads(paths["entries_scan"].read_text())]
    assert {e.data["fidelity"] for e in entries} == {"scan"} and len(entries) == 2
    assert len(json.loads(paths["results"].read_text())) == 4


def test_calc_command(tmp_path, three_cifs):
    from typer.testing import CliRunner

    from screener.cli import app

    runner = CliRunner()
    campaign = tmp_path / "calc"
    args = ["calc", str(three_cifs), "--fidelity", "both", "--campaign-dir", str(campaign)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "6/6 calculations succeeded" in first.output
    assert (campaign / "entries_pbe.json").exists() and (campaign / "entries_scan.json").exists()
    stamp = _completed(campaign)
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "6/6" in again.output
    assert len(stamp) == 6 and _completed(campaign) == stamp  # nothing recomputed

    bad = runner.invoke(app, ["calc", str(three_cifs), "--fidelity", "hse", "--campaign-dir", str(campaign)])
    assert bad.exit_code != 0
