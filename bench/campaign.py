"""Retrospective campaign benchmark: the budget policies side by side on one labelled pool, at equal budget.

Every policy (``expected-value``, ``scaling-law``, ``random``, ``scan-only``, ``pbe-then-scan`` and the CAMD peers
``camd-epsilon-greedy``, ``camd-gp-lcb``) runs a real campaign
(:func:`screener.campaign.api.run_campaign`: ledger, ranking, policy, jobflow jobs, hulls, fine-tuning) with the
``replay`` back-end on the same pool, from the same initial PBE ensemble, with the same budget, batch and seed(s).
The pool is a simulated world (``screener world build``: CHGNet stand-in labels at PBE and SCAN level); its
structures are split once (seeded) into

- a **known** set whose PBE formation energies pre-train the initial ensemble (the "Alexandria" of the campaign),
- the **candidate pool** the campaigns screen (their labels are only revealed through bought calculations).

Ground truth: a candidate is truly stable when its SCAN E_hull in the world's own SCAN hull is <= ``--tol``
(``entry.data["e_above_hull"]`` of the world's SCAN entries; the tolerance only absorbs float noise around 0).

Figures per policy and seed, read from each campaign's ledger:

- ``selected``: candidates the campaign computed with SCAN (its confirmations; competing phases it bought for the
  SCAN hull are candidates of the pool too and count);
- ``found``: selected AND truly stable;
- ``precision`` = found / selected; ``prevalence`` = truly stable / pool size;
- ``daf`` (discovery acceleration factor) = precision / prevalence (1 = no better than random picks);
- ratios of ``found`` and ``daf`` to the ``random`` policy of the same seed;
- the campaign's own claims (candidates on its final SCAN hull, which holds only what it bought) and how many of
  those are truly stable.

Examples
--------
    .venv/bin/python bench/campaign.py --quick      # shared 2-core CPU: ~8.5 min for 3 seeds (--seeds 0: ~4 min)
    python bench/campaign.py --device cuda          # full mode on a GPU machine (defaults in FULL below)
    python bench/campaign.py --quick --seeds 0,1,2,3,4 --policies scaling-law,random,scan-only+lcb

Prints progress to stderr and ONE JSON object on the last line of stdout; writes it to --output too.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import shlex
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

POLICIES = ("expected-value", "scaling-law", "random", "scan-only", "pbe-then-scan", "camd-epsilon-greedy",
            "camd-gp-lcb")
#: the baselines the issue compares against (the default policy is compared too, but is not a baseline); the two
#: ``camd-*`` peers are written from TRI's CAMD multi-fidelity agents
BASELINES = ("random", "scan-only", "pbe-then-scan", "camd-epsilon-greedy", "camd-gp-lcb")
#: one dense chemical space: ~11 % of its structures are on their SCAN hull (a whole-world draw: ~50 %)
ELEMENTS = "Li,Mn,Fe,Co,Ni,O"
QUICK = dict(size=300, elements=ELEMENTS, pool_fraction=0.5, preset="small", members=3, pretrain_epochs=60,
             budget=100.0, batch=5, fine_tune_epochs=10, seeds="0,1,2", calibration_split=0.1)
FULL = dict(size=2500, elements=ELEMENTS, pool_fraction=0.5, preset="paper", members=5, pretrain_epochs=200,
            budget=500.0, batch=20, fine_tune_epochs=30, seeds="0,1,2,3,4", calibration_split=0.1)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def no_new_after_deadline(hh_mm: str, now: float | None = None) -> float:
    """The epoch seconds of the next ``HH:MM`` UTC after ``now`` (a grid started at 22:40 with 00:30 stops tomorrow).

    A plain comparison of clock strings would read 00:30 as already past at 22:40 and start nothing.
    """
    try:
        hours, minutes = (int(part) for part in hh_mm.split(":"))
        if not (0 <= hours < 24 and 0 <= minutes < 60):
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"{hh_mm!r} is not a UTC time HH:MM") from None
    now = time.time() if now is None else now
    midnight = now - now % 86400  # UTC: epoch days are UTC days
    deadline = midnight + 3600 * hours + 60 * minutes
    return deadline if deadline > now else deadline + 86400


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2-core CPU preset: small world, small model, few epochs.")
    p.add_argument("--world", type=Path, help="Existing world folder (default: build one in --work-dir).")
    p.add_argument("--size", type=int, help="Structures of the world to build.")
    p.add_argument("--world-seed", type=int, default=0, help="Seed of the world (and of the known/pool split).")
    p.add_argument("--elements", help=f"Chemical space of a built world (default {ELEMENTS}; 'any': no restriction).")
    p.add_argument("--pool-fraction", type=float, help="Share of the world in the candidate pool (rest: known PBE).")
    p.add_argument("--preset", choices=["small", "paper"], help="CGAT preset of the initial ensemble.")
    p.add_argument("--members", type=int, help="Ensemble members (>= 2 for an uncertainty).")
    p.add_argument("--pretrain-epochs", type=int, help="Epochs of the initial PBE pre-training.")
    p.add_argument("--model", type=Path, help="Initial PBE E_form ensemble (default: pre-train on the known set).")
    p.add_argument("--transfer-from", type=Path, metavar="ENSEMBLE",
                   help="Make each initial PBE ensemble by transferring (full) this pre-trained one on the known "
                        "set's PBE E_form instead of pre-training from scratch: the paper's protocol and a user's "
                        "(`screener train --init models/... --transfer full`), e.g. the shipped "
                        "models/pbe-e-form-small-world20k. Cached apart from the from-scratch models.")
    p.add_argument("--calibration-split", type=float, metavar="FRACTION",
                   help="Hold this share of the known set out of the initial pre-training and fit the ensemble's "
                        "spread calibration on it (calibration.json, as `screener train` writes it from its 10 %% "
                        "test split), so round 1 ranks with a calibrated sigma (default 0.1); 0: train on all of it, "
                        "no calibration (round 1 at scale 1, as in every result file whose settings lack "
                        "calibration_split).")
    p.add_argument("--model-per-seed", action="store_true",
                   help="Pre-train one initial ensemble per campaign seed (training seed = world seed + campaign "
                        "seed; seed 0 keeps the shared one), so the interval over seeds includes the initial "
                        "model's spread, not only the campaign's.")
    p.add_argument("--scan-transfer", action="store_true",
                   help="Start every campaign from a SCAN ensemble as well: its initial PBE ensemble transferred "
                        "(full) on the SCAN E_form of the same known structures, calibrated on the same held-out "
                        "ones (a user's r2SCAN data; the campaign's --scan-model). Without it SCAN predictions come "
                        "from the PBE model until the campaign's first SCAN results.")
    p.add_argument("--known-hull", choices=["none", "pbe", "pbe+scan"], default="pbe+scan",
                   help="Known structures whose entries the campaigns' hulls start with (besides the elemental "
                        "references): none, their PBE entries, or PBE and SCAN (default; like MP's GGA and r2SCAN).")
    p.add_argument("--budget", type=float, help="Budget of every campaign, in PBE-equivalent units.")
    p.add_argument("--batch", type=int, help="Calculations per round (at most), the campaign's --batch.")
    p.add_argument("--fine-tune-epochs", type=int, help="Epochs of each round's fine-tune.")
    p.add_argument("--seeds", help="Comma-separated campaign seeds (every policy runs each seed).")
    p.add_argument("--policies", default=",".join(POLICIES), help="Comma-separated policy presets or YAML files.")
    p.add_argument("--cost", choices=["size", "flat"], default="size",
                   help="Cost model of the replayed calculations: size-dependent (n_sites^2) or flat (every PBE run "
                        "1 unit, every SCAN run 5).")
    p.add_argument("--tol", type=float, default=1e-6, help="SCAN E_hull (eV/atom) at or below which truly stable.")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/screener-bench"), help="Worlds, models, campaigns.")
    p.add_argument("--device", default="auto", help="Torch device for training (auto, cpu, cuda).")
    p.add_argument("--threads", type=int, default=1, help="Torch CPU threads (1 on a shared 2-core CPU).")
    p.add_argument("--no-malloc-tuning", action="store_true",
                   help="Leave glibc's allocator as it is (by default it is tuned as `screener run` tunes it: "
                        "screener.cgat.perf.configure_cpu_allocator).")
    p.add_argument("--finished-only", action="store_true",
                   help="Start no campaign: write the result over the campaigns already finished in --work-dir.")
    p.add_argument("--no-new-after", metavar="HH:MM", type=no_new_after_deadline,
                   help="Start no campaign at or after this UTC time, the next one after the start (past midnight "
                        "if need be; a long grid stops cleanly; rerun to resume).")
    p.add_argument("--output", type=Path, help="JSON result (default bench/results/campaign[_quick].json).")
    args = p.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if str(args.elements).lower() in ("any", "none", ""):
        args.elements = None
    args.seed_list = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    args.policy_list = [s.strip() for s in args.policies.split(",") if s.strip()]
    if not 0.0 <= args.calibration_split < 0.5:
        p.error("--calibration-split must be at least 0 and below 0.5")
    if args.model_per_seed and args.model is not None:
        p.error("--model-per-seed pre-trains the initial ensembles; it cannot take --model")
    if args.transfer_from is not None and args.model is not None:
        p.error("--transfer-from makes the initial ensembles; it cannot take --model")
    if args.transfer_from is not None and not (args.transfer_from / "ensemble.json").is_file():
        p.error(f"--transfer-from {args.transfer_from}: not an ensemble folder (no ensemble.json)")
    if args.output is None:
        args.output = Path(__file__).parent / "results" / ("campaign_quick.json" if args.quick else "campaign.json")
    return args


# ---- the pool ------------------------------------------------------------------------------------------------------
def ensure_world(args: argparse.Namespace) -> tuple[Path, float]:
    """``--world`` or ``<work-dir>/campaign_world_s<size>_seed<seed>[_<elements>]`` (built once, then reused)."""
    from screener.world.build import build_world
    from screener.world.io import MANIFEST_NAME

    if args.world is not None:
        return args.world, 0.0
    tag = f"campaign_world_s{args.size}_seed{args.world_seed}"
    if args.elements:
        tag += "_" + args.elements.replace(",", "")
    out = args.work_dir / tag
    if (out / MANIFEST_NAME).is_file():
        return out, 0.0
    log(f"building world {out} (size {args.size}, seed {args.world_seed}, elements {args.elements or 'any'})")
    t0 = time.perf_counter()
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    build_world(out, size=args.size, seed=args.world_seed, elements=args.elements, overwrite=True, device=device,
                command=f"bench/campaign.py: build_world(size={args.size}, seed={args.world_seed}, "
                        f"elements={args.elements!r})")
    return out, round(time.perf_counter() - t0, 1)


def split_pool(ids: list[str], pool_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of the world into (known, pool) index arrays, each sorted."""
    order = np.random.default_rng([seed, 7]).permutation(len(ids))
    n_pool = int(round(pool_fraction * len(ids)))
    return np.sort(order[n_pool:]), np.sort(order[:n_pool])


