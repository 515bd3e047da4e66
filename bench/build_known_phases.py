"""Build the stand-in back-end's known-phase set and pick the demo candidates (shipped as package data).

The campaign's hulls must hold the *known* phases of every candidate's chemical system, as Materials Project's GGA and
r2SCAN sets do for a DFT campaign. For the offline stand-in back-end that set is made here: real Materials Project
structures (three licence-clean sources, below) labelled with the same stand-in calculators the campaign uses
(CHGNet 0.3.0 for PBE, CHGNet r2scan for SCAN, batched single points: ``screener.calculators.standin.energies_batch``,
exactly how ``prepare_references(..., "standin")`` makes the elemental references).

Steps (deterministic; no random draw):

1. read every structure of the sources; de-duplicate by id and by pymatgen ``StructureMatcher`` (default tolerances)
   within each reduced formula, keeping the first of ``mp20-test, mp20-val, mp20-train, Li-Fe-O entries, phonons``;
2. pick the 40 demo candidates in the one chemical space the sources cover completely, Li-Fe-O (emmet's test file
   holds all 375 MP entries of Li-Fe-O and its subsystems, so its hull is MP's hull; the other sources are samples
   of MP with few phases per system): MP structures (MP-20 rows or MP entries, not the phonon set, which has no MP
   ids) of Fe-Li-O and its subsystems with >= 2 elements and at most ``--max-sites`` (12) sites, not in the demo
   training set (``screener/data/demo/mp20_train_200.csv``), no site without a neighbour within 6 A (CHGNet refuses
   those), taken round-robin over the chemical systems (sorted by name), each system's structures by (number of
   sites, material_id), skipping a pick that would leave a candidate's system with fewer than ``--min-known`` (3)
   known compounds once the candidates are held out;
3. the known set is every other de-duplicated structure (the candidates and everything matching them are held
   OUT: a candidate is never its own competing phase), plus the elemental ground state of every element (MP's
   lowest GGA polymorph, MatPES's where MP's file lacks the element: the rule of ``prepare_references``);
4. label all of it at both fidelities, drop non-finite energies, write ``standin_known_phases.json.gz``;
5. label the demo candidates at SCAN and PBE and report how many lie on/below the stand-in hulls of the known set
   (the stable share the demo should find).

Examples
--------
    .venv/bin/python bench/build_known_phases.py            # ~5-10 min on a shared 2-core CPU

Prints progress to stderr and ONE JSON object on the last line of stdout (also written to
``bench/results/build_known_phases.json``).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import logging
import shlex
import sys
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT_DIR = ROOT / "screener" / "data" / "known_phases"
CANDIDATES_CSV = ROOT / "screener" / "data" / "demo_candidates" / "mp_li_fe_o_40.csv"
TRAIN_CSV = ROOT / "screener" / "data" / "demo" / "mp20_train_200.csv"
SOURCE_ORDER = ("mp20-test", "mp20-val", "mp20-train", "mp-Li-Fe-O", "matbench-phonons")
SOURCES = {
    "mp20": "OPRYAN90/cdvae@437566befc3b53756d8b18f1fe885fbae84e49a6 data/mp_20/{train,val,test}.csv (MIT; data MP, "
            "CC BY 4.0)",
    "matbench-phonons": "CompRhys/aviary@a021eb723a5128d45df7387ba57ec50a4834afe9 tests/data/matbench_phonons.json.gz "
                        "(MIT; data MP, CC BY 4.0)",
    "mp-Li-Fe-O": "materialsproject/emmet@fbe8656b65647e69f30b09090da4135e95d8b2f7 test_files/Li-Fe-O.json.gz "
                  "(LBNL modified BSD; data MP, CC BY 4.0)",
    "elemental": "materialsvirtuallab/matcalc@aa76b41edb9ffb62f7efb2b5d3a3f7a8b2b4747d "
                 "src/matcalc/elemental_refs/{MP-PBE,MatPES-PBE}-Element-Refs.json.gz (BSD-3-Clause)",
}

log = logging.getLogger("build_known_phases")
csv.field_size_limit(1 << 30)


def _read_sources(shared: Path) -> list[dict[str, Any]]:
    from monty.serialization import loadfn
    from pymatgen.core import Structure

    pool: list[dict[str, Any]] = []
    for split in ("test", "val", "train"):
        with open(shared / "structures" / "mp_20_subset" / f"{split}.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "fractional coordinates rounded" notes of the CIF parser
                    structure = Structure.from_str(row["cif"], fmt="cif")
                pool.append({"id": row["material_id"], "source": f"mp20-{split}", "structure": structure, "row": row})
    for entry in loadfn(shared / "mp_entries" / "Li-Fe-O.json.gz"):
        mid = (entry.data or {}).get("material_id") or entry.entry_id
        pool.append({"id": str(mid), "source": "mp-Li-Fe-O", "structure": entry.structure, "entry": entry})
    with gzip.open(shared / "structures" / "aviary" / "matbench_phonons.json.gz", "rt") as fh:
        raw = json.load(fh)
    col = raw["columns"].index("structure")
    for index, row in zip(raw["index"], raw["data"], strict=True):  # MP structures without their MP ids
        pool.append({"id": f"matbench_phonons:{index}", "source": "matbench-phonons",
                     "structure": Structure.from_dict(row[col])})
    return pool


def _deduplicate(pool: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Unique structures (first by SOURCE_ORDER, then id) and, per kept id, the ids it absorbed."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    pool = sorted(pool, key=lambda p: (SOURCE_ORDER.index(p["source"]), p["id"]))
    matcher = StructureMatcher()
    kept: list[dict[str, Any]] = []
    by_formula: dict[str, list[dict[str, Any]]] = defaultdict(list)
    absorbed: dict[str, list[str]] = defaultdict(list)
    seen_ids: dict[str, str] = {}
    for item in pool:
        if item["id"] in seen_ids:  # the same MP material in two sources
            absorbed[seen_ids[item["id"]]].append(item["id"])
            continue
        formula = item["structure"].composition.reduced_formula
        match = next((k for k in by_formula[formula] if matcher.fit(k["structure"], item["structure"])), None)
        if match is not None:
            absorbed[match["id"]].append(item["id"])
            seen_ids[item["id"]] = match["id"]
            continue
        kept.append(item)
        by_formula[formula].append(item)
        seen_ids[item["id"]] = item["id"]
    return kept, absorbed


def _elements(structure: Any) -> frozenset[str]:
    return frozenset(str(el) for el in structure.composition.elements)


def _isolated(structure: Any, cutoff_a: float = 6.0) -> bool:
    """True when a site has no neighbour within CHGNet's 6 A atom-graph cutoff (CHGNet refuses such cells)."""
    return any(not nbrs for nbrs in structure.get_all_neighbors(cutoff_a))


