"""Model cards: a markdown summary written next to every saved ensemble (``MODEL_CARD.md``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from screener.cgat.checkpoint import atomic_write_text

if TYPE_CHECKING:
    from screener.cgat.checkpoint import ModelMeta
    from screener.cgat.ensemble import EnsembleInfo

__all__ = ["render_model_card", "write_model_card"]


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def render_model_card(info: EnsembleInfo, metas: Sequence[ModelMeta],
                      calibration: dict[str, Any] | None = None) -> str:
    """Markdown text of the model card: data, split, seeds, hyper-parameters, MAEs, time, hardware, command, and
    the spread calibration (``calibration``: one fidelity's entry of ``calibration.json``) when one was fitted."""
    unit = info.target_unit or "target units"
    m = info.metrics
    split = info.split
    lines = [
        f"# Model card: CGAT ensemble for `{info.target}`",
        "",
        f"- **Target**: `{info.target}` ({unit}); {len(info.members)} members; architecture "
        f"width {info.architecture.atom_fea_len}, {info.architecture.n_steps} message-passing steps, "
        f"{info.architecture.n_heads} heads.",
        f"- **Created**: {info.created_utc} with screener {info.versions.get('screener', '?')}, "
        f"torch {info.versions.get('torch', '?')}, python {info.versions.get('python', '?')}.",
        f"- **Command**: `{info.command or 'Python API (train_ensemble)'}`",
        "",
        "## Data",
        "",
        f"- Files: {', '.join(f'`{f}`' for f in info.data) if info.data else 'passed in from Python'}",
        f"- Structures: {info.n_structures}; sha256 of graphs + targets: `{info.train_data_hash[:16]}...`",
        f"- Split: fractions {split.get('fractions')} (train/val/test); common test set of {split.get('n_test')} "
        f"structures (seed {split.get('test_seed')}), each member its own train/val split.",
        "",
        "## Training",
        "",
    ]
    if info.init_from:
        lines.append(
            f"- Transfer (`{info.transfer}`) from `{info.init_from}`; target normalisation "
            f"{'kept from the checkpoint' if info.keep_normalization else 're-fitted on the new data'}."
        )
    tc = info.train_config
    lines += [
        f"- AdamW lr {tc.get('lr')}, weight decay {tc.get('weight_decay')}, batch {tc.get('batch_size')}, "
        f"loss `{tc.get('loss')}`, {tc.get('epochs')} epochs, triangular cyclical LR "
        f"{tc.get('lr_min_factor')}x-1x with period {tc.get('lr_period_epochs')} epochs, validation every "
        f"{tc.get('val_every')} epochs, patience {tc.get('patience')}; best validation checkpoint kept.",
        f"- Hardware: {info.hardware}; wall time {_fmt(info.wall_time_s, 1)} s.",
        "",
        "## Members",
        "",
        f"| member | seed | n train | n val | best epoch | val MAE ({unit}) | test MAE ({unit}) | train time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, name in enumerate(info.members):
        def at(key: str, default: Any = None) -> Any:
            values = m.get(key) or []
            return values[k] if k < len(values) else default

        seed = info.seeds[k] if k < len(info.seeds) else (metas[k].seed if k < len(metas) else None)
        lines.append(
            f"| {name} | {seed} | {_at(split, 'n_train', k)} | {_at(split, 'n_val', k)} | {at('member_best_epoch')} "
            f"| {_fmt(at('member_val_mae'))} | {_fmt(at('member_test_mae'))} | {_fmt(at('member_train_time_s'), 1)} |"
        )
    lines += [
        "",
        "## Ensemble",
        "",
        f"- Out-of-bag validation MAE (each validation structure predicted by the members that did not train on it): "
        f"{_fmt(m.get('ensemble_val_mae_oob'))} {unit}",
        f"- Test MAE of the ensemble mean: {_fmt(m.get('ensemble_test_mae'))} {unit} (std of the test targets "
        f"{_fmt(m.get('test_target_std'))}; mean predicted epistemic std {_fmt(m.get('ensemble_test_mean_std'))})",
        "",
    ]
    if calibration:
        c = calibration

        def pct(key: str) -> str:
            v = c.get(key)
            return f"{100 * v:.1f} %" if isinstance(v, (int, float)) else "n/a"

        lines += [
            "## Spread calibration (`calibration.json`)",
            "",
            f"- sigma = scale x 0.1 x (std / 0.1)^exponent ({unit}): scale {_fmt(c.get('scale'))}, exponent "
            f"{_fmt(c.get('exponent'))}, fitted on {_fmt(c.get('n_errors'), 0)} errors on structures no member "
            f"trained on ({str(c.get('source') or 'held-out split').split(';')[0]}).",
            f"- Share of those errors within 1 / 2 sigma: raw ensemble std {pct('within_1_sigma_raw')} / "
            f"{pct('within_2_sigma_raw')}; calibrated, cross-fitted on halves of the split {pct('within_1_sigma')} / "
            f"{pct('within_2_sigma')} (a Gaussian: 68.3 % / 95.4 %).",
            "- `screener run` starts from this calibration and refits it on the campaign's own prospective errors; "
            "`screener rank` uses it for P(stable).",
            "",
        ]
    lines += [
        "## Use and limits",
        "",
        "- Predictions are the mean over members; the uncertainty is their standard deviation (epistemic) and, when "
        "the members were trained with the robust (Laplace NLL) loss, the mean predicted aleatoric std.",
        "- Trained on the data above only: expect larger errors for chemistries and structure types not in it.",
        "- Load with `screener.cgat.CGATEnsemble.load(<this folder>)` or `screener predict --model <this folder>`.",
        "",
    ]
    return "\n".join(lines)


def _at(d: dict[str, Any], key: str, k: int) -> Any:
    values = d.get(key) or []
    return values[k] if isinstance(values, list) and k < len(values) else None


def write_model_card(directory: str | Path, info: EnsembleInfo, metas: Sequence[ModelMeta],
                     calibration: Any = None) -> Path:
    """Write ``MODEL_CARD.md`` into ``directory`` (with the spread ``calibration`` fit training made, if any) and
    return its path."""
    path = Path(directory) / "MODEL_CARD.md"
    fit = None if calibration is None else calibration.model_dump(mode="json")
    atomic_write_text(path, render_model_card(info, metas, fit))
    return path