def model_seed(args: argparse.Namespace, seed: int) -> int:
    """Training seed of the initial ensemble campaign ``seed`` starts from (the world seed unless
    ``--model-per-seed``)."""
    return args.world_seed + seed if args.model_per_seed else args.world_seed


def transfer_suffix(args: argparse.Namespace) -> str:
    """``_from-<ensemble>`` with --transfer-from (the folders of its models and campaigns), else empty."""
    return f"_from-{args.transfer_from.resolve().name}" if args.transfer_from is not None else ""


def initial_model(args: argparse.Namespace, data: Any, known: np.ndarray, pool: np.ndarray,
                  training_seed: int | None = None) -> tuple[Path, dict]:
    """The PBE E_form ensemble a campaign starts from: ``--model`` or pre-trained on the known set with
    ``training_seed`` (default the world seed), cached in the work folder; with ``--calibration-split`` a seeded
    share of the known set is held out of the training and calibrates the ensemble's spread."""
    if args.model is not None:
        return args.model, {"source": str(args.model)}
    training_seed = args.world_seed if training_seed is None else training_seed
    key = hashlib.sha1(json.dumps([data.structure_ids[i] for i in known]).encode()).hexdigest()[:10]
    # the world seed's model keeps its old folder name, so the runs made before --model-per-seed stay valid
    suffix = "" if training_seed == args.world_seed else f"_ms{training_seed}"
    suffix += f"_cal{args.calibration_split:g}" if args.calibration_split else ""
    suffix += transfer_suffix(args)  # another starting point: another folder
    directory = (args.work_dir / f"campaign_init_{data.world_dir.name}_{args.preset}_m{args.members}"
                 f"_e{args.pretrain_epochs}_{key}{suffix}")
    if args.transfer_from is not None:
        return train_initial(args, data, known, pool, directory, training_seed, "pbe",
                             source=f"{args.transfer_from.resolve().name} transferred (full) on the PBE E_form of "
                                    "the known set", init=args.transfer_from.resolve())
    return train_initial(args, data, known, pool, directory, training_seed, "pbe",
                         source="pre-trained on the PBE E_form of the known set")


