"""Command-line interface: a thin typer layer over the Python API.

Heavy imports (torch, pymatgen, jobflow) happen inside the commands so ``screener --help`` stays fast. Every
:class:`~screener.errors.ScreenerError` (and any other exception) is reported as one line on stderr with a non-zero
exit code; ``screener --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="screener: find stable crystals at SCAN accuracy for a fraction of the DFT cost.",
)

_STATE = {"debug": False}


def _help_types_without_flags() -> None:
    """Help shows no value type for flags (``--json``, ``--help``) and ``<path>`` (``<path> ...`` for a repeatable
    option) where typer writes ``<list[Path]>``.

    Why: typer 0.2x's rich help (``rich_utils._print_options_panel``) prints ``display_type_rich`` for every
    parameter, flags included (``--json <bool>``), and the Python annotation of list parameters; its plain help
    (``TyperOption.get_help_record``) skips flags. This is independent of ``Optional``/``Annotated``.
    """
    import re

    try:
        from typer.core import TyperArgument, TyperOption
    except ImportError:  # pragma: no cover - another typer layout: leave its help as it is
        return
    for cls in (TyperOption, TyperArgument):
        original = getattr(cls, "display_type_rich", None)
        if original is None or getattr(original, "_screener", False):
            continue

        def display_type_rich(self, ctx, _original=original):  # noqa: ANN001 - typer's signature
            if getattr(self, "is_flag", False) and getattr(self, "metavar", None) is None:
                return None
            text = _original(self, ctx)
            if isinstance(text, str):
                more = " ..." if getattr(self, "multiple", False) else ""
                text = re.sub(r"^<list\[(.+)\]>$", lambda m: f"<{m.group(1).lower()}>{more}", text)
            return text

        display_type_rich._screener = True  # type: ignore[attr-defined]
        cls.display_type_rich = display_type_rich


_help_types_without_flags()


def _stage_progress():
    """Rich progress with one bar per stage; returns (progress, callback(stage, done, total)).

    A stage that starts again (``done`` back below what its bar shows, e.g. the next round's calculations under the
    same name) gets its bar reset instead of continuing the old count; ``callback.clear()`` removes the finished
    bars (the run command calls it after printing a round's line, so the bars on screen are the current round's).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    tasks: dict[str, int] = {}

    def shown(task: int):
        return next(t for t in bars.tasks if t.id == task)

    def callback(stage: str, done: int, total: int) -> None:
        task = tasks.get(stage)
        if task is not None:
            bar = shown(task)
            if done < bar.completed or (bar.finished and total != bar.total):
                bars.reset(task, total=total, completed=done)
                return
        else:
            tasks[stage] = task = bars.add_task(stage, total=total)
        bars.update(task, completed=done, total=total)

    def clear() -> None:
        for stage, task in list(tasks.items()):
            if shown(task).finished:
                bars.remove_task(task)
                del tasks[stage]

    callback.clear = clear  # type: ignore[attr-defined]
    return bars, callback


def _expand_globs(paths: list[Path], flag: str) -> list[Path]:
    """A path that does not exist but holds ``*``, ``?`` or ``[`` is a glob (quoted on the command line)."""
    import glob

    from screener.errors import InvalidInputError

    out: list[Path] = []
    for path in paths:
        text = str(path)
        if path.exists() or not glob.has_magic(text):
            out.append(path)
            continue
        matches = sorted(glob.glob(text, recursive=True))
        if not matches:
            raise InvalidInputError(f"{flag} {text}: no file matches this pattern")
        out += [Path(m) for m in matches]
    return out


def _competing_phase_lines(record: dict, most: int = 12) -> list[str]:
    """Console lines, before round 1, with the competing phases each hull holds per chemical system (from the ledger's
    ``competing_phases`` record); systems whose hull holds only elements first."""
    systems = record.get("systems") or {}
    if not systems:
        return []
    per_system: dict[str, int] = {}
    for info in (record.get("candidates") or {}).values():
        per_system[info["chemsys"]] = per_system.get(info["chemsys"], 0) + 1
    order = sorted(systems, key=lambda cs: (min(systems[cs].values()) > 0, -per_system.get(cs, 0), cs))
    lines = [f"competing phases on the hulls before round 1 (known compounds; elements not counted), "
             f"{len(systems)} chemical system(s):"]
    for cs in order[:most]:
        n = systems[cs]
        flag = "  ONLY ELEMENTS" if min(n.values()) == 0 else ""
        lines.append(f"  {cs}: PBE {n['pbe']}, SCAN {n['scan']} ({per_system.get(cs, 0)} candidate(s)){flag}")
    if len(order) > most:
        lines.append(f"  ... and {len(order) - most} more system(s): the report lists every candidate's")
    n_twins = int(record.get("n_candidates_matching_known_phases") or 0)
    if n_twins:  # judged without their twin; `screener status` lists them
        lines.append(f"  {n_twins} candidate(s) ARE known phases (rediscoveries): each is judged against the hulls "
                     "without its twin, which stays there for the others")
    return lines


