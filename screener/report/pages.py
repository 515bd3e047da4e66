"""Markdown pages of the campaign report: overview, candidate table, one page per candidate, methods, event log.

Pages are plain strings (MkDocs markdown with a little raw HTML for the sortable table and the structure viewer).
Links inside raw HTML point at the built ``.html`` files (the site is built with ``use_directory_urls: false`` so it
also works when opened straight from disk); markdown links point at ``.md`` files so ``mkdocs build --strict``
checks them.

Everything that comes from data (ids, formulas, messages, labels, titles, model cards, settings) is text, never
markup: :func:`md_text` turns every character that HTML or markdown would interpret (``<``, ``&``, quotes,
backticks, brackets, braces of attribute lists, ``|`` of tables, emphasis) into a numeric character reference, and
:func:`code` wraps such text in ``<code>`` instead of a backtick span a backtick could break out of. Table cells are
escaped unless they are :class:`Markup` made here. Units: formation energies in eV/atom, energies above the hull and
errors in meV/atom, costs in budget units and CPU-hours; every column header names its unit.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from screener.campaign.ledger import json_object
from screener.report.data import FIDELITIES, CandidateInfo, JobInfo, ReportData, backend_labels, finite_float

__all__ = [
    "overview_page",
    "candidates_page",
    "candidate_page",
    "methods_page",
    "events_page",
    "honesty_note",
    "strip_external_links",
    "safe_markdown",
    "md_text",
    "code",
    "front_matter",
    "Markup",
]

_BACKEND_NOTES = {
    "standin": "a **stand-in** calculator (an ML potential, CHGNet, run through atomate2's force-field makers), "
               "**not DFT**",
    "replay": "**replayed** energies read from a labelled data set, **not computed** in this campaign",
    "vasp": "VASP DFT calculations (atomate2 workflows)",
}
_STATUS_TEXT = {"stable": "stable", "above hull": "above hull", "not computed": "not computed", "failed": "failed",
                "pending": "pending", "no hull": "no hull", "not in a hull yet": "not in a hull yet"}


# ---- escaping ------------------------------------------------------------------------------------------------------
class Markup(str):
    """Markdown/HTML made by this module (trusted); any other str in a table cell is escaped as text."""


# characters HTML or (Python-)Markdown with the report's extensions would interpret anywhere in a line
_MD_SPECIAL = frozenset("&<>\"'`\\*_{}[]#|")


def md_text(value: Any) -> Markup:
    """Data as literal text inside markdown (also inside inline HTML and table cells): one line, no markup."""
    text = " ".join(str(value).split("\n")).replace("\r", " ")
    return Markup("".join(f"&#{ord(c)};" if c in _MD_SPECIAL else c for c in text))


def code(value: Any) -> Markup:
    """Data in a code font (``<code>`` with escaped text: a backtick in the data cannot end it)."""
    return Markup(f"<code>{md_text(value)}</code>")


def front_matter(title: str) -> str:
    """YAML front matter with the page title (HTML-escaped: MkDocs themes print ``page.title`` unescaped)."""
    return "---\ntitle: " + json.dumps(html.escape(" ".join(str(title).split()), quote=True)) + "\n---\n\n"


def _cell(value: Any) -> str:
    return value if isinstance(value, Markup) else md_text(value)


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _num(x: Any, fmt: str = ".3g", missing: str = "-") -> str:
    if x is None or isinstance(x, bool):
        return missing if x is None else str(x)
    try:
        value = float(x)
    except (TypeError, ValueError):
        return str(x)
    return f"{value:{fmt}}" if math.isfinite(value) else missing


def _mev(x_ev: Any, std_ev: Any = None) -> str:
    """eV/atom -> meV/atom text (with ± std), no unit (the column header names it)."""
    if x_ev is None:
        return "-"
    text = f"{1000 * float(x_ev):.0f}"
    if std_ev is not None:
        text += f"\u00a0±\u00a0{1000 * float(std_ev):.0f}"  # no-break spaces: "12 ± 3" stays on one line
    return text


def _ev(x_ev: Any, std_ev: Any = None) -> str:
    """eV/atom text with three decimals (with ± std)."""
    if x_ev is None:
        return "-"
    text = f"{float(x_ev):.3f}"
    if std_ev is not None:
        text += f"\u00a0±\u00a0{float(std_ev):.3f}"
    return text


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}\u00a0%"


def _time(ts: Any) -> str:
    try:
        return datetime.fromtimestamp(float(ts), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return "-"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


_MD_LINK = re.compile(r"\[([^\]]*)\]\((?:https?:)?//[^)\s]+\)")
_BARE_URL = re.compile(r"(?:https?:)?//([A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s)>\]`]*)")


def strip_external_links(markdown: str) -> str:
    """Turn links to other hosts into plain text (``[text](https://host/x)`` -> ``text``; bare URLs lose their
    scheme), so a report never links out of itself."""
    markdown = _MD_LINK.sub(r"\1", markdown)
    return _BARE_URL.sub(r"\1", markdown)


_ANY_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_LINK_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*\S.*$", re.MULTILINE)
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)


def safe_markdown(markdown: str) -> str:
    """Markdown from a file (a model card) with its structure (headings, lists, tables, emphasis, code) kept but
    nothing executable: raw HTML is shown as text, links and images become their text, attribute lists
    (``{ onclick=... }``) are shown as text. Code spans and fenced blocks are left alone (Markdown escapes them)."""
    out, fenced = [], False
    for line in _LINK_DEF.sub("", markdown).splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            out.append(line)
            continue
        if fenced:
            out.append(line)
            continue
        parts, last = [], 0
        for m in _CODE_SPAN.finditer(line):
            parts.append(_safe_prose(line[last:m.start()]))
            parts.append(m.group(0))
            last = m.end()
        parts.append(_safe_prose(line[last:]))
        out.append("".join(parts))
    return "\n".join(out)


def _safe_prose(text: str) -> str:
    text = _ANY_LINK.sub(r"\1", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace("{", "&#123;").replace("}", "&#125;")


def honesty_note(backends: Mapping[str, Sequence[str]], *, indent: str = "") -> str:
    """An admonition that says which energies are not DFT (empty when every result is VASP).

    ``backends`` maps a back-end name to the labels its results carry.
    """
    fake = {b: labels for b, labels in backends.items() if b != "vasp"}
    if not fake:
        return ""
    lines = [f'{indent}!!! warning "Not DFT: stand-in or replayed energies"', ""]
    for backend, labels in sorted(fake.items()):
        note = _BACKEND_NOTES.get(backend, f"back-end {code(backend)}")
        lines.append(f"{indent}    - {code(backend)}: {note}. Labels of its results: "
                     + "; ".join(f"<em>{md_text(label)}</em>" for label in labels) + ".")
    lines += [f"{indent}    ", f"{indent}    \"PBE\" and \"SCAN\" below name the fidelity each calculation stands "
              "in for; treat the energies, hulls and discoveries as a rehearsal of the workflow, not as DFT "
              "results.", ""]
    return "\n".join(lines) + "\n"


def _candidate_link(data: ReportData, sid: str, prefix: str = "candidates/") -> Markup:
    """Link to a candidate page (or the id in code when it has no page); the slug is file-name safe."""
    cand = data.candidate(sid)
    if cand is not None and data.has_page(sid):
        return Markup(f'<a class="sid" href="{prefix}{_esc(cand.slug)}.html">{code(sid)}</a>')
    return code(sid)


def _competing_text(cand: CandidateInfo, fidelity: str) -> Markup:
    comp = cand.competing.get(fidelity)
    if comp is None:
        return Markup("-")
    if comp.elements_only:
        return Markup('<span class="elements-only" title="the hull holds only the elements in this system">'
                      "elements only</span>")
    return Markup(f"{comp.known} + {comp.computed}")


def _status(cand: CandidateInfo, fidelity: str) -> Markup:
    status = cand.status(fidelity)
    css = {"stable": "stable-yes", "not computed": "not-computed", "failed": "failed"}.get(status, "")
    text = _STATUS_TEXT.get(status, status)
    return Markup(f'<span class="{css}">{text}</span>' if css else text)


def _headline_table(data: ReportData) -> str:
    """The headline figures as an HTML table whose cells carry ``data-key`` (the tests read them back)."""
    h = data.headline
    unit = data.budget.unit
    unit_cpu_h = data.config.get("unit_cpu_hours")
    calc = "; ".join(f"{f.upper()}: " + ", ".join(f"{n} {s}" for s, n in sorted(c.items()))
                     for f, c in sorted(h.calculations.items())) or "none"
    rows: list[tuple[str, str, str]] = [
        ("n_found", f"stable crystals found (SCAN E_hull <= {1000 * data.stable_threshold_ev_per_atom:g} meV/atom "
         "on the final SCAN hull)", str(h.n_found)
         + (f" ({n_re} of them rediscoveries of known phases)" if (n_re := sum(
             1 for c in data.candidates if c.twin_of and c.structure_id in h.found_ids)) else "")),
        ("spent_budget_units", f"budget spent ({unit})",
         f"{h.spent_budget_units:.4g} of {h.budget_total:.4g} ({data.budget.reserved:.4g} reserved, "
         f"{data.budget.remaining:.4g} left)"),
        ("spent_cpu_hours", "compute spent (CPU-hours)", f"{h.spent_cpu_hours:.4g}"),
        ("unit_cpu_hours", f"one budget unit ({unit}) in CPU-hours", _num(unit_cpu_h, ".4g")),
        ("calculations", "calculations (all roles)", calc),
        ("n_scan_computed", "candidates computed at SCAN", str(h.n_scan_computed)),
        ("hit_rate", "hit rate (found / candidates computed at SCAN)", _pct(h.hit_rate)),
        ("cpu_hours_per_find", "CPU-hours per confirmed find", _num(h.cpu_hours_per_find, ".4g")),
        ("prevalence", "stable share of the candidate pool", _pct(h.prevalence) if h.prevalence is not None
         else h.prevalence_source),
        ("daf", "discovery acceleration factor (hit rate / pool share)", _num(h.daf, ".3g")),
    ]
    for f in FIDELITIES:
        rows.append((f"mae_{f}", f"model MAE of {f.upper()} formation energy, predicted before purchase (meV/atom)",
                     "-" if h.mae_e_form_ev_per_atom[f] is None else
                     f"{1000 * h.mae_e_form_ev_per_atom[f]:.0f} (over {h.n_mae[f]} candidates)"))
    rows += [("n_candidates", "candidates screened / selected", f"{data.n_candidates} / {len(data.candidates)}"),
             ("rounds", "rounds", str(len(data.rounds)))]
    body = "\n".join(f'<tr><th scope="row">{_esc(label)}</th><td data-key="{key}">{_esc(value)}</td></tr>'
                     for key, label, value in rows)
    return f'<table class="headline" id="headline">\n<tbody>\n{body}\n</tbody>\n</table>\n'


def _rounds_table(data: ReportData) -> str:
    h, unit = data.headline, data.budget.unit
    prevalence = h.prevalence
    rows = []
    for r in h.rounds:
        daf = r.hit_rate / prevalence if r.hit_rate is not None and prevalence else None
        rows.append([r.round, r.n_computed["pbe"], r.n_computed["scan"], r.n_found, _pct(r.hit_rate),
                     _num(daf, ".3g"), f"{r.cost_budget_units:.4g}", f"{r.cost_cpu_hours:.4g}", r.cum_found,
                     f"{r.cum_budget_units:.4g}", f"{r.cum_cpu_hours:.4g}"])
    return _table(["round", "computed PBE", "computed SCAN", "found", "hit rate", "DAF", f"cost ({unit})",
                   "cost (CPU-h)", "found, total", f"cost, total ({unit})", "cost, total (CPU-h)"], rows)


# ---- overview ------------------------------------------------------------------------------------------------------
def overview_page(data: ReportData, figures: Mapping[str, str], *, title: str) -> str:
    """The overview: headline figures, per-round hit rates, figures, and every policy decision with its numbers."""
    h = data.headline
    info = data.rounds[-1].info if data.finished else None  # the empty round says why the policy stopped
    stop_reason = info.get("stop_reason") if isinstance(info, dict) else None
    state = f"finished ({stop_reason if isinstance(stop_reason, str) else 'nothing more fits the budget'})" \
        if data.finished else (
        f"in progress (last round {data.rounds[-1].round}: {data.rounds[-1].state})" if data.rounds else "not started")
    out = [front_matter(title) + f"# {md_text(title)}", "", honesty_note(data.backends())]
    out += ["## Summary", "",
            f"Campaign folder {code(data.campaign_dir.resolve())}, {md_text(state)}. Every figure below is a sum or "
            "ratio of rows of the campaign's ledger (see the report documentation for each formula).", "",
            _headline_table(data), ""]
    elements_only = sorted({f"{md_text(c.chemsys)} ({f.upper()})" for c in data.candidates for f in FIDELITIES
                            if c.competing.get(f) is not None and c.competing[f].elements_only})
    if elements_only:
        out += ['!!! warning "Hulls with the elements only"', "",
                "    These chemical systems hold no phase but the elements (and the candidate) in that fidelity's "
                "final hull, so \"stable\" there only means \"below the elements\": " + ", ".join(elements_only) + ".",
                ""]
    if h.found_ids:
        out += ["**On the final SCAN hull:** " + ", ".join(_candidate_link(data, s) for s in h.found_ids), ""]
    out += ["See the [sortable table of selected candidates](candidates.md) and the [methods](methods.md).", ""]
    out += ["## Hit rate per round", "", _rounds_table(data),
            "Computed: candidates (not competing phases) with a successful calculation of that fidelity bought in "
            "the round. Found: those of the round's SCAN-computed candidates on the final SCAN hull; hit rate = "
            "found / computed SCAN. DAF: the round's hit rate divided by the pool's stable share ("
            + (md_text(h.prevalence_source.removeprefix("unknown (").removesuffix(")")) + ", so no DAF"
               if h.prevalence is None else _pct(h.prevalence)) + "). Costs: charges "
            "of every calculation of the round (competing phases included); totals are cumulative.", ""]
    captions = {
        "spend": ("Budget spent by fidelity", "Charged cost of finished calculations (actual cost where the "
                  f"back-end reported one, else the estimate), in {md_text(data.budget.unit)}."),
        "discoveries": ("Stable finds vs cost", "Cumulative candidates confirmed stable (on the final SCAN hull) "
                        "against cumulative CPU-hours (bottom axis) and budget units (top axis), after each round. "
                        "The dashed line, where the pool's stable share is known, is what picking candidates at "
                        "random would have found with the same number of SCAN calculations."),
        "learning_curve": ("Model error vs training-set size", "Prospective MAE of each round's predictions of "
                           "formation energy against that round's new results (before the model trained on them), ±1 "
                           "standard error where recorded"
                           + (", with the scaling law the policy fitted in its latest round"
                              if any(r.policy_numbers.get("scaling_law") for r in data.rounds) else "")
                           + " (on a log axis a point at N_s = 0 is drawn at 1)."),
        "parity_e_form": ("Predicted vs computed formation energy", "The quantity the model predicts: the "
                          "prediction made in the round the calculation was bought (±1 ensemble standard deviation) "
                          "against the computed formation energy, per fidelity, in eV/atom. MAE as in the summary."),
        "parity_e_hull": ("Predicted vs computed E_hull on the final hull", "Both the prediction made before "
                          "purchase and the result measured against the same final hull snapshot of each fidelity, "
                          "in meV/atom; the difference of the two is exactly the formation-energy error."),
    }
    for key, (heading, caption) in captions.items():
        if key in figures:
            out += [f"## {heading}", "", f"![{heading}]({figures[key]}){{ .report-figure }}", "", caption, ""]
    out += _decisions_section(data, figures)
    return "\n".join(out)


def _has_scaling_law(n: Mapping[str, Any]) -> bool:
    """Whether a plan recorded the scaling-law allocation (``scaling-law`` and similar policies)."""
    return bool(n.get("allocation") or n.get("scaling_law")) or n.get("a") is not None


def _has_expected_value(n: Mapping[str, Any]) -> bool:
    """Whether a plan recorded the expected-value numbers (lambda, learning values, PBE -> SCAN relation)."""
    return any(str(k).startswith(("ev_", "pbe_scan_")) for k in n)


def _decisions_section(data: ReportData, figures: Mapping[str, str] | None = None) -> list[str]:
    out = ["## Policy decisions", ""]
    if not data.rounds:
        return out + ["No round has been planned yet.", ""]
    with_alloc = any((r.policy_numbers.get("allocation") or {}).get("decision") for r in data.rounds)
    plans, law_rows, ev_rows, rel_rows, fix_rows, competitor_rows, blind_rows = [], [], [], [], [], [], []
    gp_rows: list[list[Any]] = []
    signed_relation = False  # some round's relation read PBE-stable results by their depth below the hull
    for r in data.rounds:
        n = r.policy_numbers
        alloc = n.get("allocation") or {}
        plans.append([r.round, r.state, n.get("policy", "-"), n.get("n_scan_planned", "-"),
                      n.get("n_pbe_planned", "-")] + ([alloc.get("decision", "-")] if with_alloc else [])
                     + [f"{r.cost:.4g}"])
        if _has_scaling_law(n):
            law = n.get("scaling_law") or {}
            a, b = n.get("a", law.get("a")), n.get("b", law.get("b"))
            gain_s, gain_p = finite_float(alloc.get("gain_per_cpu_hour_scan")), finite_float(alloc.get("gain_per_cpu_hour_pbe"))
            law_rows.append([
                r.round, _mev(finite_float(alloc.get("mae_now"))),
                _num(None if gain_s is None else 1000 * gain_s, ".3g"),
                _num(None if gain_p is None else 1000 * gain_p, ".3g"),
                f"{_num(a)}\u00a0±\u00a0{_num(n.get('a_std'))}" if a is not None else "-",
                f"{_num(b)}\u00a0±\u00a0{_num(n.get('b_std'))}" if b is not None else "-",
                n.get("fit_source", law.get("source", "-")),
            ])
        if _has_expected_value(n):
            n_p = finite_float(n.get("n_pbe_pretraining"))
            n_p_campaign = finite_float(n.get("n_pbe_campaign"))
            ev_rows.append([
                r.round, _num(n.get("ev_lambda_per_cpu_hour"), ".3g"),
                _num(n.get("ev_stop_rate_per_cpu_hour"), ".3g"),
                "-" if n.get("ev_n_found") is None else
                f"{_num(n.get('ev_n_found'), '.0f')} / {_num(n.get('ev_spent_cpu_hours'), '.4g')}",
                _num(n.get("ev_follow_ups_reserved_cpu_hours"), ".4g"),
                _num(n.get("ev_learning_value_scan"), ".3g"), _num(n.get("ev_learning_value_pbe"), ".3g"),
                {True: "yes", False: "no"}.get(n.get("ev_learning_value_added"), "-"),
                _mev(finite_float(n.get("ev_mae_now_ev_per_atom"))), _num(n.get("ev_picks_left"), "g"),
                "-" if n_p is None and n_p_campaign is None else
                f"{_num(n_p, '.0f', '0')} + {_num(n_p_campaign, '.0f', '0')}",
                _num(n.get("n_scan_campaign"), ".0f"),
            ])
            if "outcome_calibration_a" in n:
                fix_rows.append([
                    r.round, _num(n.get("outcome_calibration_n_purchases"), ".0f"),
                    _num(n.get("outcome_calibration_n_stable"), ".0f"),
                    _num(n.get("outcome_calibration_mean_p_at_purchase"), ".3f"),
                    _num(n.get("outcome_calibration_mean_p_calibrated"), ".3f"),
                    *(f"{_num(n.get(f'{key}a'), '.3f')} / {_num(n.get(f'{key}b'), '.3f')}"
                      + (f" ({_num(n.get(f'{key}n_purchases'), '.0f')})" if key != "outcome_calibration_" else "")
                      for key in ("outcome_calibration_", "outcome_calibration_pbe_", "outcome_calibration_scan_")),
                    _cost_class_offsets(n),
                ])
            if "ev_cost_blind_allowance_cpu_hours" in n:
                bought = [d for d in r.decisions if d.get("accepted")
                          and isinstance(d.get("numbers"), dict) and d["numbers"].get("route") == "cost_blind"]
                blind_rows.append([
                    r.round, _num(n.get("ev_cost_blind_share"), ".2f"), _num(n.get("ev_spent_before_cpu_hours"), ".4g"),
                    _num(n.get("round_budget_cpu_hours"), ".4g"),
                    _num(n.get("ev_cost_blind_spent_before_cpu_hours"), ".4g"),
                    _num(n.get("ev_cost_blind_allowance_cpu_hours"), ".4g"),
                    _num(n.get("ev_cost_blind_planned_cpu_hours"), ".4g"),
                    f"{sum(1 for d in bought if (d['numbers'].get('kind') or 'candidate') == 'candidate')} "
                    f"({len(bought)})",
                ])
            if "composition_gp_n_train" in n or "composition_gp_skipped" in n:
                noise = finite_float(n.get("composition_gp_noise_variance"))
                gp_rows.append([
                    r.round, _num(n.get("composition_gp_n_train"), ".0f"),
                    _num(None if noise is None or noise < 0 else noise ** 0.5, ".3f"),
                    _num(n.get("composition_gp_length_scale"), ".3g"),
                    _num(n.get("composition_pool_weight"), ".2f"), _num(n.get("composition_pool_n"), ".0f"),
                    _num(n.get("composition_pool_loglik_gain"), ".3g"), n.get("composition_gp_skipped") or "-",
                ])
            if "competitor_overall_survival" in n:
                competitor_rows.append([r.round, _num(n.get("competitor_plausible"), ".0f"),
                                        _num(n.get("competitor_from_pbe_results"), ".0f"),
                                        _num(n.get("competitor_overall_survival"), ".3f")])
            signed_relation = signed_relation or bool(n.get("pbe_scan_signed_depth"))
            rel_rows.append([
                r.round, _num(n.get("pbe_scan_p_stable_if_pbe_stable"), ".3f"),
                _num(n.get("pbe_scan_p_stable_just_above_hull"), ".3f"), _num(n.get("pbe_scan_c0"), ".3g"),
                _num(n.get("pbe_scan_c1_per_ev_per_atom"), ".3g"),
                _num(n.get("pbe_scan_c_below_per_ev_per_atom"), ".3g"),
                _num(n.get("pbe_scan_c_sites_per_ln_sites"), "+.3g"), _num(n.get("pbe_scan_n_pairs"), ".0f"),
                n.get("pbe_scan_relation_source") or "-",
            ])
    # several narrow tables rather than one of 13 columns that does not fit the page
    out += [_table(["round", "state", "policy", "SCAN planned", "PBE planned"] + (["allocation"] if with_alloc else [])
                   + [f"cost ({data.budget.unit})"], plans), ""]
    if law_rows:
        out += ["### Scaling-law allocation", "",
                _table(["round", "SCAN model MAE now (meV/atom)", "MAE drop per CPU-h on SCAN (meV/atom per CPU-h)",
                        "MAE drop per CPU-h on PBE (meV/atom per CPU-h)", "a", "b", "fit"], law_rows), "",
                "MAE now: the SCAN model's formation-energy error the policy's scaling law gave at the round's N_s, "
                "N_p. *a*, *b*: slopes of log MAE against log N_s and log N_p in the scaling law; the drops are the "
                "predicted gain in the SCAN model's MAE per CPU-hour spent on each fidelity (the allocation buys the "
                "larger one).", ""]
    if ev_rows:
        out += ["### Expected value", "",
                _table(["round", "lambda (finds per CPU-h)", "stop rate (finds per CPU-h)",
                        "found / spent (CPU-h) before the round", "follow-ups kept back (CPU-h)",
                        "learning value SCAN (finds per calc.)",
                        "learning value PBE (finds per calc.)", "learning value added to the rates",
                        "SCAN model MAE now (meV/atom)", "SCAN picks left",
                        "N_p (pre-training + campaign)", "N_s (campaign)"], ev_rows), "",
                "lambda: finds per CPU-hour of the last SCAN-now pick the remaining budget reaches; a PBE-screened "
                "candidate goes on to SCAN when its P(SCAN-stable) per CPU-hour of SCAN reaches it. Stop rate: the "
                "least finds per CPU-hour an option must promise to be bought, a fraction (stop_fraction_of_yield) "
                "of the campaign's finds per CPU-hour spent so far (0 before it has stop_after_finds finds); lambda "
                "is never below it, and a round where no option reaches it ends the campaign. Follow-ups kept "
                "back: the expected SCAN follow-ups of the round's PBE screens (at least the dearest one's whole "
                "cost), which the rest of the round could not spend. Learning value: "
                "expected extra finds among the SCAN picks left from one more calculation's improvement of the model "
                "(from the scaling law at N_p, N_s); recorded every round, added to each option's finds per CPU-hour "
                "only where the policy says so (learning_value, off by default). MAE now: that law's SCAN "
                "formation-energy error.", "",
                _table(["round", "P(SCAN-stable | on the PBE hull)", "P(SCAN-stable | just above the PBE hull)",
                        "c0", "c1 (per eV/atom)", "c below (per eV/atom)", "c sites (per e-fold)", "pairs",
                        "fitted on"], rel_rows), "",
                "PBE -> SCAN relation, fitted on computed PBE/SCAN pairs: P(SCAN-stable) of a candidate with "
                "computed PBE E_hull x is the share of PBE-stable structures that are SCAN-stable where x = 0 (on the "
                "PBE hull, however far below the old hull it fell; c below 0), and the probit Phi(c0 - c1 x) above "
                "the hull."
                + (" Rounds fitted on the signed PBE E_hull (see 'fitted on') read a PBE-stable result's x as its "
                   "depth below the hull of the other phases (negative), and P(SCAN-stable) there is "
                   "Phi(c0 - c_below x): the 'on the PBE hull' column is its value at the hull's edge (x = 0), "
                   "rising with the depth." if signed_relation else "")
                + " Where costs differ the relation may depend on cell size: every intercept moves by c_sites "
                "ln(n_sites / median candidate n_sites), so the two columns of P are those of a median cell "
                "(each decision's numbers hold its own shift, pbe_scan_size_shift).",
                ""]
    if fix_rows:
        out += [_table(["round", "purchases so far", "came out stable", "mean P at purchase", "mean P recalibrated",
                        "a / b both", "a / b PBE (purchases)", "a / b SCAN (purchases)",
                        "cost-class offsets, cheapest first (purchases)"], fix_rows), "",
                "Outcome calibration: the model's P(stable) is refitted each round on the campaign's purchases, "
                "P_cal = Phi(a + d_k + b Phi^-1(P)) (a = 0, b = 1, d = 0: no change). *Both*: the fit on both "
                "fidelities' purchases; each fidelity's map (the one its predictions are recalibrated with) is "
                "shrunk towards it. d_k: the offset of the candidate's cost class (bins of equal width in log cost; "
                "only where costs differ, shared by both fidelities).", ""]
    if blind_rows:
        out += [_table(["round", "cost-blind share", "spent before (CPU-h)", "round budget (CPU-h)",
                        "spent before on the share (CPU-h)", "allowance (CPU-h)", "planned on the share (CPU-h)",
                        "bought on the share: candidates (with phases)"], blind_rows), "",
                "Cost-blind share (only where costs differ): SCAN runs are first planned in order of the model's "
                "own P(SCAN-stable), cost ignored, until their spend reaches the share of everything spent with "
                "this round's budget counted as spent. Allowance: share x (spent before + round budget) - spent "
                "before on the share, at most the round budget; the last rounds' budget is what the campaign has "
                "left, so the share ends as a share of the whole budget. The competing phases bought for the picks "
                "count in it. Bought: the round's accepted decisions whose route is cost-blind.", ""]
    if gp_rows:
        out += [_table(["round", "GP training rows", "GP noise (eV/atom)", "GP length scale",
                        "pool weight a", "purchases judged", "log-likelihood gain", "skipped"], gp_rows), "",
                "Composition model: a Gaussian process on composition features (CAMD GP-LCB's model), trained each "
                "round on every computed E_hull (the known phases' and the campaign's, one row per composition and "
                "fidelity). Its P(stable) is pooled with the ensemble's in probit space, z = (1 - a) z_ensemble + "
                "a z_GP, with a chosen as the value that best predicts the campaign's purchases from the two P each "
                "was bought on (the ensemble's read through the outcome calibration), once there are "
                "composition_pool_min_purchases (20) of them (before: a = 0); log-likelihood gain: over a = "
                "0, the ensemble alone. Without a formula for every candidate or two computed structures the "
                "ensemble stands alone (skipped).", ""]
    if competitor_rows:
        out += [_table(["round", "candidates in the competitor draws", "open candidates drawn from their PBE result",
                        "share surviving the competitors"], competitor_rows), "",
                "Competitor survival: of the draws in which a candidate is below today's SCAN hull, the share in "
                "which it stays on the hull once the pool's other plausible candidates are added (each decision's "
                "own value is in its table). A candidate already screened at PBE is drawn as likely below the hull "
                "as the PBE -> SCAN relation says from its PBE result, not from the SCAN model's prediction.", ""]
    out += _calibration_section(data, figures or {})
    ev_keys = ("p_scan_stable", "rate_scan_per_cpu_hour", "learning_value_scan")
    for r in data.rounds:
        n = r.policy_numbers
        reason = (n.get("allocation") or {}).get("reason")
        accepted = sum(1 for d in r.decisions if d.get("accepted"))
        out += [f'??? note "Round {int(r.round)}: {len(r.decisions)} planned, {accepted} bought"', ""]
        if reason:
            out += [f"    Allocation: {md_text(reason)}", ""]
        scalars = {k: v for k, v in n.items() if not isinstance(v, (dict, list))}
        if scalars:
            out += ["    " + "; ".join(f"{md_text(k)} = {md_text(_num(v, '.4g'))}" for k, v in sorted(scalars.items())),
                    ""]
        if r.decisions:
            table = _table(["#", "structure", "fidelity", "reason", f"estimated cost ({data.budget.unit})", "bought",
                            "score"],
                           [[d["position"], _candidate_link(data, d["structure_id"]), str(d["fidelity"]).upper(),
                             d.get("reason") or "-", _num(d.get("estimated_cost"), ".3g"),
                             "yes" if d.get("accepted") else "no (budget)",
                             _num((d.get("numbers") or {}).get("score"))] for d in r.decisions])
            out += ["    " + line for line in table.splitlines()] + [""]
        ev = [d for d in r.decisions if isinstance(d.get("numbers"), dict) and any(k in d["numbers"] for k in ev_keys)]
        if ev:
            table = _table(["#", "structure", "fidelity", "P(SCAN-stable)", "from", "model P before corrections",
                            "competitor survival", "finds/CPU-h SCAN now",
                            "finds/CPU-h PBE route", "P(SCAN after PBE)", "composition GP SCAN E_hull (eV/atom)",
                            "learning value SCAN / PBE",
                            "cost SCAN / PBE (CPU-h)", "route"],
                           [_ev_decision_row(data, d) for d in ev])
            out += ["    Expected-value numbers of each decision (ledger `decisions.numbers_json`):", ""]
            out += ["    " + line for line in table.splitlines()] + [""]
    return out


def _cost_class_offsets(n: Mapping[str, Any]) -> str:
    """The outcome calibration's cost-class offsets of a round's numbers, "d (purchases)" cheapest first."""
    k = finite_float(n.get("outcome_calibration_cost_classes"))
    if not k:
        return "-"

    def offset(i: int) -> Any:  # rounded first, so that a tiny negative reads +0.00, not -0.00
        d = finite_float(n.get(f"outcome_calibration_cost_class_{i}_offset"))
        return None if d is None else round(d, 2) + 0.0

    return " / ".join(f"{_num(offset(i), '+.2f')} "
                      f"({_num(n.get(f'outcome_calibration_cost_class_{i}_purchases'), '.0f')})"
                      for i in range(min(int(k), 16)))


def _ev_decision_row(data: ReportData, d: Mapping[str, Any]) -> list[Any]:
    n = d.get("numbers") or {}
    return [d["position"], _candidate_link(data, d["structure_id"]), str(d["fidelity"]).upper(),
            _num(n.get("p_scan_stable"), ".3f"), n.get("p_scan_source") or "-",
            _num(n.get("p_scan_model_raw"), ".3f"), _num(n.get("competitor_survival"), ".3f", missing="off"),
            _num(n.get("rate_scan_per_cpu_hour"), ".3g"), _num(n.get("rate_pbe_per_cpu_hour"), ".3g"),
            _num(n.get("p_go_scan_after_pbe"), ".3f"),
            "-" if n.get("composition_gp_scan_mean_ev_per_atom") is None else
            f"{_num(n.get('composition_gp_scan_mean_ev_per_atom'), '.3f')}\u00a0±\u00a0"
            f"{_num(n.get('composition_gp_scan_std_ev_per_atom'), '.3f')}",
            f"{_num(n.get('learning_value_scan'), '.3g')} / {_num(n.get('learning_value_pbe'), '.3g')}",
            f"{_num(n.get('cost_scan_cpu_hours'), '.3g')} / {_num(n.get('cost_pbe_cpu_hours'), '.3g')}",
            "cost-blind share" if n.get("route") == "cost_blind" else "per unit cost"]


def _calibration_section(data: ReportData, figures: Mapping[str, str]) -> list[str]:
    """Calibration of the predicted spread: the scale each round ranked with, the round's coverage, the plot."""
    rows = []
    for r in data.rounds:
        cal = r.policy_numbers.get("calibration")
        cal = cal if isinstance(cal, dict) else {}  # a hand-edited ledger: show "-", never fail
        info = r.info if isinstance(r.info, dict) else {}
        for fidelity in FIDELITIES:
            shares = [info.get(f"within_{k}_sigma_{tag}_{fidelity}") for k in (1, 2) for tag in ("raw", "calibrated")]
            scale = cal.get(f"{fidelity}_scale")
            if scale is None and all(x is None for x in shares):
                continue
            n_fit = cal.get(f"{fidelity}_n_errors")
            exponent = finite_float(cal.get(f"{fidelity}_exponent"))
            mae = finite_float(info.get(f"mae_{fidelity}_ev_per_atom"))
            se = finite_float(info.get(f"mae_se_{fidelity}_ev_per_atom"))
            used = "-" if scale is None else _num(scale, ".3g")
            if scale is not None and exponent is not None and exponent != 1.0:
                used += f", exponent {exponent:.2f}"
            rows.append([r.round, fidelity.upper(),
                         "-" if scale is None else f"{used} (n = {_num(n_fit, '.0f', '0')})",
                         _num(info.get(f"n_{fidelity}_measured"), ".0f")] + [_pct(finite_float(x)) for x in shares]
                        + [_mev(mae, se)])
    if not rows and not data.reliability:
        return []
    out = ["### Calibration", ""]
    if rows:
        out += [_table(["round", "fidelity", "sigma scale (and exponent) used (fitted on)", "errors measured",
                        "within 1 sigma, raw", "within 1 sigma, calibrated", "within 2 sigma, raw",
                        "within 2 sigma, calibrated", "MAE (meV/atom)"], rows), "",
                "Each round's prospective errors (its predictions of formation energy, made before purchase, minus "
                "the results it bought) against the raw ensemble sigma and the calibrated sigma the round ranked "
                "with: scale x 0.1 x (raw / 0.1)^exponent eV/atom (raw times the scale where no exponent is shown), "
                "fitted on the errors of earlier rounds, the scale shrunk toward the model card's (calibration.json) "
                "and the exponent toward the model card's where it records one, else toward the campaign's prior "
                "(the ensemble sigma understates the error of confident predictions most). Round 1 ranks with the "
                "model card's fit alone. A calibrated Gaussian puts 68.3 % within 1 sigma and 95.4 % within 2 "
                "sigma.", ""]
    if data.reliability and "reliability" in figures:
        out += [f"![Reliability of the predicted spread]({figures['reliability']})"
                "{ .report-figure }", "",
                "Reliability: the observed share of prospective errors within k sigma (k = 0.25, 0.5, ..., 3) against "
                "the share a Gaussian puts there, raw and calibrated sigma, pooled over all rounds (errors against "
                "the final hull's formation energies). Points below the diagonal: the spread is too narrow "
                "(overconfident); above: too wide.", ""]
    return out


# ---- candidate table -----------------------------------------------------------------------------------------------
def candidates_page(data: ReportData) -> str:
    """A sortable HTML table of every selected candidate (click a header to sort)."""
    unit = data.budget.unit
    head = ["structure", "formula", "chemical system", "sites",
            "SCAN E_hull predicted (meV/atom)", "SCAN E_hull computed (meV/atom)", "SCAN",
            "PBE E_hull predicted (meV/atom)", "PBE E_hull computed (meV/atom)", "PBE",
            "competing phases, SCAN hull (known + computed)", "competing phases, PBE hull (known + computed)",
            f"cost ({unit})"]
    rows = []
    for c in data.candidates:
        cost = sum(j.charge for j in c.jobs if j.finished)
        sid_cell = (f'<a class="sid" href="candidates/{_esc(c.slug)}.html"><code>{_esc(c.structure_id)}</code></a>'
                    if data.has_page(c.structure_id) else f"<code>{_esc(c.structure_id)}</code>")
        cells: list[tuple[str, str]] = [
            (c.structure_id, sid_cell),
            (c.formula, _esc(c.formula)), (c.chemsys, _esc(c.chemsys)), (str(c.n_sites), str(c.n_sites)),
        ]
        for f in ("scan", "pbe"):
            pred = c.predicted_e_hull_as_ranked(f)  # the mean and sigma the policy ranked with
            std = c.as_ranked(f)[1]
            comp = c.computed_e_hull_ev_per_atom.get(f)
            status = c.status(f)
            cells += [("" if pred is None else f"{1000 * pred:.3f}", _esc(_mev(pred, std))),
                      ("" if comp is None else f"{1000 * comp:.3f}", _esc(_mev(comp))),
                      (status, _status(c, f))]
        for f in ("scan", "pbe"):
            comp_ph = c.competing.get(f)
            key = "" if comp_ph is None else str(comp_ph.known + comp_ph.computed)
            cells.append((key, _competing_text(c, f)))
        cells += [(f"{cost:.6g}", f"{cost:.3g}")]
        rows.append("<tr>" + "".join(f'<td data-sort="{_esc(k)}">{v}</td>' for k, v in cells) + "</tr>")
    table = (
        '<div class="table-scroll">\n<table class="sortable" id="candidates-table">\n<thead><tr>'
        + "".join(f"<th>{_esc(h)}</th>" for h in head)
        + "</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>\n</div>\n"
    )
    n_pages = sum(1 for c in data.candidates if data.has_page(c.structure_id))
    pages_note = ("" if n_pages == len(data.candidates) else
                  f" The first {n_pages} (found first, then by computed SCAN and PBE E_hull) have a page; "
                  "`screener report --top N` or `--all-candidates` writes more.")
    return "\n".join([
        front_matter("Selected candidates") + "# Selected candidates", "",
        f"{len(data.candidates)} of {data.n_candidates} candidates had at least one calculation bought.{pages_note} "
        "Click a column header to sort (again to reverse). Predicted E_hull, as ranked: the formation energy the "
        "policy ranked with in the round the calculation was bought (the ensemble mean, shifted by the learned "
        "PBE->SCAN bias while SCAN predictions came from the PBE model; ± the calibrated sigma), measured against "
        "the final hull of that fidelity; computed E_hull: the result on the same final hull. \"not computed\": no "
        "calculation of that "
        "fidelity was bought. Competing phases: phases besides the elements and the candidate in its chemical "
        "system (subsystems included) that the final hull holds, known from the start + computed in the campaign.",
        "",
        honesty_note(data.backends()),
        table,
    ])


# ---- one candidate -------------------------------------------------------------------------------------------------
def _job_rows(jobs: Sequence[JobInfo]) -> list[list[Any]]:
    rows = []
    for j in jobs:
        cost = f"{j.charge:.3g}" if j.finished else f"{j.estimated_cost:.3g} (reserved)"
        rows.append([
            code(j.uuid), j.round, j.fidelity.upper(), j.state, j.backend or "-", j.label or "-", j.run_type or "-",
            _num(j.energy_per_atom_ev, ".4f"),
            cost, _num(j.actual_cpu_hours if j.actual_cpu_hours is not None else j.estimated_cpu_hours, ".3g"),
            _num(j.wall_time_s, ".3g"), _time(j.finished_at), j.failure_reason or "-",
        ])
    return rows


def candidate_page(cand: CandidateInfo, data: ReportData, *, viewer: str, files: Mapping[str, str],
                   structure_note: str, energy_figure: str | None, hull_figures: Mapping[str, str | None]) -> str:
    """One candidate: formula, viewer + downloads, predicted vs computed energies, hulls, jobs, decisions."""
    backends = backend_labels(cand.jobs)
    verdict = ("**On the final SCAN hull.**" if cand.stable.get("scan") else
               "**On the final PBE hull** (not computed at SCAN)." if cand.stable.get("pbe")
               and cand.status("scan") == "not computed" else
               "**On the final PBE hull.**" if cand.stable.get("pbe") else "")
    if verdict and data.stable_threshold_ev_per_atom:
        verdict += f" (stable: E_hull <= {1000 * data.stable_threshold_ev_per_atom:g} meV/atom)"
    out = [front_matter(f"{cand.formula}: {cand.structure_id}")
           + f"# {md_text(cand.formula)}: {code(cand.structure_id)}",
           "",
           f"Chemical system **{md_text(cand.chemsys)}**, {int(cand.n_sites)} sites in the input cell. SCAN: "
           f"{_status(cand, 'scan')}; PBE: {_status(cand, 'pbe')}. {verdict}", "",
           honesty_note(backends)]
    if cand.twin_of:  # the candidate IS a known phase: a rediscovery, not a new crystal
        out += ['!!! note "Rediscovery of a known phase"', "",
                f"    This candidate is the known phase {', '.join(code(k) for k in cand.twin_of)} (same id or the "
                "same structure by pymatgen's StructureMatcher). That phase stays on the hulls as a competitor of "
                "the other candidates; this candidate is measured against the hulls without it.", ""]
    flagged = [f for f in FIDELITIES if cand.competing.get(f) is not None and cand.competing[f].elements_only]
    if flagged:
        out += ['!!! warning "Hull with the elements only"', "",
                f"    The final {' and '.join(f.upper() for f in flagged)} hull of {md_text(cand.chemsys)} holds no "
                "phase but the elements (and this candidate): its E_hull is measured against the elements alone.", ""]
    out += ["## Structure", "", viewer,
            "Drag to rotate, scroll to zoom, double-click to reset. " + md_text(structure_note) + ". Download: "
            + ", ".join(f"[{md_text(name)}]({path})" for name, path in files.items()) + ".", "",
            "## Prediction before purchase and result", ""]
    rows = []
    for f in FIDELITIES:
        sel = cand.predicted_at_selection.get(f) or {}
        raw = finite_float(sel.get("e_form_mean_ev_per_atom"))
        raw_std = finite_float(sel.get("e_form_std_ev_per_atom"))
        pe, ps = cand.as_ranked(f)  # what the policy ranked with
        ce = cand.computed_e_form_ev_per_atom.get(f)
        ph, ch = cand.predicted_e_hull_as_ranked(f), cand.computed_e_hull_ev_per_atom.get(f)
        rows.append([
            f.upper(), sel.get("round", "-") if sel else "not bought",
            _ev(pe, ps), _ev(raw, raw_std), _ev(ce), _mev(None if pe is None or ce is None else pe - ce),
            _mev(ph, ps), _mev(ch), _mev(None if ph is None or ch is None else ph - ch), _status(cand, f),
        ])
    out += [_table(["fidelity", "bought in round", "E_form predicted, as ranked (eV/atom)",
                    "ensemble mean ± std, raw (eV/atom)", "E_form computed (eV/atom)",
                    "E_form error, as ranked (meV/atom)", "E_hull predicted, as ranked, final hull (meV/atom)",
                    "E_hull computed, final hull (meV/atom)", "E_hull error (meV/atom)", "status"], rows),
            "As ranked: the formation energy and sigma the policy used in the round the calculation was bought, "
            "before its result was known: the CGAT ensemble mean (shifted by the learned PBE->SCAN bias while SCAN "
            "predictions came from the PBE model) ± the ensemble standard deviation times the calibrated spread "
            "scale. The model's ensemble mean ± std (raw, unshifted) is what the parity plots and the MAE use. "
            "E_hull: both the prediction and the result measured against the final hull snapshot of the same "
            "fidelity (never mixed), so both errors agree.", ""]
    latest = [[f.upper(), (cand.predicted.get(f) or {}).get("round", "-"),
               _ev(finite_float((cand.predicted.get(f) or {}).get("e_form_mean_ev_per_atom")),
                   finite_float((cand.predicted.get(f) or {}).get("e_form_std_ev_per_atom"))),
               _num((cand.predicted.get(f) or {}).get("p_stable"), ".2f")]
              for f in FIDELITIES if cand.predicted.get(f)]
    if latest:
        out += ["Latest prediction (the model of the last round that ranked the candidate; P(stable) against that "
                "round's hull):", "",
                _table(["fidelity", "round", "E_form predicted (eV/atom)", "P(stable)"], latest)]
    comp_rows = []
    for f in FIDELITIES:
        comp = cand.competing.get(f)
        if comp is not None:
            comp_rows.append([f.upper(), comp.known, comp.computed,
                              Markup('<span class="elements-only">elements only</span>') if comp.elements_only
                              else "-", comp.source])
    if comp_rows:
        out += ["## Competing phases", "",
                _table(["hull", "known phases", "computed in the campaign", "note", "counted from"], comp_rows),
                "Phases besides the elements and this candidate in its chemical system and its subsystems.", ""]
    if energy_figure:
        out += [f"![energies of this candidate]({energy_figure}){{ .report-figure }}", ""]
    out += ["## Hull of its chemical system", ""]
    drawn = False
    for f in FIDELITIES:
        fig = hull_figures.get(f)
        if fig:
            drawn = True
            out += [f"### {f.upper()}", "", f"![{f.upper()} hull]({fig}){{ .report-figure }}", ""]
    if not drawn:
        out += ["No hull plot: the hulls lack a reference for some element of this system, it has more than four "
                "elements, or no hull snapshot was recorded yet.", ""]
    out += ["pymatgen <code>PDPlotter</code> (matplotlib) on the final hull; unstable phases up to 200 meV/atom "
            "above the hull are shown.", ""]
    out += ["## Calculations", "",
            _table(["job uuid", "round", "fidelity", "state", "back-end", "label", "run type", "energy (eV/atom)",
                    f"cost ({data.budget.unit})", "CPU-hours", "wall time (s)", "finished", "notes"],
                   _job_rows(cand.jobs))]
    if cand.decisions:
        out += ["## Policy decisions", "",
                _table(["round", "fidelity", "reason", f"estimated cost ({data.budget.unit})", "bought", "score"],
                       [[d["round"], str(d["fidelity"]).upper(), d.get("reason") or "-",
                         _num(d.get("estimated_cost")), "yes" if d.get("accepted") else "no",
                         _num(json_object(d.get("numbers_json")).get("score"))] for d in cand.decisions])]
    out += ["[Back to the candidates](../candidates.md)", ""]
    return "\n".join(out)


# ---- methods and events --------------------------------------------------------------------------------------------
def _demote(markdown: str, levels: int = 2) -> str:
    return re.sub(r"^(#{1,6})(\s)", lambda m: "#" * min(6, len(m.group(1)) + levels) + m.group(2), markdown,
                  flags=re.MULTILINE)


def methods_page(data: ReportData, *, model_cards: Mapping[str, str], versions: Mapping[str, str],
                 provenance: Mapping[str, str]) -> str:
    """Model card(s), data, calculators, settings and versions."""
    out = [front_matter("Methods") + "# Methods", "", honesty_note(data.backends()), "## Model", ""]
    if data.models:
        out += [_table(["version", "round", "fidelity", "training points", "parent", "metrics", "folder"],
                       [[code(m["version"]), m["round"], m["fidelity"], m["n_train"], m.get("parent") or "-",
                         ", ".join(f"{k} = {_num(v, '.4g')}" for k, v in (m.get("metrics") or {}).items()
                                   if not isinstance(v, (dict, list))) or "-",
                         code(m.get("path"))] for m in data.models])]
    else:
        out += ["No fine-tuned model version was recorded (the campaign used its initial model only).", ""]
    initial = data.config.get("model")
    out += [f"Initial (PBE) ensemble: {code(initial) if initial else 'shipped default'}.", ""]
    scan_initial = data.config.get("scan_model")
    out += [f"Initial SCAN ensemble: {code(scan_initial)} (SCAN predictions from round 1 on)." if scan_initial else
            "Initial SCAN ensemble: none (SCAN predictions came from the PBE ensemble until the first SCAN "
            "fine-tune).", ""]
    for name, card in model_cards.items():
        lines = safe_markdown(strip_external_links(card)).strip().splitlines()
        heading = f"### Model card of the {md_text(name)}"
        if lines and lines[0].startswith("# "):  # the card's own title joins ours; its sections go below it
            title = html.unescape(lines[0][2:]).removeprefix("Model card:").replace("`", "").strip()
            heading += ": " + md_text(title)
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
                ["candidate files", Markup(", ".join(code(c) for c in data.config.get("candidates") or []) or "-")],
                ["candidates", data.n_candidates],
                ["competing phases computed", len({j.structure_id for j in data.jobs if j.role == "competing"})],
                *[[f"{f.upper()} hull references", f"{len(refs)} entries ("
                   + ", ".join(sorted({str(r.get('label') or r.get('backend') or '?') for r in refs})) + ")"]
                  for f, refs in sorted(data.references.items())],
                ["predictions recorded per round",
                 "every candidate at PBE and SCAN" if not data.prediction_storage else
                 f"{data.prediction_storage.get('rule', 'part of them')} (ledger meta prediction_storage)"],
            ])]
    out += ["## Settings", "", "The campaign's configuration as stored in its ledger:", "",
            _table(["setting", "value"],
                   [[k, code(json.dumps(v)) if isinstance(v, (dict, list)) else code(v)]
                    for k, v in sorted(data.config.items())])]
    out += ["## Versions and provenance", "",
            _table(["", "value"], [*[[k, code(v)] for k, v in provenance.items()],
                                   *[[f"{k} (report build)", code(v)] for k, v in versions.items()]])]
    return "\n".join(out)


def events_page(data: ReportData, *, limit: int = 500) -> str:
    """The campaign's event log (newest last; the last ``limit`` events)."""
    events = data.events[-limit:]
    rows = [[_time(e.get("time")), e.get("round") if e.get("round") is not None else "-", e.get("kind") or "-",
             e.get("message") or ""] for e in events]
    skipped = len(data.events) - len(events)
    return "\n".join([front_matter("Event log") + "# Event log", "",
                      (f"The last {limit} of {len(data.events)} events." if skipped else f"{len(events)} events."), "",
                      _table(["time", "round", "kind", "message"], rows)])