def initial_scan_model(args: argparse.Namespace, data: Any, known: np.ndarray, pool: np.ndarray, pbe_dir: Path,
                       training_seed: int) -> tuple[Path, dict]:
    """``--scan-transfer``: the PBE ensemble ``pbe_dir`` transferred (full, the paper's learning rate) on the SCAN
    E_form of the known structures it was trained on, calibrated on the same held-out ones; cached beside it."""
    return train_initial(args, data, known, pool, pbe_dir.with_name(f"{pbe_dir.name}_scanT"), training_seed, "scan",
                         source=f"{pbe_dir.name} transferred (full) on the SCAN E_form of the known set", init=pbe_dir)


def train_initial(args: argparse.Namespace, data: Any, known: np.ndarray, pool: np.ndarray, directory: Path,
                  training_seed: int, fidelity: str, *, source: str, init: Path | None = None) -> tuple[Path, dict]:
    """Train (``init``: transfer in full from it) an ensemble on the ``fidelity`` E_form of the known set but a
    seeded calibration share, calibrate its spread on that share, and cache it in ``directory`` (read back when
    ``bench_pretrain.json`` is there; a second process that needs it meanwhile waits for it: :func:`training_lock`)."""
    info_path = directory / "bench_pretrain.json"
    if info_path.is_file():
        return directory, json.loads(info_path.read_text())
    with training_lock(directory):
        if info_path.is_file():  # another benchmark process trained it while this one waited
            log(f"{directory.name}: trained meanwhile by another process, read back")
            return directory, json.loads(info_path.read_text())
        return _train_initial_locked(args, data, known, pool, directory, training_seed, fidelity, source=source,
                                     init=init)


@contextlib.contextmanager
def training_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<directory>.lock`` while an initial ensemble is trained into ``directory``.

    Two benchmark processes started together (one per core, each with its own seeds) need the same models; without
    the lock both trained into one folder, the second wiping the first's files. The second now waits and reads the
    first's model back. The kernel drops the lock if the holder dies, so a killed run never leaves it stuck.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.with_name(directory.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _train_initial_locked(args: argparse.Namespace, data: Any, known: np.ndarray, pool: np.ndarray,
                          directory: Path, training_seed: int, fidelity: str, *, source: str,
                          init: Path | None) -> tuple[Path, dict]:
    """The training of :func:`train_initial`, run under its lock."""
    from screener.world.experiments import train_and_test

    info_path = directory / "bench_pretrain.json"
    train, held = split_pool([data.structure_ids[i] for i in known], calibration_share(args, len(known)),
                             training_seed)
    train, held = known[train], known[held]
    log(f"{'transferring ' + init.name + ' to' if init else 'pre-training'} {fidelity.upper()} on {len(train)} known "
        f"structures ({args.members} members, {args.pretrain_epochs} epochs, seed {training_seed}; {len(held)} held "
        "out to calibrate its spread)")
    shutil.rmtree(directory, ignore_errors=True)
    result = train_and_test(data, fidelity, "e_form", train, pool, directory=directory, preset=args.preset,
                            epochs=args.pretrain_epochs, n_members=args.members, init=init,
                            transfer="full" if init else None, seed=training_seed, device=args.device)
    info = {"source": source, "n_train": result["n_train"],
            f"pool_{fidelity}_e_form_mae_ev_per_atom": result["test_mae_ev_per_atom"], "wall_s": result["wall_s"],
            "preset": args.preset, "members": args.members, "epochs": args.pretrain_epochs,
            "training_seed": training_seed}
    if len(held):
        info["calibration"] = calibrate_initial_model(directory, data, held, fidelity)
    info_path.write_text(json.dumps(info, indent=1))
    return directory, info