def _round_line(summary: dict) -> str:
    """One console line per finished round, every number from the ledger (:meth:`Campaign.round_summary`)."""
    bought = summary["bought"]
    failed = sum(summary.get("failed", {}).values())
    unit = summary["budget_unit"]
    parts = [
        f"round {summary['round']}",
        f"bought {bought.get('pbe', 0)} PBE + {bought.get('scan', 0)} SCAN" + (f" ({failed} failed)" if failed else ""),
        f"{summary['n_stable_found']} stable at SCAN so far"
        + (f" (E_hull <= {1000 * summary['stable_threshold_ev_per_atom']:g} meV/atom)"
           if summary.get("stable_threshold_ev_per_atom") else ""),
        f"spent {summary['budget_spent']:.4g} of {summary['budget_total']:.4g} {unit}, "
        f"{summary['budget_left']:.4g} left",
    ]
    errors = []
    for fidelity in ("scan", "pbe"):
        e = summary["model_error"].get(fidelity)
        if e:
            se = e.get("mae_se_ev_per_atom")
            errors.append(f"{fidelity.upper()} {e['mae_ev_per_atom'] * 1000:.0f}"
                          + (f" ± {se * 1000:.0f}" if se is not None else "")
                          + f" meV/atom (n={e.get('n_points')})")
    parts.append("E_form MAE (prospective) " + (", ".join(errors) if errors else "not measured"))
    if not summary.get("fine_tuned"):
        parts.append("no fine-tune (nothing left to buy)")
    return " | ".join(parts)


#: Known third-party warnings that say nothing to a screener user (shown with --verbose).
_QUIET_WARNING_MODULES = r"(jobflow|monty|chgnet|torch|pymatgen|atomate2|emmet|maggma|ase|dgl|mp_api)(\.|$)"

# Commands that run the network on the CPU: they get the glibc allocator tuned for CGAT's large reused activations
# (`collect` moves a campaign on like `run`: it predicts, fine-tunes and plans).
_MODEL_COMMANDS = {"train", "predict", "demo", "run", "collect", "world", "rank"}


@app.callback()
def _main_options(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details, including the INFO lines "
                                          "and known warnings of jobflow, CHGNet and other libraries.")] = False,
) -> None:
    _STATE["debug"] = debug
    if ctx.invoked_subcommand in _MODEL_COMMANDS:
        from screener.cgat.perf import configure_cpu_allocator

        configure_cpu_allocator()
    import warnings

    from rich.logging import RichHandler

    level = logging.DEBUG if debug else (logging.INFO if verbose else logging.WARNING)
    # The level goes on the handler too: libraries that set their own loggers to INFO (jobflow's "Started
    # executing jobs locally") would otherwise reach it through propagation, whatever the root level says.
    handler = RichHandler(show_path=False, rich_tracebacks=False)
    handler.setLevel(level)
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler])
    if not (verbose or debug):
        warnings.filterwarnings("ignore", module=_QUIET_WARNING_MODULES)


# ---- model commands (issue: foundation and CGAT) -------------------------------------------------------------------
# (train, predict, demo)