def _pick_candidates(unique: list[dict[str, Any]], n: int, max_sites: int, space: frozenset[str],
                     min_known: int) -> list[dict[str, Any]]:
    """The demo candidates: MP structures of the chemical space ``space`` (its subsystems with >= 2 elements), at
    most ``max_sites`` sites, not in the demo training set, computable by CHGNet; round-robin over the systems
    (sorted by name), each system's structures taken by (number of sites, id), a pick skipped when it would leave a
    picked candidate's system with fewer than ``min_known`` known compounds."""
    with open(TRAIN_CSV, newline="") as fh:
        train_ids = {row["material_id"] for row in csv.DictReader(fh)}
    compounds = {p["id"]: _elements(p["structure"]) for p in unique if len(_elements(p["structure"])) > 1}
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in unique:
        els = _elements(p["structure"])
        if (p["source"] == "matbench-phonons" or p["id"] in train_ids or len(p["structure"]) > max_sites
                or len(els) < 2 or not els <= space or _isolated(p["structure"])):
            continue
        groups["-".join(sorted(els))].append(p)
    queues = {k: sorted(v, key=lambda p: (len(p["structure"]), p["id"])) for k, v in sorted(groups.items())}
    picked: list[dict[str, Any]] = []

    def known_left(system: frozenset[str], ids: set[str]) -> int:
        return sum(1 for sid, els in compounds.items() if els <= system and sid not in ids)

    while len(picked) < n and any(queues.values()):
        for chemsys in list(queues):
            while queues[chemsys] and len(picked) < n:
                p = queues[chemsys].pop(0)
                trial = [*picked, p]
                ids = {q["id"] for q in trial}
                if all(known_left(_elements(q["structure"]), ids) >= min_known for q in trial):
                    picked.append(p)
                    break
    if len(picked) < n:
        raise SystemExit(f"only {len(picked)} candidates in {'-'.join(sorted(space))} with <= {max_sites} sites")
    return picked


