"""Tests of screener/report/site.py: the strict offline MkDocs build of a synthetic campaign's report."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from pymatgen.core import Structure

from screener.errors import InvalidInputError
from screener.report import ReportBuildError, load_report_data, run_mkdocs_build, write_report
from screener.report.site import MARKER_FILE

SELECTED = {"Li2O-afl", "LiO2-hyp", "NaCl-rs", "Na3Cl-hyp", "Li/O odd:id"}
# XML namespace names are identifiers, never fetched; every other absolute URL would leave the report.
_NAMESPACES = {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink", "http://www.w3.org/1999/xhtml"}
_URL = re.compile(r"""(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s"'<>)]*""")


def test_strict_build_writes_a_page_per_selected_candidate(built_report):
    site = built_report.site_dir
    for page in ("index.html", "candidates.html", "methods.html", "events.html"):
        assert (site / page).is_file(), page
    pages = sorted(p.stem for p in (site / "candidates").glob("*.html"))
    assert pages == sorted(["Li2O-afl", "LiO2-hyp", "NaCl-rs", "Na3Cl-hyp", "Li_O_odd_id"])
    assert built_report.n_candidates == len(SELECTED)
    html = (site / "candidates" / "Li_O_odd_id.html").read_text()
    assert "Li/O odd:id" in html and 'class="crystal-viewer"' in html
    config = yaml.safe_load((built_report.project_dir / "mkdocs.yml").read_text())
    assert config["theme"]["font"] is False and config["use_directory_urls"] is False
    assert config["extra"]["generator"] is False


def test_built_html_has_no_external_urls(built_report):
    site = built_report.site_dir
    checked = 0
    for path in site.rglob("*.html"):
        for url in _URL.findall(path.read_text()):
            assert url in _NAMESPACES, f"{path.relative_to(site)} links out of the report: {url}"
        checked += 1
    for name in ("crystal-viewer.js", "table-sort.js", "report.css"):
        assert not _URL.findall((site / "assets" / name).read_text()), name
    assert checked >= 9


def test_candidate_table_links_and_sort_keys(built_report):
    site = built_report.site_dir
    html = (site / "candidates.html").read_text()
    links = re.findall(r'href="(candidates/[^"]+\.html)"', html)
    assert len(links) == len(SELECTED)
    for link in links:
        assert (site / link).is_file(), link
    table = html[html.index('id="candidates-table"'):]
    assert table.count("<tr>") == len(SELECTED) + 1  # header + one row each
    assert 'data-sort="0.000"' in table  # computed E_hull of a hull phase, machine-readable for the sorter


def test_downloads_parse_back_with_pymatgen(built_report, synthetic_campaign):
    data = load_report_data(synthetic_campaign)
    site = built_report.site_dir
    for cand in data.candidates:
        best, _ = cand.best_structure()
        for name in (f"{cand.slug}.cif", f"{cand.slug}.POSCAR"):
            path = site / "candidates" / cand.slug / name
            parsed = Structure.from_file(path)
            assert parsed.composition.reduced_formula == cand.formula, name
            assert parsed.volume / len(parsed) == pytest.approx(best.volume / len(best), rel=1e-4), name
        page = (site / "candidates" / f"{cand.slug}.html").read_text()
        assert f'href="{cand.slug}/{cand.slug}.cif"' in page


def test_stand_in_results_are_labelled(built_report):
    page = (built_report.site_dir / "candidates" / "NaCl-rs.html").read_text()
    assert "Not DFT" in page and "stand-in: CHGNet r2scan" in page
    overview = (built_report.site_dir / "index.html").read_text()
    assert "Not DFT" in overview and "stand-in: CHGNet 0.3.0" in overview


def test_strict_build_rejects_a_broken_link(built_report, tmp_path):
    project = Path(shutil.copytree(built_report.project_dir, tmp_path / "rep", ignore=shutil.ignore_patterns("site")))
    assert run_mkdocs_build(project) == project / "site"  # the copy builds as it is
    index = project / "docs" / "index.md"
    index.write_text(index.read_text() + "\n[missing](no-such-page.md)\n")
    with pytest.raises(ReportBuildError, match="no-such-page"):
        run_mkdocs_build(project)


def test_output_folder_is_replaced_only_when_it_is_a_report(synthetic_campaign, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(InvalidInputError, match="not a screener report"):
        write_report(synthetic_campaign, foreign)
    assert (foreign / "notes.txt").read_text() == "keep me" and not (foreign / "docs").exists()
    previous = tmp_path / "rep"  # an earlier report (it carries the marker file) with a page that is now stale
    (previous / "docs" / "candidates").mkdir(parents=True)
    (previous / MARKER_FILE).write_text("")
    (previous / "docs" / "candidates" / "stale.md").write_text("# old")
    result = write_report(synthetic_campaign, previous)
    assert not (previous / "docs" / "candidates" / "stale.md").exists()
    assert (previous / "docs" / "candidates" / "NaCl-rs.md").is_file() and result.site_dir is None


def test_cli_report(synthetic_campaign, tmp_path, run_cli):
    code, stdout, err = run_cli(["report", synthetic_campaign, "-o", tmp_path / "out", "--no-build"])
    assert code == 0, err
    assert (tmp_path / "out" / "mkdocs.yml").is_file() and not (tmp_path / "out" / "site").exists()
    assert "5 selected candidate(s)" in stdout
    code, stdout, err = run_cli(["report", tmp_path / "nope"])
    assert code == 2 and err.strip().startswith("error:") and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_headless_browser_renders_viewers_without_errors(built_report, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from browser_check import check_site

    result = check_site(built_report.site_dir, shutil.which("chromium"), tmp_path / "shots")
    assert result["console_errors"] == [] and result["external_requests"] == [] and result["failed_requests"] == []
    assert result["viewers"] == len(SELECTED) and result["viewers_rendered"] == len(SELECTED)
    assert result["sort_ok"] is True and result["ok"] is True


def test_fresh_campaign_without_rounds_builds(tmp_path):
    from screener.campaign.ledger import Ledger
    from screener.report import build_report

    with Ledger.in_dir(tmp_path / "fresh", create=True) as ledger:
        ledger.set_meta("budget_total", 10.0)
        ledger.add_candidates([{"structure_id": "x", "formula": "Li", "chemsys": "Li", "n_sites": 1}])
    result = build_report(tmp_path / "fresh", tmp_path / "rep")
    assert result.n_candidates == 0 and (result.site_dir / "index.html").is_file()
    assert list((result.site_dir / "candidates").glob("*.html")) == []
    assert "No round has been planned yet" in (result.site_dir / "index.html").read_text()



def test_relative_campaign_folder_builds(synthetic_campaign, tmp_path, monkeypatch):
    """`screener report demo-campaign` from the folder that holds it (a relative path, as in make demo)."""
    import shutil

    from screener.report import build_report

    shutil.copytree(synthetic_campaign, tmp_path / "rel" / "camp", ignore=shutil.ignore_patterns("report"))
    monkeypatch.chdir(tmp_path / "rel")
    result = build_report(Path("camp"))
    assert result.site_dir is not None
    assert (tmp_path / "rel" / "camp" / "report" / "site" / "index.html").is_file()