def _epoch_progress(n_members: int, n_epochs: int | None):
    """Rich progress bars, one per ensemble member; returns (progress, callback(k, record))."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False,
        disable=not _is_main_process(),
    )
    tasks: dict[int, int] = {}

    def callback(k: int, record: dict) -> None:
        if k not in tasks:
            tasks[k] = progress.add_task(f"member {k}", total=record.get("epochs") or n_epochs)
        if record.get("member_done"):
            progress.update(tasks[k], completed=record["epoch"], total=record["epoch"])
            return
        val = record.get("val_mae")
        text = f"member {k}  train MAE {record['train_mae']:.4f}" + (f"  val MAE {val:.4f}" if val == val else "")
        progress.update(tasks[k], completed=record["epoch"], total=record["epochs"], description=text)

    return progress, callback


def _is_main_process() -> bool:
    """False on the non-zero ranks of a torchrun launch (they train but stay quiet)."""
    import os

    return os.environ.get("RANK", "0") == "0"


def _command_line(name: str, *parts: tuple[str, object]) -> str:
    import shlex

    words = ["screener", name]
    for flag, value in parts:
        if value is None or value is False:
            continue
        if value is True:
            words.append(flag)
        elif isinstance(value, (list, tuple)):
            for v in value:
                words += [flag, str(v)] if flag else [str(v)]
        else:
            words += [flag, str(value)] if flag else [str(value)]
    return " ".join(shlex.quote(w) for w in words)


def _auto_preset(device: str) -> str:
    """``paper`` when training runs on CUDA, ``small`` on a CPU (the paper network takes days there)."""
    if device.startswith("cuda"):
        return "paper"
    if device != "auto":
        return "small"
    import torch

    return "paper" if torch.cuda.is_available() else "small"


@app.command()
def train(
    data: Annotated[list[Path], typer.Option("--data", help="Labelled structure files/folders (any readable format).")],
    target: Annotated[str, typer.Option(help="Label to learn, e.g. formation_energy_per_atom or e_form.")],
    out: Annotated[Path, typer.Option("--out", help="Ensemble folder to write (re-running resumes it).")],
    preset: Annotated[str, typer.Option(
        help="Architecture/training preset: small (CPU-sized), paper (the paper's network, for a GPU) or auto "
             "(default: paper on CUDA, small on a CPU).")] = "auto",
    epochs: Annotated[Optional[int], typer.Option(help="Epochs (default: preset's).")] = None,
    ensemble: Annotated[int, typer.Option("--ensemble", help="Ensemble members K.")] = 5,
    init: Annotated[Optional[Path], typer.Option(help="Checkpoint (model or ensemble folder) to start from.")] = None,
    transfer: Annotated[Optional[str], typer.Option(help="Transfer mode with --init: full or head.")] = None,
    keep_normalization: Annotated[
        bool, typer.Option("--keep-normalization", help="Keep the checkpoint's target mean/std.")
    ] = False,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Skip invalid structures (reported).")] = False,
    seed: Annotated[int, typer.Option(help="Base seed; member k uses seed + k.")] = 0,
    batch_size: Annotated[Optional[int], typer.Option(help="Crystals per batch (default: preset's).")] = None,
    target_unit: Annotated[Optional[str], typer.Option(help="Unit of the target (default: guessed from its name).")] = None,
    loss: Annotated[str, typer.Option(help="l1 or robust (Laplace NLL with the log-std output).")] = "l1",
    n_jobs: Annotated[int, typer.Option(help="Members trained in parallel processes.")] = 1,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    cache_dir: Annotated[Optional[Path], typer.Option(help="Graph cache folder.")] = None,
) -> None:
    """Train (or fine-tune with --init/--transfer) a CGAT ensemble; writes weights, a model card and, with a test
    split of >= 20 structures, calibration.json (the ensemble spread calibrated on it, read by run and rank)."""
    from rich.console import Console

    from screener.cgat.api import train_from_files
    from screener.errors import InvalidInputError

    if loss not in ("l1", "robust"):
        raise InvalidInputError(f"unknown loss {loss!r}; choose l1 or robust")
    if preset == "auto":
        preset = _auto_preset(device)
    command = _command_line(
        "train", ("--data", data), ("--target", target), ("--preset", preset), ("--epochs", epochs),
        ("--ensemble", ensemble), ("--out", out), ("--init", init), ("--transfer", transfer),
        ("--keep-normalization", keep_normalization), ("--skip-invalid", skip_invalid), ("--seed", seed),
        ("--batch-size", batch_size), ("--target-unit", target_unit), ("--loss", loss if loss != "l1" else None),
        ("--n-jobs", n_jobs if n_jobs != 1 else None), ("--device", device if device != "auto" else None),
    )
    bars, callback = _epoch_progress(ensemble, epochs)
    with bars:
        summary = train_from_files(
            data, target=target, out_dir=out, preset=preset, epochs=epochs, n_members=ensemble, init=init,
            transfer=transfer, keep_normalization=keep_normalization, skip_invalid=skip_invalid, seed=seed,
            batch_size=batch_size, target_unit=target_unit, loss=loss, n_jobs=n_jobs, device=device,
            cache_dir=cache_dir, command=command, progress=callback,
        )
    m, unit = summary.metrics, summary.target_unit
    console = Console(quiet=not _is_main_process())
    console.print(
        f"trained {summary.n_members} members on {summary.n_structures} structures"
        + (f" ({summary.n_skipped} skipped)" if summary.n_skipped else "")
        + f" in {summary.wall_time_s:.1f} s -> {summary.directory}"
    )
    if m.get("ensemble_test_mae") is not None:
        console.print(f"ensemble test MAE {m['ensemble_test_mae']:.4f} {unit}; model card: {out / 'MODEL_CARD.md'}")


@app.command()
def predict(
    files: Annotated[list[Path], typer.Argument(help="Structure files/folders to predict.")],
    model: Annotated[Optional[Path], typer.Option(
        "--model", help="Ensemble (or single model) folder. Default: the shipped PBE formation-energy ensemble, "
        "models/pbe-e-form-small-world20k in a checkout (screener/data/models/... in an installed wheel); "
        "`python -c 'from screener.campaign.ensemble_model import default_model_dir as d; print(d())'` "
        "prints it.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV to write.")] = Path("predictions.csv"),
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Skip invalid structures (reported).")] = False,
    batch_size: Annotated[int, typer.Option(help="Crystals per forward pass.")] = 256,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, ...")] = "auto",
    cache_dir: Annotated[Optional[Path], typer.Option(help="Graph cache folder.")] = None,
) -> None:
    """Predict structures with a trained ensemble: CSV with id, formula, <target>_mean_<unit>, <target>_std_<unit>
    (e.g. e_form_mean_ev_per_atom)."""
    from rich.console import Console

    from screener.errors import InvalidInputError

    if model is None:
        from screener.campaign.ensemble_model import DEFAULT_PBE_MODEL, shipped_models_dir

        model = shipped_models_dir() / DEFAULT_PBE_MODEL
        if not model.is_dir():
            raise InvalidInputError(f"the shipped model {model} is missing from this installation; give --model")
    # checked before torch and the structures are loaded (that takes tens of seconds)
    if not model.is_dir():
        raise InvalidInputError(f"--model {model}: no such folder")
    if not ((model / "ensemble.json").is_file() or (model / "config.json").is_file()):
        raise InvalidInputError(f"--model {model}: not a screener model (no ensemble.json or config.json in it)")
    from screener.cgat.api import predict_files

    summary = predict_files(
        model, files, output, skip_invalid=skip_invalid, batch_size=batch_size, device=device, cache_dir=cache_dir
    )
    Console().print(
        f"predicted {summary.n_predicted} structures"
        + (f" ({summary.n_skipped} skipped)" if summary.n_skipped else "")
        + f" -> {summary.output}"
    )


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's data, model and predictions.")] = Path(
        "screener-demo"
    ),
    ensemble: Annotated[int, typer.Option("--ensemble", help="Ensemble members.")] = 3,
    epochs: Annotated[int, typer.Option(help="Epochs per member.")] = 10,
) -> None:
    """Small offline demo: train a small ensemble on 180 shipped MP-20 structures, predict 20 unseen ones."""
    from rich.console import Console
    from rich.table import Table

    from screener.cgat.api import run_demo

    bars, callback = _epoch_progress(ensemble, epochs)
    with bars:
        summary = run_demo(
            out, n_members=ensemble, epochs=epochs, progress=callback,
            command=_command_line("demo", ("--out", out), ("--ensemble", ensemble), ("--epochs", epochs)),
        )
    unit = summary.target_unit
    table = Table(title=f"{summary.target} ({unit}) of structures the ensemble never saw")
    for col in ("id", "formula", "DFT (MP)", "predicted", "ensemble std"):
        table.add_column(col, justify="left" if col in ("id", "formula") else "right")
    for row in summary.rows:
        table.add_row(row["id"], row["formula"], f"{row['true']:.3f}", f"{row['mean']:.3f}", f"{row['std']:.3f}")
    console = Console()
    console.print(table)
    console.print(
        f"MAE {summary.mae:.3f} {unit} (std of the true values {summary.target_std:.3f}); model and card in "
        f"{summary.model_dir}, predictions in {out / 'predictions.csv'}"
    )


# ---- scale commands (issue: scale) ----------------------------------------------------------------------------------
# (featurize, rank)


@app.command()
def featurize(
    files: Annotated[list[Path], typer.Argument(help="Structure files/folders, e.g. Alexandria json.bz2 shards.")],
    store: Annotated[Path, typer.Option("--store", help="Graph-store folder to write (re-running resumes it).")],
    target: Annotated[Optional[list[str]], typer.Option("--target", help="Label to keep, e.g. e_form (repeatable).")] = None,
    shard_size: Annotated[int, typer.Option(help="Input entries per shard.", min=1)] = 10_000,
    n_neighbors: Annotated[int, typer.Option(help="Neighbours per site (the model's).", min=1)] = 24,
    n_jobs: Annotated[int, typer.Option(help="Worker processes (-1: all cores).")] = -1,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Skip invalid entries (listed in store.json with file, index and shard).")] = False,
) -> None:
    """Featurise structures into a sharded graph store (memory-mapped shards, each structure once, resumable)."""
    from rich.progress import Progress

    from screener.graphs.store import build_store

    with Progress(transient=True) as bar:
        task = bar.add_task("featurising files", total=None)
        manifest = build_store(
            files, store, targets=target or [], n_neighbors=n_neighbors, shard_size=shard_size, n_jobs=n_jobs,
            skip_invalid=skip_invalid, progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    typer.echo(
        f"{manifest.n_entries} entries ({manifest.n_graphs} distinct graphs) in {len(manifest.shards)} shards"
        + (f", {len(manifest.skipped)} invalid skipped (listed in {store / 'store.json'})" if manifest.skipped else "")
        + f" -> {store}"
    )


@app.command()
def rank(
    candidates: Annotated[list[Path], typer.Option("--candidates", help="Graph stores and/or structure files/folders (several after one flag).")],
    model: Annotated[Optional[Path], typer.Option("--model", help="PBE ensemble predicting E_form (default: the shipped one).")] = None,
    top: Annotated[int, typer.Option("--top", help="Rows to keep.", min=1)] = 1000,
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV to write.")] = Path("ranked.csv"),
    by: Annotated[str, typer.Option(help="e_form, e_hull (against the shipped elemental references + --hull-entries) or p_stable.")] = "e_form",
    hull_entries: Annotated[Optional[list[Path]], typer.Option("--hull-entries", help="PBE reference entry files for e_hull/p_stable (repeatable).")] = None,
    n_jobs: Annotated[int, typer.Option(help="Worker processes (chunks in parallel).", min=1)] = 1,
    executor: Annotated[str, typer.Option(help="local (process pool) or jobflow (a jobflow Flow run here).")] = "local",
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Skip invalid candidates (counted, first ones listed).")] = False,
) -> None:
    """Rank many candidates in chunks (one per store shard or file) and keep the top K, in bounded memory."""
    from screener.cgat.rank import rank_candidates, write_ranking

    summary = rank_candidates(
        _expand_globs(candidates, "--candidates"), model_dir=model, top_k=top, by=by,
        hull_entries=hull_entries or [], n_jobs=n_jobs, executor=executor, skip_invalid=skip_invalid,
    )
    write_ranking(summary, output)
    for line in summary.skipped:
        typer.echo(f"skipped {line}", err=True)
    typer.echo(
        f"ranked {summary.n_ranked} candidates in {summary.n_chunks} chunks"
        + (f" ({summary.n_skipped} invalid skipped)" if summary.n_skipped else "")
        + f"; top {len(summary.rows)} by {by} -> {output}"
    )


# ---- calculation commands (issue: calculations, hulls) --------------------------------------------------------------
# (hull, calc)


@app.command("hull")
def hull_command(
    files: Annotated[list[Path], typer.Argument(help="ComputedStructureEntry files (JSON, .json.gz, .json.bz2).")],
    functional: Annotated[str, typer.Option("--functional", "-f", help="Hull of 'pbe' or 'scan' (r2SCAN).")] = "pbe",
    references: Annotated[
        Optional[list[Path]], typer.Option("--references", "-r", help="Extra entry files: a local entry database.")
    ] = None,
    mp: Annotated[bool, typer.Option("--mp", help="Add Materials Project entries (mp-api; cached on disk).")] = False,
    offline: Annotated[bool, typer.Option("--offline", help="With --mp: use cached MP entries only.")] = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV to write.")] = Path("hull.csv"),
) -> None:
    """Formation energy and E_hull of every entry on the hull of one functional (never mixing functionals)."""
    from rich.progress import Progress

    from screener.hull.references import load_entries
    from screener.hull.table import hull_table, read_entry_files, write_hull_csv

    from screener.errors import InvalidInputError

    try:
        entries = read_entry_files(files)
    except InvalidInputError as exc:
        if "no such file" in str(exc):
            raise
        raise InvalidInputError(
            f"{exc}; `screener hull` reads computed entries: ComputedStructureEntry/ComputedEntry JSON files "
            "(.json, .json.gz, .json.bz2) such as the results of `screener calc`; for structures without energies "
            "run `screener calc FILE` first") from None
    refs = load_entries(references) if references else []
    with Progress(transient=True) as bar:
        task = bar.add_task(f"{functional} hull", total=len(entries))
        rows, _ = hull_table(
            entries, functional, references=refs, mp=mp, offline=offline,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    write_hull_csv(rows, output)
    n_stable = sum(row["stable"] for row in rows)
    typer.echo(f"{len(rows)} entries, {n_stable} stable on the {functional} hull -> {output}")


@app.command("calc")
def calc_command(
    files: Annotated[list[Path], typer.Argument(help="Structure files or folders (CIF, POSCAR, JSON, CSV with cif).")],
    fidelity: Annotated[str, typer.Option("--fidelity", "-f", help="'pbe', 'scan' or 'both'.")] = "pbe",
    backend: Annotated[str, typer.Option(help="'standin' (CHGNet, not DFT), 'vasp' or 'replay'.")] = "standin",
    executor: Annotated[str, typer.Option(help="'local', 'fireworks' or 'jobflow-remote'.")] = "local",
    campaign_dir: Annotated[Path, typer.Option(help="Folder of the job store, queue and results.")] = Path("calc"),
    relax: Annotated[bool, typer.Option("--relax", help="Relax before the single point.")] = False,
    replay_data: Annotated[Optional[Path], typer.Option(help="Labelled data set for --backend replay.")] = None,
) -> None:
    """Calculate structures as jobflow jobs (resumable: stored results are never recomputed)."""
    from rich.progress import Progress

    from screener.calculators import get_calculator
    from screener.errors import InvalidInputError
    from screener.execution import get_executor
    from screener.execution.batch import run_calculations, write_results
    from screener.structures import read_structures

    fidelities = ("pbe", "scan") if fidelity == "both" else (fidelity,)
    if any(f not in ("pbe", "scan") for f in fidelities):
        raise InvalidInputError(f"--fidelity must be pbe, scan or both, not {fidelity!r}")
    options: dict = {"path": replay_data} if backend == "replay" else {}
    if backend != "replay":
        options["relax"] = relax
    calculator = get_calculator(backend, **options)
    records = read_structures(files).records
    items = [(r.structure_id, r.structure) for r in records]
    runner = get_executor(executor, campaign_dir)
    with Progress(transient=True) as bar:
        task = bar.add_task(f"{backend} calculations", total=len(items) * len(fidelities))
        results = run_calculations(
            items, fidelities, calculator=calculator, executor=runner,
            progress=lambda done, total: bar.update(task, advance=1),
        )
    paths = write_results(results, campaign_dir)
    n_ok = sum(r is not None and r.success for r in results)
    n_wait = sum(r is None for r in results)
    typer.echo(
        f"{n_ok}/{len(results)} calculations succeeded, {n_wait} not finished; results in {paths['results']}"
        + "".join(f", {k} in {v}" for k, v in paths.items() if k != "results")
    )

# ---- campaign commands (issue: campaign) ----------------------------------------------------------------------------
# (run, status, report)


@app.command("run")
def run_command(
    budget: Annotated[Optional[float], typer.Option(help="Budget in --budget-unit (new campaigns; a finite number > 0). Change it later with `screener budget`.")] = None,
    candidates: Annotated[Optional[list[Path]], typer.Option(help="Candidate structure files or folders (CIF, POSCAR, extxyz, JSON, CSV): several after one flag (--candidates a.cif b.cif), the flag repeated, a folder, or a quoted glob ('cifs/*.cif'). Default: the 40 shipped MP-20 demo candidates.")] = None,
    model: Annotated[Optional[Path], typer.Option(help="Initial PBE ensemble folder (default: models/ or a cached small one).")] = None,
    scan_model: Annotated[Optional[Path], typer.Option(help="Initial SCAN ensemble folder: the PBE model transferred on r2SCAN data you have (`screener train --init PBE_MODEL --transfer full`). Default: none; SCAN predictions come from the PBE model until the campaign's first SCAN results.")] = None,
    backend: Annotated[Optional[str], typer.Option(help="Calculator back-end: standin (default), vasp or replay.")] = None,
    executor: Annotated[Optional[str], typer.Option(help="Where jobs run: local (default), fireworks or jobflow-remote.")] = None,
    policy: Annotated[Optional[str], typer.Option(help="Policy preset name or YAML file (default: expected-value; also scaling-law, scan-only, pbe-then-scan, random, camd-epsilon-greedy, camd-gp-lcb).")] = None,
    batch: Annotated[Optional[int], typer.Option(help="Calculations per round, at most (default: 16).", min=1)] = None,
    campaign: Annotated[Optional[Path], typer.Option(help="Campaign folder: resumed when it holds one (with its stored options; other values given are refused).")] = None,
    budget_unit: Annotated[Optional[str], typer.Option(help="pbe-equivalent (default: PBE runs of a median candidate) or core-hours.")] = None,
    rounds: Annotated[Optional[int], typer.Option(help="Run at most this many rounds now.", min=1)] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the policy and fine-tuning (default: 0).")] = None,
    references: Annotated[Optional[str], typer.Option(help="Known phases and elemental references of the hulls: auto (default: the back-end's own known phases), standin, shipped (elements only), mp (downloads MP entries), world (replay) or an entries file.")] = None,
    require_competing_phases: Annotated[Optional[bool], typer.Option("--require-competing-phases", help="Refuse to start (new campaigns) when a candidate's PBE or SCAN hull holds only elements.")] = None,
    backend_option: Annotated[Optional[list[str]], typer.Option(help="KEY=VALUE for the back-end, e.g. path=data.json.bz2 (repeatable).")] = None,
    executor_option: Annotated[Optional[list[str]], typer.Option(help="KEY=VALUE for the executor (repeatable), e.g. launchpad=~/fw/launchpad.yaml; see docs/cluster.md.")] = None,
    wait: Annotated[Optional[bool], typer.Option("--wait/--no-wait", help="Wait for the round's calculations, polling the executor (default for local), or submit them and exit (default for fireworks and jobflow-remote); collect later with `screener collect`.")] = None,
    poll_interval: Annotated[Optional[float], typer.Option("--poll-interval", help="Seconds between polls of fireworks / jobflow-remote while waiting (this run only; default: the campaign's, 30).")] = None,
) -> None:
    """Run (or resume) an active-learning campaign until the budget is spent.

    Prints one line per round, read from the ledger: calculations bought per fidelity, candidates stable at SCAN so
    far, budget spent and left, and the model's prospective E_form MAE with its standard error. The INFO lines and
    known warnings of jobflow, CHGNet and other libraries appear only with `screener --verbose run`.

    One process runs a campaign at a time: a second `run` on the same folder exits with code 2 naming the process
    that runs it (status and report work meanwhile). A kill at any point loses nothing: run again to resume.
    """
    from screener.campaign.api import parse_options, run_campaign

    if candidates:
        candidates = _expand_globs(candidates, "--candidates")
    bars, progress = _stage_progress()

    def on_round(summary: dict) -> None:
        bars.console.print(_round_line(summary), highlight=False, soft_wrap=True)
        progress.clear()

    def on_created(record: dict) -> None:
        for line in _competing_phase_lines(record):
            bars.console.print(line, highlight=False, soft_wrap=True, markup=False)

    with bars, _ledger_errors(campaign or Path(".")):
        folder, summary = run_campaign(
            campaign, candidates=candidates, budget=budget, model=model, scan_model=scan_model, backend=backend,
            executor=executor,
            policy=policy, batch_size=batch, budget_unit=budget_unit, rounds=rounds, seed=seed, progress=progress,
            on_round=on_round, on_created=on_created,
            references=references, require_competing_phases=require_competing_phases,
            backend_options=parse_options(backend_option, "--backend-option") if backend_option else None,
            executor_options=parse_options(executor_option, "--executor-option") if executor_option else None,
            wait=wait, poll_interval_s=poll_interval,
        )
    _campaign_outcome(folder, summary)


def _campaign_outcome(folder: Path, summary: dict) -> None:
    typer.echo(f"{folder}: {summary['rounds_run']} round(s) run; {summary['reason']}")
    if summary.get("pending"):
        typer.echo(f"collect with `screener collect {folder}` (e.g. from cron) once workers have run them; "
                   f"see `screener status {folder}`")
        return
    typer.echo(f"see `screener status {folder}`" + ("" if summary["finished"] else f"; resume with `screener run --campaign {folder}`"))


@app.command("collect")
def collect_command(
    campaign_dir: Annotated[Path, typer.Argument(help="Campaign folder whose calculations run on fireworks or jobflow-remote.")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Poll until the round's calculations are back, or (default) collect what has finished and exit.")] = False,
    poll_interval: Annotated[Optional[float], typer.Option("--poll-interval", help="Seconds between polls with --wait (default: the campaign's, 30).")] = None,
    rounds: Annotated[Optional[int], typer.Option(help="Run at most this many rounds now.", min=1)] = None,
) -> None:
    """Collect finished calculations of a campaign submitted with `screener run --no-wait`, and move it on.

    Records what the executor has finished; when a round is complete, updates the hulls, fine-tunes, plans and
    submits the next round, then exits saying what is pending. Safe to run from cron: a second collect while one
    runs exits with code 2. Same as `screener run --campaign CAMPAIGN_DIR --no-wait`.
    """
    from screener.campaign.api import run_campaign
    from screener.campaign.ledger import LEDGER_FILENAME
    from screener.errors import InvalidInputError

    if not (campaign_dir / LEDGER_FILENAME).is_file():
        raise InvalidInputError(f"{campaign_dir} holds no campaign (no {LEDGER_FILENAME})")
    bars, progress = _stage_progress()

    def on_round(summary: dict) -> None:
        bars.console.print(_round_line(summary), highlight=False, soft_wrap=True)
        progress.clear()

    with bars, _ledger_errors(campaign_dir):
        folder, summary = run_campaign(campaign_dir, rounds=rounds, progress=progress, on_round=on_round, wait=wait,
                                       poll_interval_s=poll_interval)
    _campaign_outcome(folder, summary)


@app.command("status")
def status_command(
    campaign_dir: Annotated[Path, typer.Argument(help="Campaign folder.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """Budget, calculations, discoveries, model error and rounds of a campaign (read-only: works while it runs)."""
    import json

    from screener.campaign.status import campaign_status

    status = campaign_status(campaign_dir)
    if json_output:
        typer.echo(json.dumps(status, default=str, allow_nan=False))  # standard JSON: no NaN/Infinity
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    unit = status["budget_unit"]
    console.print(f"[bold]{campaign_dir}[/]  budget: spent {status['budget_spent']:.4g}, reserved "
                  f"{status['budget_reserved']:.4g}, left {status['budget_left']:.4g} of {status['budget_total']:.4g} "
                  f"{unit}" + ("  (finished)" if status["finished"] else ""))
    if status.get("stop_reason"):
        console.print(f"finished: {status['stop_reason']}", markup=False)
    if status.get("running"):
        run = status["running"]
        console.print(f"running: process {run.get('pid', '?')} on host {run.get('host', '?')} since {run.get('since', '?')}")
    calc = Table(title="calculations")
    states = ["planned", "submitted", "done", "failed"]
    for col in ["fidelity", *states]:
        calc.add_column(col)
    for fidelity, counts in sorted(status["calculations"].items()):
        calc.add_row(fidelity, *(str(counts.get(s, 0)) for s in states))
    console.print(calc)
    errors = ", ".join(f"{f} {v:.3f} eV/atom" for f, v in status["model_error"].items()) or "not measured yet"
    threshold_mev = 1000 * float(status.get("stable_threshold_ev_per_atom") or 0.0)
    console.print(f"stable at SCAN level (E_hull <= {threshold_mev:g} meV/atom on the SCAN hull): "
                  f"{status['n_stable_found']} {', '.join(status['stable_found'][:20])}")
    rediscovered = status.get("rediscoveries") or {}
    if rediscovered:  # candidates that ARE known phases: judged without their twin, not new crystals
        console.print(f"rediscoveries (candidates matching a known phase; {len(rediscovered)}): " + ", ".join(
            f"{sid} = {'/'.join(keys)}" for sid, keys in list(rediscovered.items())[:10]))
    console.print(f"model error (prospective MAE of E_form): {errors}")
    table = Table(title="rounds")
    for col in ("round", "state", "PBE", "SCAN", f"cost ({unit})", "MAE PBE", "MAE SCAN"):
        table.add_column(col)
    for r in status["rounds"]:
        if r["state"] == "empty" and not any(r["calculations"].values()):
            continue  # the marker of a finished campaign (said in the first line), not a round that ran
        mae = [r.get(f"mae_{f}_ev_per_atom") for f in ("pbe", "scan")]
        table.add_row(str(r["round"]), r["state"], str(r["calculations"].get("pbe", 0)),
                      str(r["calculations"].get("scan", 0)), f"{r['cost']:.4g}",
                      *("-" if m is None else f"{m:.3f}" for m in mae))
    console.print(table)


@app.command("report")
def report_command(
    campaign_dir: Annotated[Path, typer.Argument(help="Campaign folder (its ledger is only read).")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="MkDocs project folder (default: CAMPAIGN_DIR/report).")] = None,
    build: Annotated[bool, typer.Option("--build/--no-build", help="Run `mkdocs build --strict` (offline) after writing.")] = True,
    title: Annotated[Optional[str], typer.Option(help="Site title.")] = None,
    top: Annotated[int, typer.Option("--top", min=0, help="Candidate pages for the first N selected candidates (found first, then by computed SCAN and PBE E_hull); the candidates table lists them all.")] = 200,
    all_candidates: Annotated[bool, typer.Option("--all-candidates", help="A page for every selected candidate (overrides --top; slow for thousands).")] = False,
) -> None:
    """Write the campaign report as an MkDocs site and build it (offline, strict)."""
    from screener.report import build_report

    bars, progress = _stage_progress()
    with bars, _ledger_errors(campaign_dir):
        result = build_report(campaign_dir, output, build=build, title=title, progress=progress,
                              top_n=None if all_candidates else top)
    typer.echo(f"report of {result.n_selected} selected candidate(s) ({result.n_candidates} with a page) written "
               f"to {result.project_dir}")
    if result.site_dir is not None:
        typer.echo(f"site: {result.index_html} (serve it with `python -m http.server -d {result.site_dir}`)")
    else:
        typer.echo(f"build it with `mkdocs build --strict -f {result.project_dir / 'mkdocs.yml'}`")


@app.command("budget")
def budget_command(
    campaign_dir: Annotated[Path, typer.Argument(help="Campaign folder.")],
    total: Annotated[float, typer.Option("--total", help="New total budget in the campaign's budget unit (finite, > 0, at least what is spent and reserved).")],
) -> None:
    """Change a campaign's total budget, e.g. raise it to continue a finished campaign (recorded as an event)."""
    from screener.campaign.api import set_budget

    with _ledger_errors(campaign_dir):
        old, new, unit = set_budget(campaign_dir, total)
    typer.echo(f"{campaign_dir}: budget {old:g} -> {new:g} {unit}; continue with `screener run --campaign {campaign_dir}`")


