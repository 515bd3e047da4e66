"""``deduplicate``: drop structures that pymatgen's StructureMatcher finds equivalent to another one."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence

from screener.errors import InvalidInputError
from screener.structures.records import StructureRecord

__all__ = ["deduplicate", "group_duplicates"]

logger = logging.getLogger(__name__)


def group_duplicates(
    records: Sequence[StructureRecord],
    *,
    ltol: float = 0.2,
    stol: float = 0.3,
    angle_tol: float = 5.0,
    scale: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> list[list[int]]:
    """Group equivalent structures; each group lists indices into ``records``, in input order.

    Structures are bucketed by reduced formula (cheap); within a formula, each is reduced once (primitive cell,
    then Niggli), split by number of sites and compared with ``StructureMatcher(ltol, stol, angle_tol,
    primitive_cell=True, scale=scale)`` against the first member of each group found so far, so supercells,
    rotations and translations of one crystal fall in one group.

    Parameters
    ----------
    records : sequence of StructureRecord
        The structures.
    ltol, stol, angle_tol : float
        StructureMatcher tolerances (fractional length, site, degrees); pymatgen's defaults.
    scale : bool
        Scale volumes to match (True, pymatgen's default) or require equal volumes per atom.
    progress : callable, optional
        Called as ``progress(n_formulas_done, n_formulas)``.

    Returns
    -------
    list of list of int
        Groups ordered by their first member.
    """
    from pymatgen.analysis.structure_matcher import StructureMatcher

    matcher = StructureMatcher(ltol=ltol, stol=stol, angle_tol=angle_tol, primitive_cell=True, scale=scale)
    by_formula: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        by_formula[record.structure.composition.reduced_formula].append(index)

    groups: list[list[int]] = []
    for n_done, indices in enumerate(by_formula.values(), start=1):
        if len(indices) == 1:
            groups.append(indices)
        else:
            groups.extend(_group_same_formula(records, indices, matcher))
        if progress is not None:
            progress(n_done, len(by_formula))
    groups.sort(key=lambda g: g[0])
    return groups


def _group_same_formula(records: Sequence[StructureRecord], indices: list[int], matcher) -> list[list[int]]:
    # Reduce each structure once (primitive cell, Niggli). Without supercell matching, structures only match when
    # their reduced cells have the same number of sites, so that splits the formula group further for free.
    reduced = {i: records[i].structure.get_primitive_structure().get_reduced_structure() for i in indices}
    by_size: dict[int, list[int]] = defaultdict(list)
    for index in indices:
        by_size[len(reduced[index])].append(index)
    groups: list[list[int]] = []
    for same_size in by_size.values():
        local: list[list[int]] = []
        for index in same_size:
            for group in local:
                if matcher.fit(reduced[group[0]], reduced[index], skip_structure_reduction=True):
                    group.append(index)
                    break
            else:
                local.append([index])
        groups.extend(local)
    return groups


def deduplicate(
    records: Sequence[StructureRecord],
    *,
    keep: str = "first",
    ltol: float = 0.2,
    stol: float = 0.3,
    angle_tol: float = 5.0,
    scale: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> list[StructureRecord]:
    """Remove structures equivalent to another one (pymatgen ``StructureMatcher``).

    Parameters
    ----------
    records : sequence of StructureRecord
        The structures, e.g. ``read_structures(...).records``.
    keep : str
        Which member of a group of duplicates survives: ``"first"`` or ``"last"`` in input order, or
        ``"lowest:<target>"`` (e.g. ``"lowest:e_above_hull"``) for the smallest value of that target (records
        without it lose).
    ltol, stol, angle_tol, scale
        Passed to StructureMatcher, see :func:`group_duplicates`.
    progress : callable, optional
        Called as ``progress(n_formulas_done, n_formulas)``.

    Returns
    -------
    list of StructureRecord
        The kept records, in input order. How many were removed is logged.
    """
    chooser = _chooser(keep, records)
    groups = group_duplicates(records, ltol=ltol, stol=stol, angle_tol=angle_tol, scale=scale, progress=progress)
    kept = sorted(chooser(group) for group in groups)
    n_removed = len(records) - len(kept)
    logger.info("deduplicate: removed %d duplicate structures, kept %d", n_removed, len(kept))
    for group in groups:
        if len(group) > 1:
            logger.debug("duplicates: %s", ", ".join(records[i].structure_id for i in group))
    return [records[i] for i in kept]


def _chooser(keep: str, records: Sequence[StructureRecord]) -> Callable[[list[int]], int]:
    if keep == "first":
        return lambda group: group[0]
    if keep == "last":
        return lambda group: group[-1]
    if keep.startswith("lowest:") and len(keep) > len("lowest:"):
        target = keep.split(":", 1)[1]

        def lowest(group: list[int]) -> int:
            return min(group, key=lambda i: (target not in records[i].targets, records[i].targets.get(target, 0.0)))

        return lowest
    raise InvalidInputError(f"keep={keep!r}: expected 'first', 'last' or 'lowest:<target>'")