def calibration_share(args: argparse.Namespace, n_known: int) -> float:
    """Share of the known set held out to calibrate the initial model: ``--calibration-split``, raised to the
    ``HELD_OUT_MIN_ERRORS`` (20) structures a fit needs; 0 without a split. Exits when that is half the set or more."""
    from screener.policies.calibration import HELD_OUT_MIN_ERRORS

    if not args.calibration_split:
        return 0.0
    share = max(args.calibration_split, HELD_OUT_MIN_ERRORS / max(n_known, 1))
    if share >= 0.5:
        raise SystemExit(f"--calibration-split: {n_known} known structures are too few to hold out "
                         f"{HELD_OUT_MIN_ERRORS} for the calibration; use --calibration-split 0")
    return share


def calibrate_initial_model(directory: Path, data: Any, held: np.ndarray, fidelity: str = "pbe") -> dict[str, Any]:
    """Fit the spread calibration of the ensemble in ``directory`` on the known structures ``held`` out of its
    training (their ``fidelity`` E_form) and write it to ``calibration.json``, as `screener train` does on its test
    split."""
    from screener.cgat import CGATEnsemble
    from screener.cgat.ensemble import write_held_out_calibration
    from screener.policies.calibration import HELD_OUT_MIN_ERRORS

    pred = CGATEnsemble.load(directory).predict([data.graphs[i] for i in held])
    errors = np.asarray(pred.mean, float) - data.labels[(fidelity, "e_form")][held]
    fit = write_held_out_calibration(directory, errors, pred.std, command="bench/campaign.py --calibration-split",
                                     source=f"{len(held)} known structures held out of the bench's initial "
                                            "pre-training")
    if fit is None:
        raise SystemExit(f"--calibration-split holds out {len(held)} known structures; the fit needs at least "
                         f"{HELD_OUT_MIN_ERRORS}")
    return {"n_held_out": int(len(held)), "mae_ev_per_atom": float(np.mean(np.abs(errors))),
            **fit.model_dump(mode="json")}


def write_pool(path: Path, world: Any, pool_ids: list[str]) -> Path:
    """The candidate file of the campaigns: the pool's unlabelled input structures (extxyz, ids kept), replaced whole
    (:func:`~screener.structures.writer.write_structures`), so a campaign started at the same time never reads it torn."""
    from screener.structures import StructureRecord
    from screener.structures.writer import write_structures

    by_id = {e.data["structure_id"]: e.structure for e in world.entries["pbe"]}
    return write_structures([StructureRecord(structure_id=s, structure=by_id[s]) for s in pool_ids], path)


def write_references(path: Path, world: Any, known_ids: list[str], mode: str) -> Path:
    """The campaigns' reference phases: the world's elemental references plus the known structures' entries."""
    from monty.json import MontyEncoder

    from screener.cgat.checkpoint import atomic_write_text

    items = [e.as_dict() for f in ("pbe", "scan") for e in world.references.get(f, [])]
    known = set(known_ids)
    for fidelity in {"none": (), "pbe": ("pbe",), "pbe+scan": ("pbe", "scan")}[mode]:
        items += [e.as_dict() for e in world.entries[fidelity] if e.data["structure_id"] in known]
    atomic_write_text(path, json.dumps(items, cls=MontyEncoder))  # campaigns started at once read it meanwhile
    return path


# ---- one campaign --------------------------------------------------------------------------------------------------
def policy_file(spec: str, seed: int, directory: Path) -> Path:
    """The preset (or YAML) with ``seed`` as its own seed (the random policy draws from ``[policy.seed, round]``;
    the campaign's seed does not reach it). ``NAME+ACQ`` swaps the acquisition, e.g. ``scan-only+lcb``."""
    from screener.policies import load_policy
    from screener.policies.config import save_policy

    name, _, acquisition = spec.partition("+")
    policy = load_policy(name)
    update: dict[str, Any] = {"seed": seed}
    if acquisition:
        update["acquisition"] = policy.acquisition.model_copy(update={"kind": acquisition})
        update["name"] = f"{policy.name}+{acquisition}"
    policy = policy.model_copy(update=update)
    return save_policy(policy, directory / f"{policy.name}_seed{seed}.yaml")