@contextlib.contextmanager
def _ledger_errors(campaign_dir: Path):
    """An SQLite error met while reading a campaign (damage quick_check did not see) becomes screener's one line."""
    import sqlite3

    try:
        yield
    except sqlite3.DatabaseError as exc:
        from screener.campaign.ledger import LEDGER_FILENAME, LedgerDamagedError

        raise LedgerDamagedError(Path(campaign_dir) / LEDGER_FILENAME, str(exc)) from None

# ---- world commands (issue: world) ----------------------------------------------------------------------------------
# (world build, candidates)

world_app = typer.Typer(no_args_is_help=True, help="Simulated PBE/SCAN worlds labelled by the stand-in calculators.")
app.add_typer(world_app, name="world")



@world_app.command("build")
def world_build(
    out: Annotated[Path, typer.Option("--out", help="World folder to write.")],
    size: Annotated[int, typer.Option(help="Distinct structures (each gets a PBE and a SCAN entry).", min=1)] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of every random draw (same seed: same world).")] = 0,
    elements: Annotated[Optional[str], typer.Option(help="Restrict to a chemical space, e.g. Li,Fe,O.")] = None,
    real_fraction: Annotated[float, typer.Option(help="Share of real crystals; the rest are substituted.")] = 0.3,
    relax_steps: Annotated[int, typer.Option(help="0: single points (default); N: FIRE relaxation of <= N steps.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Structures per CHGNet forward pass.")] = 64,
    n_jobs: Annotated[Optional[int], typer.Option(help="Graph-building processes (default: all cores).")] = None,
    shard_size: Annotated[int, typer.Option(help="Entries per json.bz2 shard.")] = 1000,
    device: Annotated[str, typer.Option(help="Torch device of the stand-in models.")] = "cpu",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing world in --out.")] = False,
) -> None:
    """Build a simulated world: real + substituted crystals, PBE/SCAN stand-in labels, per-functional hulls."""
    from screener.world.build import build_world

    command = _command_line(
        "world", ("build", True), ("--out", out), ("--size", size), ("--seed", seed), ("--elements", elements),
        ("--real-fraction", real_fraction if real_fraction != 0.3 else None),
        ("--relax-steps", relax_steps or None), ("--overwrite", overwrite),
    )
    bars, callback = _stage_progress()
    with bars:
        manifest = build_world(
            out, size=size, seed=seed, elements=elements, real_fraction=real_fraction, relax_steps=relax_steps,
            batch_size=batch_size, n_jobs=n_jobs, shard_size=shard_size, device=device, overwrite=overwrite,
            command=command, progress=callback,
        )
    c, s = manifest.counts, manifest.statistics
    typer.echo(
        f"{c['n_structures']} structures ({c['n_real']} real, {c['n_hypothetical']} hypothetical), "
        f"{c['n_entries']} entries in {manifest.timings_s['total_s']:.1f} s "
        f"({manifest.throughput_entries_per_s:.1f} entries/s) -> {out}"
    )
    for fidelity in ("pbe", "scan"):
        h = s["e_above_hull"][fidelity]
        typer.echo(
            f"{fidelity}: E_hull median {h['median']:.3f} eV/atom, IQR {h['iqr']:.3f}, stable {h['fraction_stable']:.1%}"
        )
    if "e_above_hull_pearson" in s.get("pbe_vs_scan", {}):
        typer.echo(f"PBE vs SCAN E_hull: Pearson {s['pbe_vs_scan']['e_above_hull_pearson']:.3f}")


