"""`screener world build` and `screener candidates`: thin commands, one-line errors."""

from __future__ import annotations

import json

import pytest


def test_world_build_cli_writes_a_world(tmp_path, run_cli):
    out = tmp_path / "w"
    code, stdout, err = run_cli(["world", "build", "--out", out, "--size", 6, "--seed", 3, "--elements", "Zn,Ti,Zr,N",
                                 "--n-jobs", 1])
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["elements"] == ["N", "Ti", "Zn", "Zr"] and manifest["seed"] == 3
    assert manifest["command"].startswith("screener world build --out ")
    assert f"-> {out}" in stdout and "pbe: E_hull median" in stdout


def test_candidates_cli_dedupes_against_known(tmp_path, run_cli, data_dir):
    from screener.structures import read_structures

    output = tmp_path / "c.extxyz"
    code, stdout, err = run_cli(["candidates", "--elements", "Li,Fe,O", "--known", data_dir / "mp_entries/Li-Fe-O.json.gz",
                                 "--max-candidates", 12, "-o", output])
    assert code == 0, err
    records = read_structures([output]).records
    assert len(records) == 12 and "12 candidates" in stdout
    assert all(r.structure_id.startswith("hyp-") for r in records)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["candidates", "--elements", "Li,Qq"], "'Qq' is not an element symbol"),
        (["candidates", "--elements", "Li,Fe", "--known", "missing.json"], "missing.json"),
        (["world", "build", "--out", "{tmp}", "--size", "3"], "--overwrite"),
        (["world", "build", "--out", "{tmp}/new", "--size", "3", "--elements", "Xe"], "Xe"),
    ],
)
def test_cli_errors_are_one_line(argv, message, tmp_path, run_cli):
    (tmp_path / "occupied.txt").write_text("x")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, stdout, err = run_cli(argv)
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