def _mp_columns(pool: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """MP-20-style columns of the Li-Fe-O entries: MP formation energy and E_hull from MP's own (MP2020) energies."""
    from pymatgen.analysis.phase_diagram import PhaseDiagram

    entries = [p["entry"] for p in pool if p["source"] == "mp-Li-Fe-O"]
    pd = PhaseDiagram(entries)
    best: dict[str, Any] = {}
    for e in entries:  # GGA and GGA+U twins of one material: the one MP would show (lowest E_hull)
        mid = str((e.data or {}).get("material_id") or e.entry_id)
        if mid not in best or pd.get_e_above_hull(e) < pd.get_e_above_hull(best[mid]):
            best[mid] = e
    return {mid: {"formation_energy_per_atom": pd.get_form_energy_per_atom(e),
                  "e_above_hull": pd.get_e_above_hull(e)} for mid, e in best.items()}


def _write_candidates(picked: list[dict[str, Any]], pool: list[dict[str, Any]], path: Path) -> None:
    from pymatgen.io.cif import CifWriter
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    with open(SHARED / "structures" / "mp_20_subset" / "test.csv", newline="") as fh:
        header = next(csv.reader(fh))
    mp = _mp_columns(pool)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for p in sorted(picked, key=lambda p: p["id"]):
            if "row" in p:  # an MP-20 row: unchanged
                writer.writerow([p["row"].get(col, "") for col in header])
                continue
            s = p["structure"]
            values = {"material_id": p["id"], "pretty_formula": s.composition.reduced_formula,
                      "elements": str(sorted(str(el) for el in s.composition.elements)), "cif": str(CifWriter(s)),
                      "spacegroup.number": SpacegroupAnalyzer(s).get_space_group_number(), "band_gap": "",
                      **mp.get(p["id"], {})}
            writer.writerow([values.get(col, "") for col in header])


def _label(structures: list[Any], fidelity: str, batch_size: int) -> list[float]:
    from screener.calculators.standin import energies_batch

    t0 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if done == total or done % (batch_size * 8) == 0:
            log.info("%s: %d/%d labelled (%.0f s)", fidelity, done, total, time.perf_counter() - t0)

    # sorted by size so each batch holds similar cells; results put back in order
    order = sorted(range(len(structures)), key=lambda i: len(structures[i]))
    ordered = [structures[i] for i in order]
    e = []
    for start in range(0, len(ordered), batch_size):
        chunk = ordered[start : start + batch_size]
        try:
            e.extend(energies_batch(chunk, fidelity, batch_size=batch_size))
        except ValueError:  # CHGNet refuses cells with isolated atoms (no neighbour within 6 A): label one by one
            for s in chunk:
                try:
                    e.extend(energies_batch([s], fidelity))
                except ValueError as exc:
                    log.info("%s: %s left out (%s)", fidelity, s.composition.reduced_formula, exc)
                    e.append(float("nan"))
        progress(min(start + batch_size, len(ordered)), len(ordered))
    out = [0.0] * len(structures)
    for k, i in enumerate(order):
        out[i] = float(e[k]) * len(structures[i])  # total energy of the cell, eV
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=SHARED, help="shared/data folder with the sources")
    parser.add_argument("--n-candidates", type=int, default=40)
    parser.add_argument("--space", default="Fe-Li-O", help="chemical space of the demo candidates")
    parser.add_argument("--max-sites", type=int, default=12, help="largest demo candidate")
    parser.add_argument("--min-known", type=int, default=3,
                        help="fewest known compounds each candidate's system keeps (candidates held out)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "build_known_phases.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    for name in ("screener", "chgnet", "pymatgen"):
        logging.getLogger(name).setLevel(logging.WARNING)
    t_start = time.perf_counter()

    from screener.hull.known_phases import KNOWN_PHASES_FORMAT, CandidateIndex, make_known_phase_entries
    from screener.hull.phase_diagram import FidelityHull
    from screener.hull.references import _load_ref_file, elemental_reference_structures

    pool = _read_sources(args.shared)
    log.info("read %d structures: %s", len(pool), dict(Counter(p["source"] for p in pool)))
    unique, absorbed = _deduplicate(pool)
    log.info("%d unique after de-duplication (%.0f s)", len(unique), time.perf_counter() - t_start)
    with_refs = (set(_load_ref_file("MP-PBE-Element-Refs.json.gz"))
                 | set(_load_ref_file("MatPES-PBE-Element-Refs.json.gz")))
    picked = _pick_candidates(unique, args.n_candidates, args.max_sites, frozenset(args.space.split("-")),
                              args.min_known)
    _write_candidates(picked, pool, CANDIDATES_CSV)
    log.info("wrote %d demo candidates to %s", len(picked), CANDIDATES_CSV)

    # 3. the known set: everything else, the candidates and their matches held out
    held_out = {p["id"] for p in picked} | {a for p in picked for a in absorbed.get(p["id"], [])}
    cand_structures = {p["id"]: p["structure"] for p in picked}
    index = CandidateIndex(cand_structures)
    known = [p for p in unique if p["id"] not in held_out and not (_elements(p["structure"]) - with_refs)]
    known = [p for p in known if index.match(p["id"], p["structure"]) is None]
    elements = sorted({el for p in known + picked for el in _elements(p["structure"])})
    refs: dict[str, Any] = {}
    for el in elements:  # the rule of prepare_references(mode="standin")
        try:
            refs.update(elemental_reference_structures([el], source="mp-polymorphs"))
        except Exception:  # noqa: BLE001 - InvalidInputError: not in MP's file
            refs.update(elemental_reference_structures([el], source="matpes"))
    phases = [{"structure_id": f"ref:standin:{el}", "source": "elemental", "structure": s, "element": el}
              for el, s in refs.items()]
    phases += [{"structure_id": p["id"], "source": p["source"], "structure": p["structure"]} for p in known]
    log.info("known set: %d phases (%d elemental ground states) over %d elements", len(phases), len(refs),
             len(elements))

    # 4. label at both fidelities
    structures = [p["structure"] for p in phases]
    energies = {f: _label(structures, f, args.batch_size) for f in ("pbe", "scan")}
    records, n_dropped = [], 0
    for i, p in enumerate(phases):
        e = {f: energies[f][i] for f in ("pbe", "scan")}
        if not all(abs(v) < 1e9 and v == v for v in e.values()):
            n_dropped += 1
            continue
        rec = {"structure_id": p["structure_id"], "source": p["source"], "structure": p["structure"].as_dict(),
               "energy_ev": {f: round(v, 6) for f, v in e.items()}}
        if p.get("element"):
            rec["element_reference"] = p["element"]
        if absorbed.get(p["structure_id"]):
            rec["same_as"] = sorted(absorbed[p["structure_id"]])
        records.append(rec)

    import chgnet
    import pymatgen.core
    import torch

    command = "OMP_NUM_THREADS=2 .venv/bin/python bench/build_known_phases.py" + (
        " " + shlex.join(argv if argv is not None else sys.argv[1:]) if (argv or sys.argv[1:]) else "")
    doc = {
        "format": KNOWN_PHASES_FORMAT,
        "what": "known phases for the stand-in back-end: real MP structures labelled with CHGNet 0.3.0 (pbe) and "
                "CHGNet r2scan (scan) single points; energies are total energies of the cell in eV, not DFT",
        "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "software": {"chgnet": chgnet.__version__, "pymatgen": pymatgen.core.__version__, "torch": torch.__version__},
        "sources": SOURCES,
        "held_out_demo_candidates": sorted(held_out),
        "phases": records,
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out_file = OUT_DIR / "standin_known_phases.json.gz"
    with gzip.open(out_file, "wt", compresslevel=9) as fh:
        json.dump(doc, fh, separators=(",", ":"))

    compound_elements = [frozenset(sp["element"] for site in r["structure"]["sites"] for sp in site["species"])
                         for r in records if not r.get("element_reference")]
    compound_elements = [e for e in compound_elements if len(e) > 1]
    # 5. the stable share the known set implies for the demo candidates (each measured against the known set alone)
    cand_ids = [p["id"] for p in picked]
    cand_e = {f: _label([cand_structures[s] for s in cand_ids], f, args.batch_size) for f in ("pbe", "scan")}
    share: dict[str, Any] = {}
    for fidelity in ("pbe", "scan"):
        hull = FidelityHull(fidelity, references=make_known_phase_entries(records, fidelity))
        e_hull = {}
        for sid, energy in zip(cand_ids, cand_e[fidelity], strict=True):
            from pymatgen.entries.computed_entries import ComputedStructureEntry

            entry = ComputedStructureEntry(cand_structures[sid], energy, parameters={"run_type": "standin"},
                                           data={"fidelity": fidelity, "backend": "standin", "structure_id": sid})
            e_hull[sid] = round(hull.e_above_hull_ev_per_atom(entry), 4)
        stable = sorted(s for s, v in e_hull.items() if v <= 0.0)
        share[fidelity] = {"n_stable": len(stable), "n": len(cand_ids), "stable_ids": stable,
                           "e_hull_ev_per_atom": e_hull}
    result = {
        "command": command,
        "hardware": _hardware(),
        "wall_s": round(time.perf_counter() - t_start, 1),
        "n_source_structures": len(pool),
        "n_unique": len(unique),
        "n_known_phases": len(records),
        "n_elemental_references": len(refs),
        "n_dropped_nonfinite": n_dropped,
        "file": str(out_file.relative_to(ROOT)),
        "file_bytes": out_file.stat().st_size,
        "known_by_source": dict(Counter(r["source"] for r in records)),
        "demo_candidates": {p["id"]: {"formula": p["structure"].composition.reduced_formula,
                                      "chemsys": "-".join(sorted(_elements(p["structure"]))),
                                      "n_sites": len(p["structure"]), "source": p["source"],
                                      "n_known_compounds": sum(1 for e in compound_elements
                                                               if e <= _elements(p["structure"]))}
                            for p in picked},
        "stable_share": share,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return result


def _hardware() -> str:
    import os

    from screener._hardware import cpu_model

    return f"{cpu_model()}, {len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.1f}"


if __name__ == "__main__":
    main()
