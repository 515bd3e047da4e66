"""Structures of a simulated world and candidate sets for a chemical space, from the shipped prototypes.

:func:`generate_world_structures` draws a reproducible mix of real crystals and substituted hypotheticals (random
draws from a seeded numpy Generator). :func:`generate_candidates` enumerates every oxidation-state-consistent
decoration of the prototypes with the elements of one chemical space, ranks them by the mined substitution
probability and removes those equivalent to known structures. Both validate and de-duplicate with
:func:`screener.structures.deduplicate` (pymatgen StructureMatcher, volumes scaled).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from screener.errors import InvalidInputError, InvalidStructureError
from screener.structures.records import StructureRecord
from screener.world.prototypes import DEFAULT_SOURCES, Prototype, load_prototypes
from screener.world.substitution import (
    apply_substitution,
    oxidation_states,
    propose_substitution,
    substitution_elements,
    swap_candidates,
)

__all__ = ["GeneratorConfig", "generate_world_structures", "generate_candidates", "parse_elements"]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, int], None]


@dataclass
class GeneratorConfig:
    """How a world's structures are drawn.

    Parameters
    ----------
    size : int
        Number of distinct structures in the world.
    seed : int
        Seed of every random draw; the same seed gives the same structures.
    elements : tuple of str or None
        Only structures made of these elements (None: any element of :func:`substitution_elements` plus those of
        the real crystals that have elemental references).
    sources : tuple of str
        Prototype sets (:data:`~screener.world.prototypes.PROTOTYPE_SOURCES`).
    real_fraction : float
        Share of real crystals (taken as they are); the rest are substituted hypotheticals.
    chemsys_fraction : float
        Share of hypothetical draws that decorate a prototype with the elements of the chemical system of one of the
        world's real crystals (competing phases in known systems, so that E_hull is not trivially zero); the other
        draws substitute freely.
    swap_probability : float
        Chance that each element of a prototype is swapped (at least one always is).
    max_sites : int
        Prototypes with more sites are not used.
    rescale_volume : bool
        Rescale hypotheticals by reference lattice scaling (else keep the prototype's lattice).
    """

    size: int = 1000
    seed: int = 0
    elements: tuple[str, ...] | None = None
    sources: tuple[str, ...] = DEFAULT_SOURCES
    real_fraction: float = 0.3
    chemsys_fraction: float = 0.75
    swap_probability: float = 0.5
    max_sites: int = 24
    rescale_volume: bool = True

    def __post_init__(self) -> None:
        if self.size < 1:
            raise InvalidInputError(f"world size must be at least 1, got {self.size}")
        if not 0.0 <= self.real_fraction <= 1.0:
            raise InvalidInputError(f"real_fraction must be in [0, 1], got {self.real_fraction}")
        if not 0.0 <= self.chemsys_fraction <= 1.0:
            raise InvalidInputError(f"chemsys_fraction must be in [0, 1], got {self.chemsys_fraction}")
        if not 0.0 < self.swap_probability <= 1.0:
            raise InvalidInputError(f"swap_probability must be in (0, 1], got {self.swap_probability}")
        if self.elements is not None:
            self.elements = tuple(parse_elements(self.elements))
        self.sources = tuple(self.sources)


def parse_elements(elements: str | Iterable[str]) -> list[str]:
    """``"Li,Fe,O"`` or ``["Li", "Fe-O"]`` -> ``["Fe", "Li", "O"]`` (sorted, unique); InvalidInputError on junk."""
    from pymatgen.core import Element

    parts = [elements] if isinstance(elements, str) else list(elements)
    symbols: set[str] = set()
    for part in parts:
        for token in str(part).replace("-", ",").replace(" ", ",").split(","):
            token = token.strip()
            if not token:
                continue
            if not Element.is_valid_symbol(token):
                raise InvalidInputError(f"{token!r} is not an element symbol")
            symbols.add(token)
    if not symbols:
        raise InvalidInputError("no elements given")
    return sorted(symbols)


def _usable_elements() -> frozenset[str]:
    from screener.data import elements_with_embedding
    from screener.hull.references import elemental_reference_structures

    return frozenset(elements_with_embedding()) & frozenset(elemental_reference_structures())


def _mapping_id(prototype_id: str, mapping: dict[str, str]) -> str:
    text = prototype_id + "|" + ",".join(f"{a}>{b}" for a, b in sorted(mapping.items()))
    return "hyp-" + hashlib.sha1(text.encode()).hexdigest()[:12]


def _record(structure_id: str, structure, proto: Prototype, mapping: dict[str, str] | None) -> StructureRecord:
    data = {
        "prototype_id": proto.prototype_id,
        "origin": "real" if mapping is None else "substitution",
        "substitution": "" if mapping is None else ",".join(f"{a}>{b}" for a, b in sorted(mapping.items())),
    }
    return StructureRecord(structure_id=structure_id, structure=structure, source=proto.source, data=data)


def _valid(record: StructureRecord) -> bool:
    from screener.structures.validation import validate_structure

    try:
        validate_structure(record.structure, record.structure_id)
    except InvalidStructureError as exc:
        logger.debug("dropped %s: %s", record.structure_id, exc.reason)
        return False
    return True


def generate_world_structures(
    config: GeneratorConfig,
    *,
    progress: ProgressCallback | None = None,
) -> list[StructureRecord]:
    """Draw the structures of a world: real crystals plus substituted hypotheticals, de-duplicated.

    Parameters
    ----------
    config : GeneratorConfig
        Size, seed, chemical space and mix.
    progress : callable, optional
        ``progress(stage, done, total)`` with stage ``"generate"`` and ``"deduplicate"``.

    Returns
    -------
    list of StructureRecord
        ``config.size`` records (fewer only if the prototypes cannot give that many distinct structures; logged),
        real ones first. ``data`` holds ``prototype_id``, ``origin`` (``real``/``substitution``) and
        ``substitution`` (``"Fe>Co,O>S"``).
    """
    from screener.structures.dedup import deduplicate

    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 20230]))
    usable = _usable_elements()
    allowed = frozenset(config.elements) & usable if config.elements else None
    if config.elements and not allowed:
        raise InvalidInputError(f"none of {', '.join(config.elements)} can be used (no embedding/elemental reference)")
    space = allowed if allowed is not None else usable
    protos = [p for p in load_prototypes(config.sources) if set(p.elements) <= usable]
    real_pool = [p for p in protos if set(p.elements) <= space]
    n_real = min(int(round(config.size * config.real_fraction)), len(real_pool))
    real_idx = sorted(rng.choice(len(real_pool), size=n_real, replace=False).tolist()) if n_real else []
    real = []
    for i in real_idx:
        proto = real_pool[i]
        structure = proto.structure()
        if len(structure) <= config.max_sites:
            real.append(_record(proto.prototype_id, structure, proto, None))
    real = [r for r in real if _valid(r)]
    n_hyp = config.size - len(real)

    sub_allowed = (allowed if allowed is not None else usable) & substitution_elements()
    n_max = len(sub_allowed)
    templates = [p for p in protos if len(p.elements) <= n_max]
    if n_hyp > 0 and not templates:
        space_text = ",".join(config.elements) if config.elements else "the usable elements"
        raise InvalidInputError(
            f"no prototype can be decorated with {space_text} (substitutes exclude noble gases, Tc, Pm, Z > 83)"
        )
    # chemical systems of the real crystals (with >= 2 substitutable elements) and prototypes that fit in them
    systems = sorted(
        {frozenset(str(el) for el in r.structure.composition.elements) for r in real}, key=lambda s: sorted(s)
    )
    systems = [s for s in systems if len(s) >= 2 and s <= sub_allowed]
    by_size = {k: [p for p in templates if 2 <= len(p.elements) <= k] for k in {len(s) for s in systems}}
    systems = [s for s in systems if by_size[len(s)]]
    seen: set[str] = set()
    hyp: list[StructureRecord] = []
    kept: list[StructureRecord] = list(real)
    rounds = 0
    while len(kept) < config.size and rounds < 4 and templates:
        rounds += 1
        want = config.size - len(kept)
        target = int(math.ceil(want * 1.15)) + 2
        batch: list[StructureRecord] = []
        attempts = 0
        max_attempts = 40 * target + 200
        while len(batch) < target and attempts < max_attempts:
            attempts += 1
            if systems and rng.random() < config.chemsys_fraction:
                system = systems[int(rng.integers(len(systems)))]
                pool = by_size[len(system)]
                proto = pool[int(rng.integers(len(pool)))]
                charges = oxidation_states(proto.formula)
                mapping = _decorate(proto, charges, system, rng)
            else:
                proto = templates[int(rng.integers(len(templates)))]
                charges = oxidation_states(proto.formula)
                mapping = propose_substitution(
                    proto.elements, charges, rng, allowed=sub_allowed, swap_probability=config.swap_probability
                )
            if mapping is None:
                continue
            sid = _mapping_id(proto.prototype_id, mapping)
            if sid in seen:
                continue
            seen.add(sid)
            prototype = proto.structure()
            if len(prototype) > config.max_sites:
                continue
            structure = apply_substitution(prototype, mapping, charges=charges, rescale=config.rescale_volume)
            record = _record(sid, structure, proto, mapping)
            if _valid(record):
                batch.append(record)
                if progress is not None:
                    progress("generate", len(hyp) + len(batch), n_hyp)
        hyp.extend(batch)
        deduped = deduplicate(
            [*real, *hyp],
            keep="first",
            progress=None if progress is None else (lambda d, t: progress("deduplicate", d, t)),
        )
        kept = deduped
        hyp = [r for r in deduped if r.data["origin"] == "substitution"]
    kept = kept[: config.size]
    if len(kept) < config.size:
        logger.warning("world: only %d distinct structures could be generated (asked for %d)", len(kept), config.size)
    logger.info(
        "world structures: %d real, %d hypothetical (seed %d)",
        sum(r.data["origin"] == "real" for r in kept),
        sum(r.data["origin"] == "substitution" for r in kept),
        config.seed,
    )
    return kept


def _decorate(
    proto: Prototype, charges: dict[str, int] | None, system: frozenset[str], rng: np.random.Generator
) -> dict[str, str] | None:
    """A random oxidation-state-consistent injective map of the prototype's elements onto ``system`` (weighted by
    :func:`_score`), or None when there is none. Only the swapped elements are returned."""
    from pymatgen.core import Composition

    options: list[tuple[float, dict[str, str]]] = []
    composition = Composition(proto.formula)
    for targets in itertools.permutations(sorted(system), len(proto.elements)):
        mapping = dict(zip(proto.elements, targets, strict=True))
        swapped = {a: b for a, b in mapping.items() if a != b}
        if not swapped:
            continue
        new_formula = Composition({mapping[str(el)]: amt for el, amt in composition.items()}).reduced_formula
        if _charge_ok(mapping, charges, new_formula):
            options.append((_score(swapped, charges, system), swapped))
    if not options:
        return None
    weights = np.asarray([w for w, _ in options], dtype=float)
    return options[int(rng.choice(len(options), p=weights / weights.sum()))][1]


def _charge_ok(mapping: dict[str, str], charges: dict[str, int] | None, new_formula: str) -> bool:
    from pymatgen.core import Composition, Element

    if charges is not None:
        # oxidation-state-aware: every substitute must take the replaced ion's charge
        for old, new in mapping.items():
            el = Element(new)
            states = set(el.icsd_oxidation_states or ()) | set(el.common_oxidation_states or ())
            if charges[old] not in states and old != new:
                return False
        return True
    composition = Composition(new_formula)
    return all(el.is_metal for el in composition.elements) or oxidation_states(composition) is not None


def _score(mapping: dict[str, str], charges: dict[str, int] | None, allowed: frozenset[str]) -> float:
    score = 1.0
    for old, new in mapping.items():
        if old == new:
            continue
        weights = swap_candidates(old, None if charges is None else charges.get(old), allowed | {new})
        score *= weights.get(new, 1e-4)
    return score


def generate_candidates(
    elements: str | Iterable[str],
    *,
    prototypes: Sequence[Prototype] | None = None,
    known: Sequence[StructureRecord] = (),
    max_candidates: int | None = None,
    min_elements: int = 2,
    max_sites: int = 40,
    rescale_volume: bool = True,
    include_real_as_known: bool = True,
    progress: ProgressCallback | None = None,
) -> list[StructureRecord]:
    """Candidate crystals for one chemical space, de-duplicated against known structures.

    Every prototype with ``min_elements`` to ``len(elements)`` elements is decorated with every injective map of its
    elements onto the space. Maps are kept when oxidation-state consistent (ionic prototypes: each substitute can
    carry the replaced ion's charge; other prototypes: the new composition is an intermetallic or has a
    charge-balanced oxidation-state guess). Candidates are ranked by the product of the substitution weights of
    :func:`~screener.world.substitution.swap_candidates`.

    Parameters
    ----------
    elements : str or iterable of str
        The chemical space, e.g. ``"Li,Fe,O"``.
    prototypes : sequence of Prototype, optional
        Structure types to decorate (default: every shipped prototype).
    known : sequence of StructureRecord
        Known structures (e.g. MP entries); candidates matching any of them are dropped.
    max_candidates : int, optional
        Keep the best-ranked this many (after de-duplication).
    min_elements : int
        Smallest number of elements of a candidate.
    max_sites : int
        Prototypes with more sites are skipped.
    rescale_volume : bool
        Reference lattice scaling of each decoration.
    include_real_as_known : bool
        Treat shipped real crystals already inside the space as known.
    progress : callable, optional
        ``progress(stage, done, total)``.

    Returns
    -------
    list of StructureRecord
        Ids ``hyp-<hash>``; ``data`` has ``prototype_id``, ``origin``, ``substitution`` and ``score``.
    """
    from pymatgen.core import Composition

    space = parse_elements(elements)
    unusable = sorted(set(space) - _usable_elements())
    if unusable:
        raise InvalidInputError(f"no element embedding or elemental reference for {', '.join(unusable)}")
    allowed = frozenset(space)
    protos = list(prototypes) if prototypes is not None else load_prototypes()
    templates = [p for p in protos if min_elements <= len(p.elements) <= len(space)]
    known_records = list(known)
    if include_real_as_known:
        for proto in load_prototypes(elements=allowed):
            if len(proto.elements) >= min_elements:
                known_records.append(_record(proto.prototype_id, proto.structure(), proto, None))

    # 1. every oxidation-state-consistent decoration, ranked by substitution weight (no structure built yet)
    proposals: list[tuple[float, str, Prototype, dict[str, str], dict[str, int] | None]] = []
    seen: set[str] = set()
    for proto in templates:
        charges = oxidation_states(proto.formula)
        for targets in itertools.permutations(space, len(proto.elements)):
            mapping = dict(zip(proto.elements, targets, strict=True))
            swapped = {a: b for a, b in mapping.items() if a != b}
            if not swapped:
                continue  # the prototype itself: a known crystal
            new_formula = Composition(
                {mapping[str(el)]: amt for el, amt in Composition(proto.formula).items()}
            ).reduced_formula
            if not _charge_ok(mapping, charges, new_formula):
                continue
            sid = _mapping_id(proto.prototype_id, swapped)
            if sid not in seen:
                seen.add(sid)
                proposals.append((_score(swapped, charges, allowed), sid, proto, swapped, charges))
    proposals.sort(key=lambda item: (-item[0], item[1]))

    # 2. build them in rank order; keep those matching neither a known structure nor a better-ranked candidate
    matcher = _IncrementalMatcher()
    for record in known_records:
        matcher.add(record.structure)
    out: list[StructureRecord] = []
    n_known_dupes = n_self_dupes = 0
    limit = len(proposals) if max_candidates is None else max_candidates
    for n_done, (score, sid, proto, swapped, charges) in enumerate(proposals, start=1):
        if len(out) >= limit:
            break
        prototype = proto.structure()
        if len(prototype) > max_sites:
            continue
        structure = apply_substitution(prototype, swapped, charges=charges, rescale=rescale_volume)
        record = _record(sid, structure, proto, swapped)
        record.data["score"] = score
        if not _valid(record):
            continue
        match = matcher.match(structure)
        if match is not None:
            n_known_dupes += match < len(known_records)
            n_self_dupes += match >= len(known_records)
            continue
        matcher.add(structure)
        out.append(record)
        if progress is not None:
            progress("candidates", len(out), limit)
    logger.info(
        "candidates for %s: %d decorations, %d equivalent to known structures, %d duplicates, %d kept",
        "-".join(space), len(proposals), n_known_dupes, n_self_dupes, len(out),
    )
    return out


class _IncrementalMatcher:
    """StructureMatcher de-duplication one structure at a time (same tolerances as screener.structures.dedup)."""

    def __init__(self, ltol: float = 0.2, stol: float = 0.3, angle_tol: float = 5.0) -> None:
        from pymatgen.analysis.structure_matcher import StructureMatcher

        self.matcher = StructureMatcher(ltol=ltol, stol=stol, angle_tol=angle_tol, primitive_cell=True, scale=True)
        self.buckets: dict[tuple[str, int], list[tuple[int, object]]] = {}
        self.n = 0

    @staticmethod
    def _reduce(structure):
        return structure.get_primitive_structure().get_reduced_structure()

    def match(self, structure) -> int | None:
        """Index (in insertion order) of a stored equivalent structure, or None."""
        reduced = self._reduce(structure)
        key = (structure.composition.reduced_formula, len(reduced))
        for index, other in self.buckets.get(key, []):
            if self.matcher.fit(other, reduced, skip_structure_reduction=True):
                return index
        return None

    def add(self, structure) -> int:
        reduced = self._reduce(structure)
        key = (structure.composition.reduced_formula, len(reduced))
        self.buckets.setdefault(key, []).append((self.n, reduced))
        self.n += 1
        return self.n - 1
