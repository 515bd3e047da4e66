"""Structures in the report: the data the bundled crystal viewer draws, and the CIF / POSCAR downloads."""

from __future__ import annotations

import html
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["viewer_payload", "viewer_html", "write_structure_files", "element_color"]

# Images of sites closer than this (fractional) to a cell face are drawn on the opposite face too.
_FACE_TOL = 1e-3
_MAX_DRAWN_SITES = 2000


@lru_cache(maxsize=1)
def _jmol_colors() -> dict[str, list[int]]:
    """Jmol element colours shipped with pymatgen (``pymatgen/vis/ElementColorSchemes.yaml``)."""
    from importlib.resources import files

    from monty.serialization import loadfn

    try:
        return dict(loadfn(str(files("pymatgen.vis") / "ElementColorSchemes.yaml"))["Jmol"])
    except (OSError, KeyError, ModuleNotFoundError):
        return {}


def element_color(symbol: str) -> str:
    """Hex colour of an element (Jmol scheme; grey when unknown)."""
    rgb = _jmol_colors().get(symbol, [160, 160, 160])
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in rgb))


def _radius(symbol: str) -> float:
    from pymatgen.core import Element

    try:
        r = Element(symbol).atomic_radius
    except ValueError:
        r = None
    return float(r) if r else 1.2


def viewer_payload(structure: Any) -> dict[str, Any]:
    """What the crystal viewer draws: cell vectors and atoms (Cartesian, Å), colours and radii.

    Sites lying on a cell face, edge or corner are repeated on the opposite faces so the cell looks complete.
    """
    import itertools

    import numpy as np

    matrix = structure.lattice.matrix
    atoms = []
    for site in structure:
        symbol = site.specie.symbol if hasattr(site.specie, "symbol") else str(site.specie)
        frac = np.mod(site.frac_coords, 1.0)
        frac[np.isclose(frac, 1.0, atol=_FACE_TOL)] = 0.0
        shifts = [[0.0, 1.0] if f < _FACE_TOL else [0.0] for f in frac]
        for shift in itertools.product(*shifts):
            if len(atoms) >= _MAX_DRAWN_SITES:
                break
            xyz = (frac + np.asarray(shift)) @ matrix
            atoms.append({"el": symbol, "xyz": [round(float(x), 4) for x in xyz], "image": any(shift)})
    elements = sorted({a["el"] for a in atoms})
    return {
        "lattice": [[round(float(x), 5) for x in row] for row in matrix],
        "atoms": atoms,
        "elements": {el: {"color": element_color(el), "radius": round(_radius(el), 3)} for el in elements},
        "formula": structure.composition.reduced_formula,
        "n_sites": len(structure),
    }


def viewer_html(structure: Any, *, caption: str = "", height_px: int = 360) -> str:
    """The HTML block of one crystal viewer (drawn by ``assets/crystal-viewer.js``; works without a network)."""
    payload = html.escape(json.dumps(viewer_payload(structure), separators=(",", ":")), quote=True)
    return (
        f'<div class="crystal-viewer" data-structure="{payload}" style="height:{height_px}px" '
        f'role="img" aria-label="{html.escape(structure.composition.reduced_formula)} crystal structure">'
        "<noscript>The structure viewer needs JavaScript; download the CIF or POSCAR below.</noscript></div>\n"
        + (f'<p class="viewer-caption">{html.escape(caption)}</p>\n' if caption else "")
    )


def write_structure_files(structure: Any, folder: Path, stem: str) -> dict[str, Path]:
    """Write ``<stem>.cif`` (symmetrised with pymatgen's CifWriter) and ``<stem>.POSCAR`` into ``folder``."""
    from pymatgen.io.cif import CifWriter
    from pymatgen.io.vasp import Poscar

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cif = folder / f"{stem}.cif"
    poscar = folder / f"{stem}.POSCAR"
    CifWriter(structure).write_file(cif)
    Poscar(structure, comment=f"{stem} {structure.composition.reduced_formula}").write_file(poscar)
    return {"cif": cif, "poscar": poscar}
