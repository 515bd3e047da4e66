"""Static figures of the campaign report (matplotlib, written as PNG files; nothing is fetched at view time).

Each function takes plain numbers (or the report's dataclasses), writes one PNG and returns its path. matplotlib is
imported inside the functions (it costs ~0.3 s) and the figures are drawn on :class:`matplotlib.figure.Figure`
objects, without pyplot, except the hull plot: pymatgen's ``PDPlotter`` draws through pyplot, so that figure is
closed right after it is saved.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from screener.report.data import CandidateInfo, Headline, JobInfo, ParityPoint, Reliability, RoundInfo

__all__ = [
    "plot_spend",
    "plot_discoveries",
    "plot_learning_curve",
    "plot_parity",
    "plot_reliability",
    "plot_candidate_energies",
    "plot_hull",
    "FIDELITY_COLORS",
]

logger = logging.getLogger(__name__)

FIDELITY_COLORS = {"pbe": "#1f77b4", "scan": "#d62728"}
_DPI = 110


def _figure(width_in: float = 7.0, height_in: float = 3.6, ncols: int = 1, *, left: float = 0.1,
            bottom: float = 0.15, top: float = 0.9, right: float = 0.98) -> tuple[Any, Any]:
    # fixed margins: matplotlib's constrained layout costs ~0.3 s per figure on a busy 2-core machine
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in))
    fig.subplots_adjust(left=left, right=right, bottom=bottom, top=top, wspace=0.3)
    axes = fig.subplots(1, ncols)
    return fig, axes


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI, metadata={"Software": None})
    return path


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_spend(jobs: Sequence[JobInfo], rounds: Sequence[RoundInfo], unit: str, path: Path) -> Path:
    """Budget spent by fidelity: cumulative over wall-clock time (left) and per round (right).

    Parameters
    ----------
    jobs : sequence of JobInfo
        All jobs; finished ones count with their charge (actual cost, else estimate).
    rounds : sequence of RoundInfo
        The rounds (x axis of the right panel).
    unit : str
        Budget unit for the axis labels.
    path : Path
        PNG file to write.
    """
    fig, (ax_t, ax_r) = _figure(9.0, 3.8, ncols=2, top=0.82)
    finished = sorted((j for j in jobs if j.finished), key=lambda j: (j.finished_at or 0.0, j.round))
    t0 = min((j.created_at for j in jobs if j.created_at is not None), default=None)
    if not finished:
        _empty(ax_t, "no finished calculations yet")
        _empty(ax_r, "no finished calculations yet")
        return _save(fig, path)
    span_s = max(((j.finished_at or 0.0) - t0 for j in finished if j.finished_at), default=0.0) if t0 else 0.0
    time_unit, seconds = ("h", 3600.0) if span_s > 7200 else ("min", 60.0) if span_s > 120 else ("s", 1.0)
    for fidelity, color in FIDELITY_COLORS.items():
        xs, ys, total = [0.0], [0.0], 0.0
        for job in finished:
            if job.fidelity != fidelity:
                continue
            total += job.charge
            x = ((job.finished_at or t0 or 0.0) - (t0 or 0.0)) / seconds if t0 is not None else float(job.round)
            xs.append(x)
            ys.append(total)
        if len(xs) > 1:
            ax_t.step(xs, ys, where="post", color=color, label=fidelity.upper(), marker=".")
    ax_t.set_xlabel(f"wall-clock time since the first job ({time_unit})" if t0 is not None else "round")
    ax_t.set_ylabel(f"cumulative spend ({unit})")
    ax_t.set_title("spend over time", pad=22)
    numbers = [r.round for r in rounds] or sorted({j.round for j in finished})
    bottom = [0.0] * len(numbers)
    for fidelity, color in FIDELITY_COLORS.items():
        heights = [sum(j.charge for j in finished if j.round == n and j.fidelity == fidelity) for n in numbers]
        ax_r.bar(numbers, heights, bottom=bottom, color=color, label=fidelity.upper())
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax_r.set_xlabel("round")
    ax_r.set_ylabel(f"spend in the round ({unit})")
    ax_r.set_title("spend per round", pad=22)
    ax_r.set_xticks(numbers)
    # one legend for both panels, above them: inside an axis it hid the first bar
    handles, labels = ax_r.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False, bbox_to_anchor=(0.5, 1.0))
    return _save(fig, path)


def plot_discoveries(headline: Headline | None, unit: str, unit_cpu_hours: float | None, path: Path) -> Path:
    """Cumulative stable finds (candidates on the final SCAN hull) against cumulative cost, after each round.

    Bottom axis: CPU-hours; top axis: budget units (``unit_cpu_hours`` CPU-hours each) when known. Where the pool's
    stable share is known, a dashed line shows what random picks would have found with the same SCAN calculations.

    Parameters
    ----------
    headline : Headline
        The report's headline figures (per-round cumulative finds and costs).
    unit : str
        Budget unit.
    unit_cpu_hours : float, optional
        CPU-hours of one budget unit.
    path : Path
        PNG file to write.
    """
    fig, ax = _figure(6.5, 3.8, left=0.12, bottom=0.14, top=0.8)
    # rounds that bought nothing (the last, empty one) add no point
    rounds = [r for r in (headline.rounds if headline is not None else []) if r.cost_budget_units > 0 or r.n_found]
    if not rounds:
        _empty(ax, "no finished round yet")
        return _save(fig, path)
    xs = [0.0] + [r.cum_cpu_hours for r in rounds]
    ax.plot(xs, [0] + [r.cum_found for r in rounds], marker="o", color=FIDELITY_COLORS["scan"],
            label="confirmed stable (final SCAN hull)")
    last = 0
    for r in rounds:
        if r.cum_found != last or r is rounds[0]:  # label the rounds that found something (labels would overlap)
            ax.annotate(f"round {r.round}", (r.cum_cpu_hours, r.cum_found), textcoords="offset points",
                        xytext=(-10, 6), fontsize=7, color="0.35", ha="right")
        last = r.cum_found
    if headline.prevalence:
        ax.plot(xs, [0.0] + [headline.prevalence * r.cum_scan_computed for r in rounds], ls="--", color="0.5",
                label=f"random picks (pool share {100 * headline.prevalence:.1f} %)")
    ax.set_xlabel("cumulative cost (CPU-hours)")
    ax.set_ylabel("stable crystals found")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_xlim(0, 1.08 * max(xs) or 1.0)
    ax.set_ylim(0, max(1, rounds[-1].cum_found) * 1.15 + 0.2)
    if unit_cpu_hours:
        k = float(unit_cpu_hours)
        top = ax.secondary_xaxis("top", functions=(lambda x: x / k, lambda u: u * k))
        top.set_xlabel(f"cumulative cost ({unit})")
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def _se_mev(points: Sequence[dict[str, Any]]) -> list[float] | None:
    """Standard errors (meV/atom) of learning-curve points where the ledger records them (else no error bars)."""
    se = [p.get("mae_se_ev_per_atom") for p in points]
    if not any(isinstance(v, (int, float)) for v in se):
        return None
    # a log axis cannot draw a bar below zero: cap the lower bar just above it
    return [[min(1000 * (v or 0.0), 0.95 * 1000 * p["mae_ev_per_atom"]) for v, p in zip(se, points, strict=True)],
            [1000 * (v or 0.0) for v in se]]


def plot_learning_curve(curve: Sequence[dict[str, Any]], fit: Any, path: Path) -> Path:
    """Model MAE against training-set size, with the scaling law the policy fitted (SCAN panel).

    Parameters
    ----------
    curve : sequence of dict
        Ledger learning-curve rows (``fidelity``, ``n_scan``, ``n_pbe``, ``mae_ev_per_atom``).
    fit : ScalingLawFit or None
        The latest fit; drawn at the latest ``N_p`` with its 90 % confidence band.
    path : Path
        PNG file to write.
    """
    import numpy as np

    fig, (ax_s, ax_p) = _figure(9.0, 3.6, ncols=2)
    scan = [p for p in curve if p["fidelity"] == "scan" and (p["mae_ev_per_atom"] or 0) > 0]
    pbe = [p for p in curve if p["fidelity"] == "pbe" and (p["mae_ev_per_atom"] or 0) > 0]
    n_max = max([max(p["n_scan"], 1) for p in scan] + [1])
    n_pbe_now = max([p["n_pbe"] for p in curve] + [1])
    if scan:
        ax_s.errorbar([max(p["n_scan"], 1) for p in scan], [1000 * p["mae_ev_per_atom"] for p in scan],
                      yerr=_se_mev(scan), fmt="o", color=FIDELITY_COLORS["scan"], ecolor="0.5", capsize=2, zorder=3,
                      label="measured (prospective, ±1 standard error)")
    curve_mev = None
    if fit is not None:
        grid = np.geomspace(1, max(10.0, 4.0 * n_max), 60)
        curve_mev = 1000 * np.asarray(fit.predict_mae(grid, n_pbe_now), dtype=float)
        ax_s.plot(grid, curve_mev, color="k",
                  label=f"scaling law at N_p = {n_pbe_now} (a = {fit.a:.2f}, b = {fit.b:.2f}, {fit.source})")
        try:
            lo, hi = fit.predict_interval(grid, n_pbe_now, 0.9)
            ax_s.fill_between(grid, 1000 * np.asarray(lo), 1000 * np.asarray(hi), color="0.85", label="90 % band")
        except Exception as exc:  # noqa: BLE001 - a band is decoration; the curve itself is drawn
            logger.debug("no confidence band: %s", exc)
    if scan or fit is not None:
        from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

        ax_s.set_xscale("log")
        ax_s.set_yscale("log")
        # plain 1, 2, 5, 10, 20 ... labels: matplotlib's minor labels overlap within a decade
        ax_s.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax_s.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax_s.xaxis.set_minor_formatter(NullFormatter())
        if scan:  # the measured points set the scale; a prior-only law may lie far off them
            maes = [1000 * p["mae_ev_per_atom"] for p in scan]
            lo, hi = min(maes) / 3.0, max(maes) * 3.0
            ax_s.set_ylim(lo, hi)
            if curve_mev is not None and (curve_mev.min() > hi or curve_mev.max() < lo):
                ax_s.text(0.5, 0.05, f"the scaling law lies off this scale ({curve_mev.min():.3g}-"
                          f"{curve_mev.max():.3g} meV/atom)", transform=ax_s.transAxes, ha="center", fontsize=7)
        ax_s.set_xlabel("SCAN training-set size N_s")
        ax_s.set_ylabel("SCAN model MAE (meV/atom)")
        ax_s.legend(fontsize=7, loc="best")
    else:
        _empty(ax_s, "no SCAN learning-curve points yet")
    ax_s.set_title("SCAN model error vs N_s")
    if pbe:
        n_p = [max(p["n_pbe"], 1) for p in pbe]
        ax_p.errorbar(n_p, [1000 * p["mae_ev_per_atom"] for p in pbe], yerr=_se_mev(pbe), fmt="o",
                      color=FIDELITY_COLORS["pbe"], ecolor="0.5", capsize=2, zorder=3,
                      label="measured (prospective, ±1 standard error)")
        ax_p.margins(y=0.2)
        if max(n_p) >= 10 * min(n_p):  # a log axis over less than a decade only shows overlapping tick labels
            ax_p.set_xscale("log")
        else:
            from matplotlib.ticker import MaxNLocator, ScalarFormatter

            ax_p.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
            ax_p.xaxis.set_major_formatter(ScalarFormatter(useOffset=False))
            pad = max(1.0, 0.25 * (max(n_p) - min(n_p))) + 0.5  # keeps the outer tick labels inside
            ax_p.set_xlim(min(n_p) - pad, max(n_p) + pad)
        ax_p.set_yscale("log")
        ax_p.set_xlabel("PBE training-set size N_p")
        ax_p.set_ylabel("PBE model MAE (meV/atom)")
        ax_p.legend(fontsize=7)
    else:
        _empty(ax_p, "no PBE learning-curve points yet")
    ax_p.set_title("PBE model error vs N_p")
    return _save(fig, path)


def plot_parity(points: dict[str, Sequence[ParityPoint]], quantity: str, path: Path) -> Path:
    """Prediction made before purchase (±1 std) against the computed value, one panel per fidelity.

    Parameters
    ----------
    points : dict fidelity -> sequence of ParityPoint
        From :meth:`ReportData.parity` (eV/atom).
    quantity : {"e_form", "e_hull"}
        Formation energy (drawn in eV/atom) or E_hull on the final hull (drawn in meV/atom).
    path : Path
        PNG file to write.
    """
    scale, unit, name = (1.0, "eV/atom", "E_form") if quantity == "e_form" else (1000.0, "meV/atom",
                                                                                   "E_hull (final hull)")
    fig, axes = _figure(9.0, 4.2, ncols=2, left=0.09, bottom=0.13)
    for ax, fidelity in zip(axes, ("pbe", "scan"), strict=True):
        pts = list(points.get(fidelity, []))
        ax.set_title(f"{fidelity.upper()}: predicted vs computed {name}", fontsize=10)
        if not pts:
            _empty(ax, f"no computed {fidelity.upper()} candidate yet")
            continue
        xs = [scale * p.computed for p in pts]
        ys = [scale * p.predicted for p in pts]
        es = [scale * (p.predicted_std or 0.0) for p in pts]
        ax.errorbar(xs, ys, yerr=es, fmt="o", color=FIDELITY_COLORS[fidelity], ecolor="0.6", capsize=2, ms=4)
        # the points set the scale (a wide error bar may run off it)
        lo, hi = min(xs + ys), max(xs + ys)
        pad = 0.08 * (hi - lo) or 0.05 * scale
        lo, hi = lo - pad, hi + pad
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, ls="--")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        mae_mev = 1000 / scale * sum(abs(y - x) for x, y in zip(xs, ys, strict=True)) / len(xs)
        ax.text(0.03, 0.97, f"MAE {mae_mev:.0f} meV/atom\nn = {len(xs)}", transform=ax.transAxes, va="top",
                fontsize=8)
        ax.set_xlabel(f"computed {name} ({unit})")
        ax.set_ylabel(f"predicted before purchase ({unit})")
    return _save(fig, path)


def plot_reliability(curves: dict[str, Reliability], path: Path) -> Path:
    """Reliability of the predicted spread: observed share of prospective errors within k sigma against the Gaussian
    share, raw and calibrated sigma, one panel per fidelity (a calibrated model lies on the diagonal).

    Parameters
    ----------
    curves : dict fidelity -> Reliability
        From :attr:`ReportData.reliability`.
    path : Path
        PNG file to write.
    """
    fig, axes = _figure(9.0, 4.2, ncols=2, left=0.09, bottom=0.13)
    for ax, fidelity in zip(axes, ("pbe", "scan"), strict=True):
        curve = curves.get(fidelity)
        ax.set_title(f"{fidelity.upper()}: coverage of k sigma", fontsize=10)
        if curve is None:
            _empty(ax, f"no prospective {fidelity.upper()} error yet")
            continue
        ax.plot([0, 1], [0, 1], color="0.5", lw=0.8, ls="--", label="Gaussian")
        color = FIDELITY_COLORS[fidelity]
        ax.plot(curve.nominal, curve.raw, "o:", color=color, mfc="none", ms=4, label="raw sigma")
        ax.plot(curve.nominal, curve.calibrated, "o-", color=color, ms=4, label="calibrated sigma")
        for k, x, y in zip(curve.k, curve.nominal, curve.calibrated, strict=True):
            if k in (1.0, 2.0):
                ax.annotate(f"{k:.0f}\u03c3", (x, y), textcoords="offset points", xytext=(-14, 4), fontsize=7)
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.text(0.97, 0.03, f"n = {curve.n_errors}", transform=ax.transAxes, ha="right", fontsize=8)
        ax.set_xlabel("Gaussian share within k sigma (k = 0.25 to 3)")
        ax.set_ylabel("observed share of errors")
        ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_candidate_energies(cand: CandidateInfo, path: Path) -> Path:
    """One candidate: E_hull predicted before purchase (±1 std) and computed, both on the final hull, per fidelity."""
    fig, ax = _figure(5.5, 2.4, left=0.36, bottom=0.22)
    labels, rows = [], []
    for fidelity in ("pbe", "scan"):
        pred = cand.predicted_e_hull_final_ev_per_atom.get(fidelity)
        std = (cand.predicted_at_selection.get(fidelity) or {}).get("e_form_std_ev_per_atom")
        if pred is not None:
            labels.append(f"{fidelity.upper()} predicted")
            rows.append((1000 * pred, 1000 * (std or 0.0), FIDELITY_COLORS[fidelity], "o"))
        computed = cand.computed_e_hull_ev_per_atom.get(fidelity)
        if computed is not None:
            labels.append(f"{fidelity.upper()} computed")
            rows.append((1000 * computed, 0.0, FIDELITY_COLORS[fidelity], "s"))
    if not rows:
        _empty(ax, "no predictions before purchase or results")
        return _save(fig, path)
    for y, (value, err, color, marker) in enumerate(rows):
        ax.errorbar([value], [y], xerr=[err], fmt=marker, color=color, ecolor="0.5", capsize=3)
    ax.axvline(0.0, color="0.5", lw=0.8, ls="--")
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("E_hull on the final hull (meV/atom)")
    return _save(fig, path)


def plot_hull(hull: Any, chemsys: str, path: Path, *, show_unstable_ev_per_atom: float = 0.2) -> Path | None:
    """The phase diagram of ``chemsys`` in one fidelity's hull, drawn by pymatgen's ``PDPlotter`` (matplotlib).

    Returns None (and writes nothing) when the system cannot be drawn: more than four elements, or an element
    without a reference in that hull.
    """
    from screener.errors import ScreenerError

    try:
        diagram = hull.phase_diagram(chemsys)
    except ScreenerError as exc:
        logger.info("no %s hull plot of %s: %s", hull.fidelity, chemsys, exc)
        return None
    if not 1 <= diagram.dim <= 4:
        return None
    import matplotlib.pyplot as plt
    from pymatgen.analysis.phase_diagram import PDPlotter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = None
    # PDPlotter fixes both limits and an equal aspect on ternaries; matplotlib then logs a warning per figure
    mpl_log = logging.getLogger("matplotlib.axes._base")
    old_level = mpl_log.level
    mpl_log.setLevel(logging.ERROR)
    with plt.ioff():
        try:
            plotter = PDPlotter(diagram, show_unstable=show_unstable_ev_per_atom, backend="matplotlib")
            ax = plotter.get_plot()
            fig = ax.figure
            for text in ax.texts:
                text.set_fontsize(min(text.get_fontsize(), 14))
            ax.set_title(f"{hull.fidelity.upper()} hull of {chemsys}", fontsize=16)
            fig.savefig(path, dpi=60, bbox_inches="tight", metadata={"Software": None})
        except (ValueError, IndexError, TypeError, AttributeError) as exc:  # pymatgen cannot draw this diagram
            logger.warning("no %s hull plot of %s: %s", hull.fidelity, chemsys, exc)
            return None
        finally:
            mpl_log.setLevel(old_level)
            if fig is not None:
                plt.close(fig)
    return path