@app.command("candidates")
def candidates_command(
    elements: Annotated[str, typer.Option(help="Chemical space, e.g. Li,Fe,O.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="extxyz file to write.")] = Path("candidates.extxyz"),
    prototypes: Annotated[
        Optional[list[Path]], typer.Option(help="Prototype structure files (default: the shipped real crystals).")
    ] = None,
    known: Annotated[
        Optional[list[Path]], typer.Option(help="Known structures/entries; equivalent candidates are dropped.")
    ] = None,
    max_candidates: Annotated[Optional[int], typer.Option(help="Keep the best-ranked N.", min=1)] = None,
    min_elements: Annotated[int, typer.Option(help="Fewest elements per candidate.", min=1)] = 2,
) -> None:
    """Decorate prototypes with the elements of a chemical space; drop duplicates and known structures."""
    from screener.errors import InvalidInputError
    from screener.structures import read_structures, write_structures
    from screener.world.generate import generate_candidates
    from screener.world.prototypes import prototypes_from_records

    protos = None
    if prototypes:
        protos = prototypes_from_records(read_structures(prototypes, skip_invalid=True).require_records().records)
    known_records = read_structures(known, validate=False).records if known else []
    bars, callback = _stage_progress()
    with bars:
        records = generate_candidates(
            elements, prototypes=protos, known=known_records, max_candidates=max_candidates,
            min_elements=min_elements, progress=callback,
        )
    if not records:
        raise InvalidInputError(f"no candidates for {elements}: no prototype fits this chemical space")
    write_structures(records, output)
    typer.echo(f"{len(records)} candidates for {elements} -> {output}")


#: Repeatable options of commands without positional arguments that also take several values after one flag
#: (``run --candidates a.cif b.cif`` = ``--candidates a.cif --candidates b.cif``; click options take one value each).
_VARIADIC_OPTIONS = {"run": ("--candidates",), "rank": ("--candidates",)}


def _spread_variadic_options(argv: list[str]) -> list[str]:
    """Repeat the flag before each further value of a variadic option (see :data:`_VARIADIC_OPTIONS`)."""
    command = next((a for a in argv if not a.startswith("-")), None)
    flags = _VARIADIC_OPTIONS.get(command or "", ())
    if not flags:
        return argv
    out: list[str] = []
    current, n_values = None, 0  # the variadic flag being read and how many values it has so far
    for arg in argv:
        if arg.startswith("-") and arg != "-":
            name, eq, _ = arg.partition("=")
            current, n_values = (name, 1 if eq else 0) if name in flags else (None, 0)
        elif current is not None:
            if n_values:
                out.append(current)
            n_values += 1
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``screener`` script: run the app, turn errors into one line and an exit code."""
    from screener.errors import ScreenerError

    try:
        app(args=_spread_variadic_options(sys.argv[1:] if argv is None else list(argv)), standalone_mode=False)
    except ScreenerError as exc:
        if _STATE["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", None)
        if code is None:
            code = getattr(exc, "code", 0)
        sys.exit(code or 0)
    except KeyboardInterrupt:
        typer.echo("error: interrupted; everything already computed is saved", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the CLI contract is one line, never a traceback
        # Usage errors from typer's (vendored) click: it formats them itself, with the usage line.
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Abort":
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        if _STATE["debug"]:
            raise
        typer.echo(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
