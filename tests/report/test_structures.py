"""Tests of screener/report/structures.py: viewer data and the CIF / POSCAR downloads."""

from __future__ import annotations

import html
import json

import pytest
from pymatgen.core import Lattice, Structure

from screener.report.structures import element_color, viewer_html, viewer_payload, write_structure_files


@pytest.fixture
def nacl() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_payload_repeats_face_sites_to_close_the_cell(nacl):
    payload = viewer_payload(nacl)
    counts = {el: sum(1 for a in payload["atoms"] if a["el"] == el) for el in ("Na", "Cl")}
    # conventional rock salt: Na on 8 corners + 6 face centres, Cl on 12 edge centres + the body centre
    assert counts == {"Na": 14, "Cl": 13}
    assert payload["n_sites"] == 8 and payload["formula"] == "NaCl"
    assert payload["elements"]["Cl"]["color"] == element_color("Cl") != element_color("Na")
    assert all(0 <= x <= 5.64 + 1e-6 for a in payload["atoms"] for x in a["xyz"])


def test_viewer_html_round_trips_the_payload(nacl):
    block = viewer_html(nacl, caption="a <caption>")
    attr = block.split('data-structure="', 1)[1].split('"', 1)[0]
    assert json.loads(html.unescape(attr)) == viewer_payload(nacl)
    assert "a &lt;caption&gt;" in block


def test_files_parse_back(nacl, tmp_path):
    paths = write_structure_files(nacl, tmp_path, "NaCl-rs")
    for path in paths.values():
        parsed = Structure.from_file(path)
        assert parsed.composition.reduced_formula == "NaCl"
        assert parsed.volume / len(parsed) == pytest.approx(nacl.volume / len(nacl))