def tune_allocator(args: argparse.Namespace) -> bool:
    """Tune glibc's allocator as `screener run` does (its CLI tunes it for every command that runs the network),
    unless ``--no-malloc-tuning``; True when tuned. Untuned, every forward pass page-faults its activations afresh:
    the campaigns here then spent more CPU time in the kernel than in the network's arithmetic."""
    if getattr(args, "no_malloc_tuning", False):
        return False
    from screener.cgat.perf import configure_cpu_allocator

    return configure_cpu_allocator()


def run_one(args: argparse.Namespace, *, policy: str, seed: int, campaign_dir: Path, pool_file: Path, model: Path,
            world: Any, references: Path, scan_model: Path | None = None) -> dict[str, Any]:
    """Run one campaign to the end of its budget; return its ledger's figures."""
    from screener.campaign.api import run_campaign
    from screener.campaign.folder import CampaignBusyError, lock_holder
    from screener.campaign.status import campaign_status

    holder = lock_holder(campaign_dir)
    if holder is not None:  # another benchmark process runs this very campaign: deleting it would wreck both
        raise CampaignBusyError(f"{campaign_dir} is being run by process {holder.get('pid', '?')} on host "
                                f"{holder.get('host', '?')}")
    shutil.rmtree(campaign_dir, ignore_errors=True)  # an unfinished campaign (killed) starts afresh
    campaign_dir.parent.mkdir(parents=True, exist_ok=True)
    yaml_path = policy_file(policy, seed, campaign_dir.parent)
    t0 = time.perf_counter()

    def progress(stage: str, done: int, total: int) -> None:
        if stage.endswith("ranking") and done == 0:
            logging.getLogger("bench.campaign").info("%s, seed %s: %s", policy, seed, stage)

    options: dict[str, Any] = {"path": world.replay_paths()}
    if args.cost == "flat":
        options["cost_model"] = {"exponent": 0.0}
    _, summary = run_campaign(
        campaign_dir, candidates=[pool_file], budget=args.budget, model=model, scan_model=scan_model,
        backend="replay", executor="local",
        policy=str(yaml_path), batch_size=args.batch, budget_unit="pbe-equivalent", seed=seed,
        references=str(references),
        backend_options=options, fine_tune_epochs=args.fine_tune_epochs, progress=progress,
    )
    wall = time.perf_counter() - t0
    status = campaign_status(campaign_dir)
    return {"summary": summary, "status": status, "wall_s": round(wall, 1), **ledger_calculations(campaign_dir),
            "code": _code_version()}


def _code_version() -> str | None:
    """The commit the campaign ran (``SCREENER_BENCH_COMMIT`` for a copy without .git, else ``git rev-parse``), with
    ``+changes`` when the package or the presets differ from it (the run used code no commit holds)."""
    import os
    import subprocess

    if os.environ.get("SCREENER_BENCH_COMMIT"):
        return os.environ["SCREENER_BENCH_COMMIT"]
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
        changed = subprocess.run(["git", "status", "--porcelain", "--", "screener", "policies"], cwd=root,
                                 capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+changes" if head and changed else head


def ledger_calculations(campaign_dir: Path) -> dict[str, Any]:
    """Structure ids with a successful calculation per fidelity, and the rounds, from a campaign's ledger."""
    from screener.campaign.ledger import Ledger

    with Ledger.in_dir(campaign_dir) as ledger:
        jobs = ledger.jobs()
        done = {f: sorted({j.structure_id for j in jobs if j.fidelity == f and j.state == "done"})
                for f in ("pbe", "scan")}
        failed = sum(1 for j in jobs if j.state == "failed")
        first_scan_round = {}
        for j in jobs:
            if j.fidelity == "scan" and j.state == "done":
                first_scan_round[j.structure_id] = j.round
    return {"done": done, "n_failed": failed, "scan_round": first_scan_round}


def score(run: dict[str, Any], truth: dict[str, bool], prevalence: float) -> dict[str, Any]:
    """Found, precision and DAF of one campaign against the world's ground truth."""
    selected = [s for s in run["done"]["scan"] if s in truth]
    found = [s for s in selected if truth[s]]
    screened_pbe = [s for s in run["done"]["pbe"] if s in truth]
    claims = [s for s in run["status"]["stable_found"] if s in truth]
    precision = len(found) / len(selected) if selected else float("nan")
    rounds = sorted(set(run["scan_round"].values()))
    found_by_round = [sum(1 for s in found if run["scan_round"][s] <= r) for r in rounds]
    return {
        "found": len(found),
        "selected": len(selected),
        "precision": precision,
        "daf": precision / prevalence if prevalence > 0 and selected else float("nan"),
        "n_pbe": len(screened_pbe),
        "n_scan": len(selected),
        "pbe_screened_truly_stable": sum(1 for s in screened_pbe if truth[s]),
        "campaign_claims_stable": len(claims),
        "campaign_claims_truly_stable": sum(1 for s in claims if truth[s]),
        "found_by_round": dict(zip(map(str, rounds), found_by_round, strict=True)),
        "rounds": run["summary"]["rounds_run"],
        "budget_spent": run["status"]["budget_spent"],
        "budget_left": run["status"]["budget_left"],
        "stop_reason": run["status"].get("stop_reason"),  # the policy stopped with budget left (the stop rule)
        "n_failed": run["n_failed"],
        "wall_s": run["wall_s"],
        "code": run.get("code"),
    }


def oracle(pool_ids: list[str], truth: dict[str, bool], scan_cost: dict[str, float], budget: float) -> dict:
    """Upper bound at this budget: SCAN-confirm truly stable candidates, cheapest first, until the budget ends."""
    spent, n = 0.0, 0
    for c in sorted(scan_cost[s] for s in pool_ids if truth[s]):
        if spent + c > budget:
            break
        spent, n = spent + c, n + 1
    n_affordable, spent_any = 0, 0.0
    for c in sorted(scan_cost[s] for s in pool_ids):
        if spent_any + c > budget:
            break
        spent_any, n_affordable = spent_any + c, n_affordable + 1
    return {"max_found": n, "max_scan_calculations": n_affordable}


def policy_name(spec: str) -> str:
    """``scaling-law`` for a preset, the file stem for a YAML path."""
    return Path(spec).stem if spec.endswith((".yaml", ".yml")) else spec


def aggregate(values: list[float]) -> dict[str, Any]:
    """Mean, std, range and the 95 % t-interval of the mean over seeds."""
    from scipy.stats import t as student_t

    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if v.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0, "ci95": None}
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    half = float(student_t.ppf(0.975, v.size - 1) * sd / np.sqrt(v.size)) if v.size > 1 else float("nan")
    ci = [round(float(v.mean()) - half, 4), round(float(v.mean()) + half, 4)] if np.isfinite(half) else None
    return {"mean": round(float(v.mean()), 4), "std": round(sd, 4), "min": round(float(v.min()), 4),
            "max": round(float(v.max()), 4), "n": int(v.size), "ci95": ci}


