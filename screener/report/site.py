"""Write a campaign's report as an MkDocs project (``mkdocs.yml`` + ``docs/``) and build it with ``--strict``.

The site is self-contained: Material theme with ``font: false`` and no generator footer, the viewer / table-sorter
JavaScript and the CSS copied from ``screener/report/assets``, plots as PNG files, ``use_directory_urls: false``
so it works from a web server or straight from disk (search needs a server), with no network.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from importlib.resources import files
from pathlib import Path
from typing import Any

from screener.errors import InvalidInputError, ScreenerError
from screener.report.data import (DEFAULT_CANDIDATE_PAGES, FIDELITIES, ReportData, choose_pages, load_report_data,
                                  slugify)

__all__ = ["ReportBuildError", "ReportResult", "build_report", "write_report", "run_mkdocs_build", "MARKER_FILE"]

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage, completed, total), as in screener.campaign

MARKER_FILE = ".screener-report"
ASSETS = ("crystal-viewer.js", "table-sort.js", "report.css")
_VERSION_PACKAGES = ("screener", "pymatgen", "jobflow", "atomate2", "numpy", "matplotlib", "mkdocs", "mkdocs-material")


class ReportBuildError(ScreenerError):
    """``mkdocs build --strict`` failed (its warnings are in the message)."""


@dataclass
class ReportResult:
    """Where the report went: the MkDocs project, the built HTML site (None with ``build=False``) and its pages."""

    project_dir: Path
    site_dir: Path | None
    pages: list[Path] = field(default_factory=list)
    n_candidates: int = 0  # candidate pages written
    build_seconds: float | None = None
    n_selected: int = 0  # selected candidates (each a row of the candidates table)

    @property
    def index_html(self) -> Path | None:
        return self.site_dir / "index.html" if self.site_dir else None


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in _VERSION_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _prepare_output(project_dir: Path) -> Path:
    """Create ``project_dir`` (or reuse one this module wrote) and return a fresh, empty ``docs/`` in it."""
    if project_dir.exists() and any(project_dir.iterdir()) and not (project_dir / MARKER_FILE).exists():
        raise InvalidInputError(
            f"{project_dir} exists and is not a screener report; choose another folder with -o (nothing was written)")
    project_dir.mkdir(parents=True, exist_ok=True)
    (project_dir / MARKER_FILE).write_text("written by `screener report`; the folder is replaced on each run\n")
    docs = project_dir / "docs"
    for old in (docs, project_dir / "site"):
        if old.exists():
            shutil.rmtree(old)
    docs.mkdir()
    return docs


def _mkdocs_config(title: str) -> dict[str, Any]:
    import html

    return {
        # themes print site_name unescaped (in <title> and the header); the title may hold a folder name
        "site_name": html.escape(" ".join(title.split()), quote=True),
        "use_directory_urls": False,
        "docs_dir": "docs",
        "site_dir": "site",
        "theme": {"name": "material", "font": False,
                  "features": ["navigation.top", "content.code.copy", "toc.integrate"],
                  "palette": {"scheme": "default", "primary": "indigo"}},
        "extra": {"generator": False},
        "extra_css": ["assets/report.css"],
        "extra_javascript": [f"assets/{a}" for a in ASSETS if a.endswith(".js")],
        # superfences: fenced code inside list items (model cards' "Rebuild" commands) stays a code block
        "markdown_extensions": ["admonition", "pymdownx.details", "pymdownx.superfences", "attr_list", "tables",
                                {"toc": {"permalink": True}}],
        "plugins": ["search"],
        "nav": [{"Overview": "index.md"}, {"Candidates": "candidates.md"}, {"Methods": "methods.md"},
                {"Event log": "events.md"}],
        "not_in_nav": "/candidates/*.md\n",
        "validation": {"omitted_files": "warn", "absolute_links": "warn", "unrecognized_links": "warn",
                       "anchors": "warn"},
    }


def _model_cards(data: ReportData) -> dict[str, str]:
    """MODEL_CARD.md of the initial ensemble and of the latest version of each fidelity (where the files exist)."""
    folders: dict[str, tuple[str, str]] = {}
    if data.config.get("model"):
        folders["initial"] = ("initial PBE ensemble", str(data.config["model"]))
    if data.config.get("scan_model"):
        folders["initial scan"] = ("initial SCAN ensemble", str(data.config["scan_model"]))
    for m in data.models:  # oldest first: the latest of each fidelity wins
        if m.get("path"):
            folders[m["fidelity"]] = (f"latest {m['fidelity'].upper()} model ({m['version']})", str(m["path"]))
    cards = {}
    for name, folder in folders.values():
        path = Path(folder)
        if not path.is_absolute():
            path = data.campaign_dir / path
        card = path / "MODEL_CARD.md"
        if card.is_file():
            cards[name] = card.read_text(errors="replace")
    return cards


def _latest_fit(data: ReportData) -> Any:
    for r in reversed(data.rounds):
        raw = r.policy_numbers.get("scaling_law")
        if raw:
            from screener.policies.scaling_law import ScalingLawFit

            try:
                return ScalingLawFit.model_validate(raw)
            except ValueError as exc:
                logger.warning("round %d: unreadable scaling-law fit: %s", r.round, exc)
    return None


def write_report(
    campaign_dir: str | Path,
    output_dir: str | Path | None = None,
    *,
    title: str | None = None,
    progress: Progress | None = None,
    top_n: int | None = DEFAULT_CANDIDATE_PAGES,
) -> ReportResult:
    """Write the MkDocs project of a campaign's report (no build).

    Parameters
    ----------
    campaign_dir : path
        The campaign folder; its ledger is only read.
    output_dir : path, optional
        Folder of the MkDocs project (default ``<campaign_dir>/report``); replaced if a previous report is there,
        refused if it holds anything else.
    title : str, optional
        Site title (default: "Campaign report: <folder name>").
    progress : callable, optional
        ``progress(stage, done, total)`` for the per-candidate pages.
    top_n : int or None
        Candidate pages for the first ``top_n`` selected candidates (found first, then by computed SCAN and PBE
        E_hull: :func:`~screener.report.data.report_order`); None: one page for every selected candidate. The
        candidates table lists every selected candidate either way.

    Returns
    -------
    ReportResult
        With ``site_dir=None``.
    """
    from screener.report import plots
    from screener.report.pages import candidate_page, candidates_page, events_page, methods_page, overview_page
    from screener.report.structures import viewer_html, write_structure_files

    campaign_dir = Path(campaign_dir)
    if top_n is not None and top_n < 0:
        raise InvalidInputError(f"--top must be >= 0, got {top_n}")
    data = load_report_data(campaign_dir)
    with_pages = choose_pages(data, top_n)
    project_dir = Path(output_dir) if output_dir is not None else campaign_dir / "report"
    title = title or f"Campaign report: {campaign_dir.resolve().name}"
    docs = _prepare_output(project_dir)
    assets = docs / "assets"
    assets.mkdir()
    for name in ASSETS:
        (assets / name).write_bytes((files("screener.report") / "assets" / name).read_bytes())

    figs = docs / "figures"
    unit = data.budget.unit
    figures = {
        "spend": plots.plot_spend(data.jobs, data.rounds, unit, figs / "spend.png"),
        "discoveries": plots.plot_discoveries(data.headline, unit, data.config.get("unit_cpu_hours"),
                                              figs / "discoveries.png"),
        "learning_curve": plots.plot_learning_curve(data.learning_curve, _latest_fit(data),
                                                    figs / "learning_curve.png"),
        "parity_e_form": plots.plot_parity({f: data.parity(f, "e_form") for f in FIDELITIES}, "e_form",
                                           figs / "parity_e_form.png"),
        "parity_e_hull": plots.plot_parity({f: data.parity(f, "e_hull") for f in FIDELITIES}, "e_hull",
                                           figs / "parity_e_hull.png"),
        "reliability": plots.plot_reliability(data.reliability, figs / "reliability.png"),
    }
    pages = [docs / "index.md", docs / "candidates.md", docs / "methods.md", docs / "events.md"]
    pages[0].write_text(overview_page(data, {k: p.relative_to(docs).as_posix() for k, p in figures.items()},
                                     title=title))
    pages[1].write_text(candidates_page(data))

    cand_dir = docs / "candidates"
    cand_dir.mkdir()
    hull_cache: dict[tuple[str, str], str | None] = {}
    total = len(with_pages)
    for k, cand in enumerate(with_pages):
        if progress:
            progress("candidate pages", k, total)
        structure, note = cand.best_structure()
        folder = cand_dir / cand.slug
        written = write_structure_files(structure, folder, cand.slug)
        downloads = {f"CIF ({note.split(' (')[0]})": f"{cand.slug}/{written['cif'].name}",
                     "POSCAR": f"{cand.slug}/{written['poscar'].name}"}
        if cand.structure is not None and structure is not cand.structure:
            inp = write_structure_files(cand.structure, folder, f"{cand.slug}_input")
            downloads |= {"input CIF": f"{cand.slug}/{inp['cif'].name}",
                          "input POSCAR": f"{cand.slug}/{inp['poscar'].name}"}
        energy_fig = plots.plot_candidate_energies(cand, folder / "e_hull.png")
        hull_figs: dict[str, str | None] = {}
        for f in FIDELITIES:
            key = (f, cand.chemsys)
            if key not in hull_cache:
                hull = data.hull(f)
                path = figs / "hulls" / f"{f}_{slugify(cand.chemsys)}.png"  # chemsys is data: no path in it
                drawn = plots.plot_hull(hull, cand.chemsys, path) if hull is not None and cand.chemsys else None
                hull_cache[key] = drawn.relative_to(docs).as_posix() if drawn else None
            hull_figs[f] = f"../{hull_cache[key]}" if hull_cache[key] else None
        page = cand_dir / f"{cand.slug}.md"
        page.write_text(candidate_page(
            cand, data, viewer=viewer_html(structure, caption=f"{cand.formula}: {note}"), files=downloads,
            structure_note=f"Shown: {note}", energy_figure=energy_fig.relative_to(cand_dir).as_posix(),
            hull_figures=hull_figs))
        pages.append(page)
    if progress:
        progress("candidate pages", total, total)

    ledger = campaign_dir / "ledger.sqlite"
    provenance = {
        "campaign created with screener": str(data.config.get("screener_version") or "unknown"),
        "ledger schema version": str(data.schema_version or "unknown"),
        "ledger sha256 at report time": _sha256(ledger),
        "report written (UTC)": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "seed": str(data.config.get("seed", "-")),
        "policy": str(data.config.get("policy", "-")),
    }
    pages[2].write_text(methods_page(data, model_cards=_model_cards(data), versions=_versions(),
                                     provenance=provenance))
    pages[3].write_text(events_page(data))
    import yaml

    (project_dir / "mkdocs.yml").write_text(
        "# Written by `screener report`; rebuild with `mkdocs build --strict` in this folder.\n"
        + yaml.safe_dump(_mkdocs_config(title), sort_keys=False, allow_unicode=True))
    logger.info("report project written to %s (%d pages)", project_dir, len(pages))
    return ReportResult(project_dir=project_dir, site_dir=None, pages=pages, n_candidates=total,
                        n_selected=len(data.candidates))


def run_mkdocs_build(project_dir: str | Path, *, timeout_s: float = 600.0) -> Path:
    """Run ``mkdocs build --strict`` on a report project (offline) and return the built site folder.

    Raises
    ------
    ReportBuildError
        When MkDocs reports a warning or an error (strict mode), with its messages.
    """
    project_dir = Path(project_dir).resolve()  # mkdocs runs with the project as its working folder
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--clean", "-f", str(project_dir / "mkdocs.yml")]
    try:
        proc = subprocess.run(cmd, cwd=project_dir, env=env, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise ReportBuildError(f"mkdocs build did not finish within {timeout_s:.0f} s") from exc
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        problems = [ln for ln in lines if "WARNING" in ln or "ERROR" in ln] or lines[-5:]
        raise ReportBuildError(f"mkdocs build --strict failed in {project_dir}: " + " | ".join(problems[:10]))
    return project_dir / "site"


def build_report(
    campaign_dir: str | Path,
    output_dir: str | Path | None = None,
    *,
    build: bool = True,
    title: str | None = None,
    progress: Progress | None = None,
    top_n: int | None = DEFAULT_CANDIDATE_PAGES,
) -> ReportResult:
    """Write a campaign's report as an MkDocs project and (by default) build it with ``mkdocs build --strict``.

    Parameters
    ----------
    campaign_dir : path
        The campaign folder (read-only).
    output_dir : path, optional
        MkDocs project folder (default ``<campaign_dir>/report``); the HTML goes to ``<output_dir>/site``.
    build : bool
        Run the strict MkDocs build after writing the project.
    title : str, optional
        Site title.
    progress : callable, optional
        ``progress(stage, done, total)``.
    top_n : int or None
        Candidate pages written (see :func:`write_report`; None: all).

    Returns
    -------
    ReportResult

    Examples
    --------
    >>> from screener.report import build_report
    >>> result = build_report("my_campaign")  # doctest: +SKIP
    >>> result.index_html  # doctest: +SKIP
    PosixPath('my_campaign/report/site/index.html')
    """
    result = write_report(campaign_dir, output_dir, title=title, progress=progress, top_n=top_n)
    if build:
        if progress:
            progress("mkdocs build", 0, 1)
        t0 = time.perf_counter()
        result.site_dir = run_mkdocs_build(result.project_dir)
        result.build_seconds = time.perf_counter() - t0
        if progress:
            progress("mkdocs build", 1, 1)
    return result
