"""Markdown pages of the campaign report: overview, candidate table, one page per candidate, methods, event log.

Pages are plain strings (MkDocs markdown with a little raw HTML for the sortable table and the structure viewer).
Links inside raw HTML point at the built ``.html`` files (the site is built with ``use_directory_urls: false`` so it
also works when opened straight from disk); markdown links point at ``.md`` files so ``mkdocs build --strict``
checks them.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from screener.report.data import FIDELITIES, CandidateInfo, JobInfo, ReportData, backend_labels

__all__ = [
    "overview_page",
    "candidates_page",
    "candidate_page",
    "methods_page",
    "events_page",
    "honesty_note",
    "strip_external_links",
]

_BACKEND_NOTES = {
    "standin": "a **stand-in** calculator (an ML potential, CHGNet, run through atomate2's force-field makers), "
               "**not DFT**",
    "replay": "**replayed** energies read from a labelled data set, **not computed** in this campaign",
    "vasp": "VASP DFT calculations (atomate2 workflows)",
}


# ---- formatting helpers ------------------------------------------------------------------------------------------
def _num(x: Any, fmt: str = ".3g", missing: str = "-") -> str:
    if x is None or isinstance(x, bool):
        return missing if x is None else str(x)
    try:
        value = float(x)
    except (TypeError, ValueError):
        return str(x)
    return f"{value:{fmt}}" if math.isfinite(value) else missing


def _mev(x_ev: Any, std_ev: Any = None) -> str:
    """eV/atom -> 'N meV/atom' text (with ± std)."""
    if x_ev is None:
        return "-"
    text = f"{1000 * float(x_ev):.0f}"
    if std_ev is not None:
        text += f" ± {1000 * float(std_ev):.0f}"
    return text


def _cell(text: Any) -> str:
    """Text safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _code(text: Any) -> str:
    return "`" + str(text).replace("`", "'") + "`"


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(float(ts), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


_MD_LINK = re.compile(r"\[([^\]]*)\]\((?:https?:)?//[^)\s]+\)")
_BARE_URL = re.compile(r"(?:https?:)?//([A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s)>\]`]*)")


def strip_external_links(markdown: str) -> str:
    """Turn links to other hosts into plain text (``[text](https://host/x)`` -> ``text``; bare URLs lose their
    scheme), so a report never links out of itself."""
    markdown = _MD_LINK.sub(r"\1", markdown)
    return _BARE_URL.sub(r"\1", markdown)


def honesty_note(backends: Mapping[str, Sequence[str]], *, indent: str = "") -> str:
    """An admonition that says which energies are not DFT (empty when every result is VASP).

    ``backends`` maps a back-end name to the labels its results carry.
    """
    fake = {b: labels for b, labels in backends.items() if b != "vasp"}
    if not fake:
        return ""
    lines = [f'{indent}!!! warning "Not DFT: stand-in or replayed energies"', ""]
    for backend, labels in sorted(fake.items()):
        note = _BACKEND_NOTES.get(backend, f"back-end `{backend}`")
        lines.append(f"{indent}    - `{backend}`: {note}. Labels of its results: "
                     + "; ".join(f"*{_cell(label)}*" for label in labels) + ".")
    lines += [f"{indent}    ", f"{indent}    \"PBE\" and \"SCAN\" below name the fidelity each calculation stands "
              "in for; treat the energies, hulls and discoveries as a rehearsal of the workflow, not as DFT "
              "results.", ""]
    return "\n".join(lines) + "\n"


def _candidate_link(data: ReportData, sid: str, prefix: str = "candidates/") -> str:
    """Markdown link to a candidate page (or the id in code when it has no page)."""
    for cand in data.candidates:
        if cand.structure_id == sid:
            return f"[{_code(sid)}]({prefix}{cand.slug}.md)"
    return _code(sid)


# ---- overview ------------------------------------------------------------------------------------------------------
def overview_page(data: ReportData, figures: Mapping[str, str], *, title: str) -> str:
    """The overview: budget, calculations, discoveries, figures, and every policy decision with its numbers."""
    budget, unit = data.budget, data.budget.unit
    unit_cpu_h = data.config.get("unit_cpu_hours")
    stable_scan = data.stable_candidates("scan")
    stable_pbe = data.stable_candidates("pbe")
    state = "finished (nothing more fits the budget)" if data.finished else (
        f"in progress (last round {data.rounds[-1].round}: {data.rounds[-1].state})" if data.rounds else "not started")
    out = [f"# {title}", "", honesty_note(data.backends())]
    out += [
        "## Summary", "",
        _table(["", "value"], [
            ["campaign folder", _code(data.campaign_dir.resolve())],
            ["state", state],
            ["budget", f"{_num(budget.spent, '.4g')} spent + {_num(budget.reserved, '.4g')} reserved of "
                       f"{_num(budget.total, '.4g')} {unit} ({_num(budget.remaining, '.4g')} left)"],
            ["one budget unit", f"{_num(unit_cpu_h, '.4g')} CPU-hours" if unit_cpu_h else "-"],
            ["candidates", f"{data.n_candidates} screened, {len(data.candidates)} selected for a calculation"],
            ["calculations", "; ".join(
                f"{f.upper()}: " + ", ".join(f"{n} {s}" for s, n in sorted(c.items()))
                for f, c in sorted(data.job_counts.items())) or "none"],
            ["stable at SCAN level", f"{len(stable_scan)} (on the latest SCAN hull)"],
            ["stable at PBE level", f"{len(stable_pbe)} (on the latest PBE hull)"],
            ["rounds", str(len(data.rounds))],
            ["model versions", ", ".join(_code(m["version"]) for m in data.models) or "none (initial model only)"],
        ]),
    ]
    if stable_scan:
        out += ["**On the SCAN hull:** " + ", ".join(_candidate_link(data, s) for s in stable_scan), ""]
    out += ["See the [sortable table of selected candidates](candidates.md) and the [methods](methods.md).", ""]
    captions = {
        "spend": ("Budget spent by fidelity", "Charged cost of finished calculations (actual cost where the "
                  f"back-end reported one, else the estimate), in {unit}."),
        "discoveries": ("Discoveries vs spend", "Selected candidates on the latest hull of each fidelity after each "
                        "round, against the budget spent by the end of that round."),
        "learning_curve": ("Model error vs training-set size", "Prospective MAE of each round's predictions of "
                           "formation energy against that round's new results (before the model trained on them), "
                           "with the scaling law the policy fitted in its latest round."),
        "parity": ("Predicted vs computed E_hull", "Prediction of the round in which each calculation was chosen "
                   "(±1 ensemble standard deviation) against the E_hull computed on the latest hull of the same "
                   "fidelity."),
    }
    for key, (heading, caption) in captions.items():
        if key in figures:
            out += [f"## {heading}", "", f"![{heading}]({figures[key]}){{ .report-figure }}", "", caption, ""]
    out += _decisions_section(data)
    return "\n".join(out)


def _decisions_section(data: ReportData) -> list[str]:
    out = ["## Policy decisions", ""]
    if not data.rounds:
        return out + ["No round has been planned yet.", ""]
    rows = []
    for r in data.rounds:
        n = r.policy_numbers
        alloc = n.get("allocation") or {}
        law = n.get("scaling_law") or {}
        a, b = n.get("a", law.get("a")), n.get("b", law.get("b"))
        rows.append([
            r.round, r.state, n.get("policy", "-"), n.get("n_scan_planned", "-"), n.get("n_pbe_planned", "-"),
            alloc.get("decision", "-"), _mev(alloc.get("mae_now")) if alloc.get("mae_now") is not None else "-",
            _num(alloc.get("gain_per_cpu_hour_scan")), _num(alloc.get("gain_per_cpu_hour_pbe")),
            f"{_num(a)} ± {_num(n.get('a_std'))}" if a is not None else "-",
            f"{_num(b)} ± {_num(n.get('b_std'))}" if b is not None else "-",
            n.get("fit_source", law.get("source", "-")), f"{r.cost:.4g}",
        ])
    out += [_table(["round", "state", "policy", "SCAN planned", "PBE planned", "allocation", "MAE now (meV/atom)",
                    "MAE gain per CPU-h, SCAN (eV/atom)", "MAE gain per CPU-h, PBE (eV/atom)", "a", "b", "fit",
                    f"cost ({data.budget.unit})"], rows), "",
            "*a*, *b*: slopes of log MAE against log N_s and log N_p in the scaling law; gains are the predicted drop "
            "of the SCAN model's MAE per CPU-hour spent on each fidelity (the allocation buys the larger one).", ""]
    for r in data.rounds:
        n = r.policy_numbers
        reason = (n.get("allocation") or {}).get("reason")
        accepted = sum(1 for d in r.decisions if d.get("accepted"))
        out += [f'??? note "Round {r.round}: {len(r.decisions)} planned, {accepted} bought"', ""]
        if reason:
            out += [f"    Allocation: {_cell(reason)}", ""]
        scalars = {k: v for k, v in n.items() if not isinstance(v, (dict, list))}
        if scalars:
            out += ["    " + "; ".join(f"{_cell(k)} = {_cell(_num(v, '.4g'))}" for k, v in sorted(scalars.items())), ""]
        if r.decisions:
            table = _table(["#", "structure", "fidelity", "reason", f"estimated cost ({data.budget.unit})", "bought",
                            "score"],
                           [[d["position"], _candidate_link(data, d["structure_id"]), d["fidelity"].upper(),
                             d.get("reason") or "-", _num(d.get("estimated_cost"), ".3g"),
                             "yes" if d.get("accepted") else "no (budget)",
                             _num((d.get("numbers") or {}).get("score"))] for d in r.decisions])
            out += ["    " + line for line in table.splitlines()] + [""]
    return out


# ---- candidate table -----------------------------------------------------------------------------------------------
def candidates_page(data: ReportData) -> str:
    """A sortable HTML table of every selected candidate (click a header to sort)."""
    head = ["structure", "formula", "chemical system", "sites", "pred. SCAN E_hull (meV/atom)", "PBE E_hull (meV/atom)",
            "SCAN E_hull (meV/atom)", "stable (SCAN)", "jobs", f"cost ({data.budget.unit})"]
    rows = []
    for c in data.candidates:
        pred = c.predicted.get("scan") or {}
        mean, std = pred.get("e_hull_mean_ev_per_atom"), pred.get("e_hull_std_ev_per_atom")
        pbe, scan = c.computed_e_hull_ev_per_atom.get("pbe"), c.computed_e_hull_ev_per_atom.get("scan")
        cost = sum(j.charge for j in c.jobs if j.finished)
        jobs = ", ".join(f"{j.fidelity.upper()} {j.state}" for j in c.jobs)
        cells = [
            (c.structure_id, f'<a href="candidates/{_esc(c.slug)}.html"><code>{_esc(c.structure_id)}</code></a>'),
            (c.formula, _esc(c.formula)), (c.chemsys, _esc(c.chemsys)), (c.n_sites, str(c.n_sites)),
            ("" if mean is None else f"{1000 * mean:.3f}", _esc(_mev(mean, std))),
            ("" if pbe is None else f"{1000 * pbe:.3f}", _esc(_mev(pbe))),
            ("" if scan is None else f"{1000 * scan:.3f}", _esc(_mev(scan))),
            ("1" if c.stable.get("scan") else "0",
             '<span class="stable-yes">yes</span>' if c.stable.get("scan") else "no"),
            (jobs, _esc(jobs)), (f"{cost:.6g}", f"{cost:.3g}"),
        ]
        rows.append("<tr>" + "".join(f'<td data-sort="{_esc(k)}">{v}</td>' for k, v in cells) + "</tr>")
    table = (
        '<table class="sortable" id="candidates-table">\n<thead><tr>'
        + "".join(f"<th>{_esc(h)}</th>" for h in head)
        + "</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>\n"
    )
    return "\n".join([
        "# Selected candidates", "",
        f"{len(data.candidates)} of {data.n_candidates} candidates had at least one calculation bought. Click a "
        "column header to sort (again to reverse). Predicted E_hull: latest ensemble mean ± standard deviation; "
        "computed E_hull: on the latest hull of that fidelity.", "",
        honesty_note(data.backends()),
        table,
    ])


# ---- one candidate -------------------------------------------------------------------------------------------------
def _job_rows(jobs: Sequence[JobInfo]) -> list[list[Any]]:
    rows = []
    for j in jobs:
        cost = f"{j.charge:.3g}" if j.finished else f"{j.estimated_cost:.3g} (reserved)"
        rows.append([
            _code(j.uuid), j.round, j.fidelity.upper(), j.state, j.backend or "-", j.label or "-", j.run_type or "-",
            _num(j.energy_per_atom_ev, ".4f"),
            cost, _num(j.actual_cpu_hours if j.actual_cpu_hours is not None else j.estimated_cpu_hours, ".3g"),
            _num(j.wall_time_s, ".3g"), _time(j.finished_at), j.failure_reason or "-",
        ])
    return rows


def candidate_page(cand: CandidateInfo, data: ReportData, *, viewer: str, files: Mapping[str, str],
                   structure_note: str, energy_figure: str | None, hull_figures: Mapping[str, str | None]) -> str:
    """One candidate: formula, viewer + downloads, predicted vs computed E_hull, hull plots, jobs, decisions."""
    backends = backend_labels(cand.jobs)
    out = [f"# {cand.formula}: `{cand.structure_id}`", "",
           f"Chemical system **{cand.chemsys}**, {cand.n_sites} sites in the input cell. "
           + ("**On the latest SCAN hull.**" if cand.stable.get("scan") else
              "**On the latest PBE hull.**" if cand.stable.get("pbe") else ""), "",
           honesty_note(backends),
           "## Structure", "", viewer,
           "Drag to rotate, scroll to zoom, double-click to reset. " + structure_note + ". Download: "
           + ", ".join(f"[{name}]({path})" for name, path in files.items()) + ".", "",
           "## Energy above the hull", ""]
    rows = []
    for f in FIDELITIES:
        sel = cand.predicted_at_selection.get(f) or {}
        last = cand.predicted.get(f) or {}
        computed = cand.computed_e_hull_ev_per_atom.get(f)
        pred = sel.get("e_hull_mean_ev_per_atom")
        error = None if computed is None or pred is None else pred - computed
        rows.append([
            f.upper(),
            f"{_mev(pred, sel.get('e_hull_std_ev_per_atom'))} (round {sel.get('round', '-')})" if sel else "-",
            f"{_mev(last.get('e_hull_mean_ev_per_atom'), last.get('e_hull_std_ev_per_atom'))} (round "
            f"{last.get('round', '-')})" if last else "-",
            _num(last.get("p_stable"), ".2f"),
            _mev(computed), _mev(error),
            _num(cand.computed_e_form_ev_per_atom.get(f), ".4f"),
        ])
    out += [_table(["fidelity", "predicted when selected (meV/atom)", "latest prediction (meV/atom)", "P(stable)",
                    "computed (meV/atom)", "error (meV/atom)", "computed E_form (eV/atom)"], rows),
            "Predictions: CGAT ensemble mean ± standard deviation (epistemic spread of the members). Computed: "
            "the calculation's entry measured against the latest hull of the same fidelity (never mixed).", ""]
    if energy_figure:
        out += [f"![E_hull of {cand.structure_id}]({energy_figure}){{ .report-figure }}", ""]
    out += ["## Hull of its chemical system", ""]
    drawn = False
    for f in FIDELITIES:
        fig = hull_figures.get(f)
        if fig:
            drawn = True
            out += [f"### {f.upper()}", "", f"![{f.upper()} hull of {cand.chemsys}]({fig}){{ .report-figure }}", ""]
    if not drawn:
        out += ["No hull plot: the hulls lack a reference for some element of this system, it has more than four "
                "elements, or no hull snapshot was recorded yet.", ""]
    out += ["pymatgen `PDPlotter` (matplotlib); unstable phases up to 200 meV/atom above the hull are shown.", ""]
    out += ["## Calculations", "",
            _table(["job uuid", "round", "fidelity", "state", "back-end", "label", "run type", "energy (eV/atom)",
                    f"cost ({data.budget.unit})", "CPU-hours", "wall time (s)", "finished", "notes"],
                   _job_rows(cand.jobs))]
    if cand.decisions:
        out += ["## Policy decisions", "",
                _table(["round", "fidelity", "reason", f"estimated cost ({data.budget.unit})", "bought", "score"],
                       [[d["round"], d["fidelity"].upper(), d.get("reason") or "-", _num(d.get("estimated_cost")),
                         "yes" if d.get("accepted") else "no",
                         _num(json.loads(d.get("numbers_json") or "{}").get("score"))] for d in cand.decisions])]
    out += ["[Back to the candidates](../candidates.md)", ""]
    return "\n".join(out)


# ---- methods and events --------------------------------------------------------------------------------------------
def _demote(markdown: str, levels: int = 2) -> str:
    return re.sub(r"^(#{1,6})(\s)", lambda m: "#" * min(6, len(m.group(1)) + levels) + m.group(2), markdown,
                  flags=re.MULTILINE)


def methods_page(data: ReportData, *, model_cards: Mapping[str, str], versions: Mapping[str, str],
                 provenance: Mapping[str, str]) -> str:
    """Model card(s), data, calculators, settings and versions."""
    out = ["# Methods", "", honesty_note(data.backends()), "## Model", ""]
    if data.models:
        out += [_table(["version", "round", "fidelity", "training points", "parent", "metrics", "folder"],
                       [[_code(m["version"]), m["round"], m["fidelity"], m["n_train"], m.get("parent") or "-",
                         ", ".join(f"{k} = {_num(v, '.4g')}" for k, v in (m.get("metrics") or {}).items()
                                   if not isinstance(v, (dict, list))) or "-",
                         _code(m.get("path"))] for m in data.models])]
    else:
        out += ["No fine-tuned model version was recorded (the campaign used its initial model only).", ""]
    initial = data.config.get("model")
    out += [f"Initial (PBE) ensemble: {_code(initial) if initial else 'shipped default'}.", ""]
    for name, card in model_cards.items():
        lines = strip_external_links(card).strip().splitlines()
        heading = f"### Model card of the {name}"
        if lines and lines[0].startswith("# "):  # the card's own title joins ours; its sections go below it
            heading += ": " + lines[0][2:].removeprefix("Model card:").strip()
            lines = lines[1:]
        out += [heading, "", _demote("\n".join(lines), 2), ""]
    out += ["## Calculators", ""]
    backends = data.backends()
    if backends:
        out += [_table(["back-end", "what it is", "labels on its results"],
                       [[b, _BACKEND_NOTES.get(b, b).replace("**", ""), "; ".join(labels)]
                        for b, labels in sorted(backends.items())])]
    else:
        out += ["No calculation has finished yet.", ""]
    out += ["## Data", "",
            _table(["", "value"], [
                ["candidate files", ", ".join(_code(c) for c in data.config.get("candidates") or []) or "-"],
                ["candidates", data.n_candidates],
                ["competing phases computed", len({j.structure_id for j in data.jobs if j.role == "competing"})],
                *[[f"{f.upper()} hull references", f"{len(refs)} entries ("
                   + ", ".join(sorted({_cell(r.get('label') or r.get('backend') or '?') for r in refs})) + ")"]
                  for f, refs in sorted(data.references.items())],
            ])]
    out += ["## Settings", "", "The campaign's configuration as stored in its ledger:", "",
            _table(["setting", "value"],
                   [[k, _code(json.dumps(v)) if isinstance(v, (dict, list)) else _code(v)]
                    for k, v in sorted(data.config.items())])]
    out += ["## Versions and provenance", "",
            _table(["", "value"], [*[[k, _code(v)] for k, v in provenance.items()],
                                   *[[f"{k} (report build)", _code(v)] for k, v in versions.items()]])]
    return "\n".join(out)


def events_page(data: ReportData, *, limit: int = 500) -> str:
    """The campaign's event log (newest last; the last ``limit`` events)."""
    events = data.events[-limit:]
    rows = [[_time(e.get("time")), e.get("round") if e.get("round") is not None else "-", e.get("kind") or "-",
             e.get("message") or ""] for e in events]
    skipped = len(data.events) - len(events)
    return "\n".join(["# Event log", "",
                      (f"The last {limit} of {len(data.events)} events." if skipped else f"{len(events)} events."), "",
                      _table(["time", "round", "kind", "message"], rows)])