# ---- main ----------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="[%(asctime)s] %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("bench.campaign").setLevel(logging.INFO)
    logging.getLogger("jobflow").setLevel(logging.WARNING)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    malloc_tuning = tune_allocator(args)
    from screener.calculators.cost import CostModel
    from screener.campaign.folder import CampaignBusyError
    from screener.world.experiments import bench_environment, load_world_data
    from screener.world.io import read_world

    t_start = time.perf_counter()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    world_dir, build_s = ensure_world(args)
    world = read_world(world_dir)
    data = load_world_data(world_dir, n_jobs=1)
    ids = data.structure_ids
    known, pool = split_pool(ids, args.pool_fraction, args.world_seed)
    pool_ids = [ids[i] for i in pool]
    e_hull_scan = data.labels[("scan", "e_above_hull")]
    truth = {ids[i]: bool(e_hull_scan[i] <= args.tol) for i in pool}
    n_stable = sum(truth.values())
    prevalence = n_stable / len(pool_ids)
    log(f"world {world_dir}: {len(ids)} structures; known {len(known)}, pool {len(pool_ids)} with {n_stable} truly "
        f"SCAN-stable (prevalence {prevalence:.3f})")
    # per campaign seed: the ensemble it starts from (pre-trained when its first campaign needs it; with
    # --model-per-seed the world seed's shared model only when campaign seed 0 runs)
    seed_models: dict[int, tuple[Path, dict]] = {}
    seed_scan_models: dict[int, tuple[Path, dict]] = {}  # --scan-transfer: each seed's initial SCAN ensemble

    run_root = args.work_dir / f"campaign_runs_{world_dir.name}"
    pool_file = write_pool(run_root / "pool.extxyz", world, pool_ids)
    references = write_references(run_root / f"references_{args.known_hull}.json", world,
                                  [ids[i] for i in known], args.known_hull)
    cost = CostModel(exponent=0.0) if args.cost == "flat" else CostModel()
    sites = {e.data["structure_id"]: len(e.structure) for e in world.entries["pbe"]}
    median_sites = sorted(sites[s] for s in pool_ids)[(len(pool_ids) - 1) // 2]
    unit = cost.cpu_hours(median_sites, "pbe")
    scan_cost = {s: cost.cpu_hours(sites[s], "scan") / unit for s in pool_ids}
    bound = oracle(pool_ids, truth, scan_cost, args.budget)

    runs: dict[str, dict[str, dict]] = {p: {} for p in args.policy_list}
    stats = world.manifest.statistics

    def initial_model_info(shared: bool) -> dict | None:
        """The initial model of the campaigns run or read back so far: the world seed's (``shared``; every seed's
        without --model-per-seed) or any seed's; None before any (--model-per-seed --seeds 5 never trains the world
        seed's model)."""
        if args.model is not None:
            return {"source": str(args.model)}
        found = [(s_, info) for s_, (_, info) in seed_models.items()]
        found += [(int(s_), r["initial_model"]) for by_seed in runs.values() for s_, r in sorted(by_seed.items())
                  if "initial_model" in r]
        return next((info for s_, info in found if not shared or model_seed(args, s_) == args.world_seed), None)

    def result(complete: bool) -> dict[str, Any]:
        """The JSON result over the campaigns finished so far (written after each one, so a stopped grid keeps
        its figures; ``complete`` is false until every policy has run every seed)."""
        out = {
            "benchmark": "campaign",
            "mode": "quick (2-core CPU, one small chemical space, small preset, few epochs)" if args.quick else "full",
            "command": "python bench/campaign.py " + " ".join(
                shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
            "complete": complete,
            **bench_environment(args.device),
            "malloc_tuning": malloc_tuning,
            "world": {"dir": str(world_dir), "n_structures": len(ids), "seed": args.world_seed,
                      "elements": world.manifest.elements, "build_s": build_s,
                      "label": "CHGNet stand-in labels, not DFT", "pbe_vs_scan": stats.get("pbe_vs_scan")},
            "pool": {"n_known_pbe": int(len(known)), "n_candidates": len(pool_ids), "n_truly_stable": n_stable,
                     "prevalence": round(prevalence, 4), "stable_tol_ev_per_atom": args.tol,
                     "median_sites": median_sites},
            "initial_model": initial_model_info(shared=True),
            "initial_model_per_seed": ({s_: r["initial_model"] for by_seed in runs.values()
                                        for s_, r in sorted(by_seed.items()) if "initial_model" in r}
                                       if args.model_per_seed else None),
            "settings": {"budget_pbe_equivalent": args.budget, "batch": args.batch,
                         "fine_tune_epochs": args.fine_tune_epochs, "seeds": args.seed_list,
                         "policies": [policy_name(p) for p in args.policy_list], "backend": "replay",
                         "executor": "local", "known_hull": args.known_hull, "torch_threads": args.threads,
                         "pool_fraction": args.pool_fraction, "preset": args.preset, "members": args.members,
                         "pretrain_epochs": args.pretrain_epochs, "model_per_seed": args.model_per_seed,
                         "calibration_split": args.calibration_split, "scan_transfer": args.scan_transfer,
                         "transfer_from": str(args.transfer_from) if args.transfer_from else None},
            "definitions": {
                "selected": "pool candidates the campaign computed with SCAN (successful jobs in its ledger)",
                "found": "selected AND SCAN E_hull <= tol in the world's own SCAN hull",
                "precision": "found / selected", "prevalence": "truly stable / pool candidates",
                "daf": "precision / prevalence", "vs_random": "per seed ratio to the random policy, then mean",
                "vs_best_baseline": "per seed found_per_unit over the best of the other baselines that finished "
                                    "that seed, then mean and t-interval over those seeds",
                "found_per_unit": "found / budget_spent (a policy that stops early is judged on what it spent)",
                "found_per_budget": "found / the budget given (the whole budget, spent or not)",
                "oracle": "truly stable candidates SCAN-confirmed cheapest first until the budget ends",
            },
            "oracle": {**bound, "found_per_unit": bound["max_found"] / args.budget,
                       "daf": 1 / prevalence if prevalence else None},
            "cost_model": "flat: PBE 1, SCAN 5 units" if args.cost == "flat" else "size-dependent (n_sites^2)",
            "summary": summarise(runs, args.seed_list, args.budget),
            "runs": {policy_name(p): v for p, v in runs.items()},
            "caveats": caveats(args, prevalence, bound, len(args.seed_list), initial_model_info(shared=False) or {}),
            "wall_s": round(time.perf_counter() - t_start, 1),
        }
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(out, indent=1) + "\n")
        return out

    for seed in args.seed_list:
        for policy in args.policy_list:
            name = policy_name(policy)
            # each finished campaign's figures are kept beside it: a killed benchmark resumes where it stopped
            tag = f"{name}_{args.cost}_b{args.budget:g}"
            if model_seed(args, seed) != args.world_seed:
                tag += f"_ms{model_seed(args, seed)}"
            if args.scan_transfer:
                tag += "_scanT"
            tag += transfer_suffix(args)  # never read back a campaign of a from-scratch model
            done_file = run_root / f"seed{seed}" / f"{tag}.score.json"
            if done_file.is_file():
                runs[policy][str(seed)] = json.loads(done_file.read_text())
                log(f"seed {seed}: {name}: finished before, figures read from {done_file}")
                continue
            if args.finished_only:
                continue
            if args.no_new_after and time.time() >= args.no_new_after:
                until = time.strftime("%Y-%m-%d %H:%M", time.gmtime(args.no_new_after))
                log(f"seed {seed}: {name}: not started (--no-new-after: {until} UTC has passed)")
                continue
            if seed not in seed_models:
                seed_models[seed] = initial_model(args, data, known, pool, model_seed(args, seed))
            if args.scan_transfer and seed not in seed_scan_models:
                seed_scan_models[seed] = initial_scan_model(args, data, known, pool, seed_models[seed][0],
                                                            model_seed(args, seed))
            log(f"seed {seed}: {name} campaign (budget {args.budget:g} PBE-equivalents, batch {args.batch})")
            try:
                run = run_one(args, policy=policy, seed=seed, campaign_dir=run_root / f"seed{seed}" / tag,
                              pool_file=pool_file, model=seed_models[seed][0], world=world, references=references,
                              scan_model=seed_scan_models[seed][0] if args.scan_transfer else None)
            except CampaignBusyError as exc:  # a second benchmark on the same work dir: leave it that campaign
                log(f"seed {seed}: {name}: skipped, {exc}")
                continue
            runs[policy][str(seed)] = s = score(run, truth, prevalence)
            s["found_per_unit"] = s["found"] / s["budget_spent"] if s["budget_spent"] else float("nan")
            s["initial_model"] = {"dir": str(seed_models[seed][0]), **seed_models[seed][1]}
            if args.scan_transfer:
                s["initial_scan_model"] = {"dir": str(seed_scan_models[seed][0]), **seed_scan_models[seed][1]}
            s["fraction_of_oracle"] = s["found"] / bound["max_found"] if bound["max_found"] else float("nan")
            # the process that ran it (the result's "command" may be a later --finished-only summary)
            s["command"] = "python bench/campaign.py " + " ".join(
                shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
            done_file.write_text(json.dumps(s, indent=1))
            log(f"seed {seed}: {name}: found {s['found']} of {s['selected']} SCAN-confirmed "
                f"(+{s['n_pbe']} PBE), DAF {s['daf']:.2f}, {s['rounds']} rounds, {s['wall_s']:.0f} s")
            result(complete=False)

    out = result(complete=all(str(s_) in runs[p] for p in args.policy_list for s_ in args.seed_list))
    print(json.dumps(out))
    return out


def summarise(runs: dict[str, dict[str, dict]], seed_list: list[int], budget: float | None = None
              ) -> dict[str, Any]:
    """Per policy: figures over the seeds it finished, with ratios to the best other baseline and to random taken
    per seed where those finished the same seed. With ``budget``, also found per unit of the budget *given*
    (``found_per_budget``) and its ratio to the best baseline: a policy that stops early (the expected-value stop
    rule) is judged on what it spent in ``found_per_unit`` and on the whole budget here."""
    summary: dict[str, Any] = {}
    base = "random" if "random" in runs else None
    for policy, by_seed in runs.items():
        seeds = [str(s) for s in seed_list if str(s) in by_seed]
        row: dict[str, Any] = {k: aggregate([by_seed[s].get(k, float("nan")) for s in seeds])
                               for k in ("found", "found_per_unit", "fraction_of_oracle", "selected", "precision",
                                         "daf", "n_pbe", "n_scan", "budget_spent", "wall_s")}
        # per seed: found per unit over the best baseline of that seed (the interval is over seeds)
        baselines = [b for b in BASELINES if b in runs and b != policy]
        for key, per in (("found_per_unit", None), ("found_per_budget", budget)):
            if per is not None:
                row[key] = aggregate([by_seed[s]["found"] / per for s in seeds])
            ratios = []
            for s_ in seeds:
                value = {b: runs[b][s_]["found_per_unit"] if per is None else runs[b][s_]["found"] / per
                         for b in baselines if s_ in runs[b]}
                if value:
                    best = max(value.values())
                    mine = by_seed[s_]["found_per_unit"] if per is None else by_seed[s_]["found"] / per
                    ratios.append(mine / best if best > 0 else float("nan"))
            if ratios:
                row[f"{key}_vs_best_baseline"] = aggregate(ratios)
        if base is not None:
            both = [s_ for s_ in seeds if s_ in runs[base]]
            row["found_vs_random"] = aggregate([by_seed[s]["found"] / runs[base][s]["found"]
                                                if runs[base][s]["found"] else float("nan") for s in both])
            row["daf_vs_random"] = aggregate([by_seed[s]["daf"] / runs[base][s]["daf"]
                                              if runs[base][s]["daf"] and np.isfinite(runs[base][s]["daf"])
                                              else float("nan") for s in both])
        summary[policy_name(policy)] = row
    return summary


def caveats(args: argparse.Namespace, prevalence: float, bound: dict, n_seeds: int, model_info: dict) -> list[str]:
    """What the numbers can and cannot show at this size (written into the result)."""
    notes = [
        "Labels are CHGNet stand-ins (0.3.0 for PBE, r2scan for SCAN), not DFT; the two 'functionals' agree far "
        "more closely than PBE and r2SCAN do, which flatters PBE screening.",
        f"With a prevalence of {prevalence:.2f} the DAF cannot exceed {1 / prevalence:.2f} (every pick stable); "
        "a sparse world puts most structures on their hull, unlike real data (a few %).",
        f"The budget buys at most ~{bound['max_scan_calculations']} SCAN calculations; found counts differ by "
        "small integers and a difference of 1-2 is within seed noise.",
    ]
    mae = model_info.get("pool_pbe_e_form_mae_ev_per_atom")
    if mae is not None and args.transfer_from is not None:
        notes.append(f"The initial ensemble is {args.transfer_from.name} (pre-trained elsewhere) transferred on "
                     f"{model_info['n_train']} PBE structures of the known set; its PBE E_form MAE on the pool is "
                     f"{mae:.2f} eV/atom. Its pre-training set may hold some of this world's structures at PBE level "
                     "(never their SCAN labels).")
    elif mae is not None:
        notes.append(f"The initial ensemble is pre-trained on {model_info['n_train']} PBE structures only; its PBE "
                     f"E_form MAE on the pool is {mae:.2f} eV/atom, so its ranking is weak and every model-guided "
                     "policy is limited by it (the paper's model saw ~1.8 M PBE structures).")
    if args.scan_transfer:
        notes.append("--scan-transfer: every campaign (each baseline too) starts from a SCAN ensemble, its initial PBE "
                     "ensemble transferred on the SCAN E_form of the same known structures (initial_scan_model of each "
                     "run): SCAN predictions are the SCAN model's from round 1, and its training set is N_s0.")
    if n_seeds < 3:
        notes.append(f"{n_seeds} seed(s): no meaningful spread; run --seeds 0,1,2,3,4 for mean and std.")
    if args.fine_tune_epochs < 10:
        notes.append(f"{args.fine_tune_epochs} fine-tune epochs per round: the models barely learn from the "
                     "campaign's data, so policies that rely on learning (scaling-law, pbe-then-scan) are "
                     "handicapped relative to a full run.")
    return notes


if __name__ == "__main__":
    main()
