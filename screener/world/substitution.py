"""Hypothetical crystals the way Alexandria and WBM made theirs: element substitution on known prototypes.

A substitution maps some elements of a prototype onto other elements (an injective map, so the structure type is
kept). Two kinds of swap are proposed for each element:

- **oxidation-state-aware** (ionic prototypes, where pymatgen finds a charge-balanced oxidation-state guess): an
  ion ``A^x`` is replaced by an ion ``B^x`` of the same charge, weighted by the data-mined substitution probability
  of Hautier et al. 2011 (pymatgen ``SubstitutionProbability``, conditional probability of ``B^x`` given ``A^x``),
  so the new composition stays charge balanced;
- **same-group** (every prototype, the only kind for intermetallics): ``A`` is replaced by an element of the same
  periodic-table group.

The new cell is then rescaled to a predicted volume by reference lattice scaling (pymatgen ``RLSVolumePredictor``:
ratio of ionic radii where the oxidation states are known, else of atomic radii), as WBM did before relaxation.
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pymatgen.core import Composition, Structure

__all__ = [
    "substitution_elements",
    "oxidation_states",
    "swap_candidates",
    "propose_substitution",
    "apply_substitution",
    "rescale_volume",
    "MIN_VOLUME_SCALE",
    "MAX_VOLUME_SCALE",
]

logger = logging.getLogger(__name__)

#: elements never proposed as substitutes: noble gases, radioactive or without stable isotopes, f-block beyond La.
_EXCLUDED = frozenset(
    "He Ne Ar Kr Xe Rn Tc Pm Po At Fr Ra Ac Th Pa U Np Pu Ce Pr Nd Sm Eu Gd Tb Dy Ho Er Tm Yb Lu".split()
)
#: weight of a same-group swap relative to the mined ionic substitution probabilities (whose scale is ~0.01-0.5).
SAME_GROUP_WEIGHT = 0.1
#: volume rescaling is clamped to this range of the prototype's volume (a guard against missing radii).
MIN_VOLUME_SCALE, MAX_VOLUME_SCALE = 0.4, 2.5


@lru_cache(maxsize=1)
def _substitution_elements() -> frozenset[str]:
    from pymatgen.core import Element

    from screener.data import elements_with_embedding
    from screener.hull.references import elemental_reference_structures

    with_refs = set(elemental_reference_structures())
    out = set()
    for symbol in elements_with_embedding():
        el = Element(symbol)
        if el.Z <= 83 and symbol not in _EXCLUDED and symbol in with_refs and el.atomic_radius is not None:
            out.add(symbol)
    return frozenset(out)


def substitution_elements() -> frozenset[str]:
    """Elements a substitution may introduce: Z <= 83 with an element embedding and a shipped elemental reference
    structure, without noble gases, Tc, Pm and the lanthanides after La."""
    return _substitution_elements()


@lru_cache(maxsize=1)
def _probability_table():
    from pymatgen.core.structure_prediction.substitution_probability import SubstitutionProbability

    return SubstitutionProbability()


@lru_cache(maxsize=16384)
def _oxidation_states_cached(formula: str) -> tuple[tuple[str, int], ...] | None:
    from pymatgen.core import Composition, Element

    composition = Composition(formula).reduced_composition
    if len(composition.elements) < 2:
        return None
    symbols = sorted(str(el) for el in composition.elements)
    amounts = [composition[s] for s in symbols]
    if any(abs(a - round(a)) > 1e-6 for a in amounts):
        return None
    elements = [Element(s) for s in symbols]
    options = []
    for el in elements:
        states = sorted(set(el.icsd_oxidation_states or ()) | set(el.common_oxidation_states or ()))
        if not states:
            return None
        options.append(states)
    x = [el.X if el.X == el.X else 0.0 for el in elements]  # Pauling electronegativity (nan for noble gases)
    best, best_key = None, None
    for combo in itertools.product(*options):
        if abs(sum(q * a for q, a in zip(combo, amounts))) > 1e-6:
            continue
        negative = [x[i] for i, q in enumerate(combo) if q < 0]
        positive = [x[i] for i, q in enumerate(combo) if q > 0]
        if not negative or not positive or min(negative) < max(positive):
            continue  # anions must be more electronegative than cations
        n_common = sum(q in (el.common_oxidation_states or ()) for q, el in zip(combo, elements))
        key = (-n_common, sum(abs(q) for q in combo), combo)
        if best_key is None or key < best_key:
            best, best_key = combo, key
    if best is None:
        return None
    return tuple(zip(symbols, (int(q) for q in best)))


def oxidation_states(composition: Composition | str) -> dict[str, int] | None:
    """A charge-balanced integer oxidation state per element, or None.

    Every combination of the elements' ICSD/common oxidation states that sums to zero, with every anion more
    electronegative than every cation, is a solution; the one using most common oxidation states (then smallest
    charges) wins. A fast stand-in for pymatgen's ``Composition.oxi_state_guesses`` (which is ~100x slower). None
    for elements, intermetallics, mixed valence and compositions that cannot be balanced.
    """
    from pymatgen.core import Composition

    formula = Composition(composition).reduced_formula
    states = _oxidation_states_cached(formula)
    return None if states is None else dict(states)


@lru_cache(maxsize=8192)
def _candidates_cached(
    element: str, charge: int | None, allowed: frozenset[str]
) -> tuple[tuple[str, ...], tuple[float, ...]]:
    from pymatgen.core import Element, Species

    el = Element(element)
    table = _probability_table()
    weights: dict[str, float] = {}
    if charge is not None and charge != 0:
        fixed = Species(element, charge)
        known_fixed = fixed in table.species
        for symbol in allowed:
            if symbol == element:
                continue
            other = Element(symbol)
            states = set(other.icsd_oxidation_states or ()) | set(other.common_oxidation_states or ())
            if charge not in states:
                continue
            variable = Species(symbol, charge)
            if known_fixed and variable in table.species:
                # P(variable replaces fixed); unobserved pairs get pymatgen's alpha weight
                weights[symbol] = table.cond_prob(variable, fixed)
    for symbol in allowed:
        if symbol != element and Element(symbol).group == el.group:
            weights[symbol] = weights.get(symbol, 0.0) + SAME_GROUP_WEIGHT
    symbols = tuple(sorted(weights))
    return symbols, tuple(weights[s] for s in symbols)


def swap_candidates(
    element: str, charge: int | None, allowed: Iterable[str] | None = None
) -> dict[str, float]:
    """Elements that may replace ``element`` (carrying oxidation state ``charge``, or None) and their weights.

    Parameters
    ----------
    element : str
        The element to replace.
    charge : int or None
        Its oxidation state in the prototype (None: no ionic swaps, same-group swaps only).
    allowed : iterable of str, optional
        Restrict the substitutes (default :func:`substitution_elements`).

    Returns
    -------
    dict of str to float
        Substitute -> unnormalised weight (> 0).
    """
    allowed_set = substitution_elements() if allowed is None else frozenset(allowed) & substitution_elements()
    symbols, weights = _candidates_cached(element, charge, frozenset(allowed_set))
    return {s: w for s, w in zip(symbols, weights) if w > 0}


def propose_substitution(
    elements: Iterable[str],
    charges: Mapping[str, int] | None,
    rng: np.random.Generator,
    *,
    allowed: Iterable[str] | None = None,
    swap_probability: float = 0.5,
    max_tries: int = 20,
) -> dict[str, str] | None:
    """Draw an injective element map for one prototype.

    Every element outside ``allowed`` must be replaced; each other element is replaced with probability
    ``swap_probability``; at least one element is replaced.

    Parameters
    ----------
    elements : iterable of str
        Elements of the prototype.
    charges : mapping or None
        Oxidation state per element (:func:`oxidation_states`) or None.
    rng : numpy Generator
        Source of randomness (reproducible from the world seed).
    allowed : iterable of str, optional
        Elements the result may contain (default :func:`substitution_elements`).
    swap_probability : float
        Chance that an allowed element is swapped.
    max_tries : int
        Draws before giving up.

    Returns
    -------
    dict or None
        ``{old: new}`` for the replaced elements only, or None when no valid map was found.
    """
    elements = sorted(elements)
    allowed_set = frozenset(substitution_elements() if allowed is None else allowed)
    for _ in range(max_tries):
        must = [el for el in elements if el not in allowed_set]
        swap = [el for el in elements if el in must or rng.random() < swap_probability]
        if not swap:
            swap = [elements[int(rng.integers(len(elements)))]]
        mapping: dict[str, str] = {}
        final = set(elements) - set(swap)
        ok = True
        for el in swap:
            charge = None if charges is None else charges.get(el)
            options = {s: w for s, w in swap_candidates(el, charge, allowed_set).items() if s not in final}
            if not options:
                ok = False
                break
            symbols = sorted(options)
            p = np.asarray([options[s] for s in symbols], dtype=float)
            choice = symbols[int(rng.choice(len(symbols), p=p / p.sum()))]
            mapping[el] = choice
            final.add(choice)
        if ok and len(final) == len(elements) and mapping:
            return mapping
    return None


def rescale_volume(structure: Structure, reference: Structure, charges: Mapping[str, int] | None = None) -> Structure:
    """Scale ``structure`` (a decorated ``reference``) to the volume predicted by reference lattice scaling.

    Uses pymatgen's ``RLSVolumePredictor`` (ionic radii when ``charges`` of the new structure are given and every ion
    has a Shannon radius, else atomic radii); the scale factor is clamped to ``[MIN_VOLUME_SCALE,
    MAX_VOLUME_SCALE]``. Returns a new structure without oxidation states.
    """
    from pymatgen.core.structure_prediction.volume_predictor import RLSVolumePredictor

    new, ref = structure.copy(), reference.copy()
    new.remove_oxidation_states()
    ref.remove_oxidation_states()
    radii = "atomic"
    if charges:
        try:
            ref_charges = _charges_of_reference(structure, reference, charges)
            new.add_oxidation_state_by_element(dict(charges))
            ref.add_oxidation_state_by_element(ref_charges)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pymatgen warns for every ion without a Shannon radius
                has_radii = all(sp.ionic_radius is not None for sp in [*new.composition, *ref.composition])
            if has_radii:
                radii = "ionic"
            else:
                new.remove_oxidation_states()
                ref.remove_oxidation_states()
        except (KeyError, ValueError):
            new.remove_oxidation_states()
            ref.remove_oxidation_states()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            volume = RLSVolumePredictor(check_isostructural=False, radii_type=radii, use_bv=False).predict(new, ref)
        except (TypeError, ValueError):  # an element without a tabulated radius: keep the prototype's volume
            volume = reference.volume
    scale = min(max(volume / reference.volume, MIN_VOLUME_SCALE), MAX_VOLUME_SCALE)
    new.remove_oxidation_states()
    if math.isfinite(scale):
        new.scale_lattice(reference.volume * scale)
    return new


def _charges_of_reference(structure: Structure, reference: Structure, charges: Mapping[str, int]) -> dict[str, int]:
    # The decorated structure has the reference's sites in the same order: charges carry over site by site.
    ref_charges: dict[str, int] = {}
    for site_new, site_ref in zip(structure, reference, strict=True):
        ref_charges[site_ref.specie.symbol] = int(charges[site_new.specie.symbol])
    return ref_charges


def apply_substitution(
    prototype: Structure,
    mapping: Mapping[str, str],
    *,
    charges: Mapping[str, int] | None = None,
    rescale: bool = True,
) -> Structure:
    """Decorate a prototype with new elements and (by default) rescale its volume.

    Parameters
    ----------
    prototype : Structure
        The known crystal.
    mapping : mapping of str to str
        ``{old element: new element}``; elements not in it are kept.
    charges : mapping, optional
        Oxidation states of the prototype's elements (they carry over to the substitutes).
    rescale : bool
        Rescale to the volume predicted by :func:`rescale_volume`.

    Returns
    -------
    Structure
        Ordered, without oxidation states.
    """
    base = prototype.copy()
    base.remove_oxidation_states()
    new = base.copy()
    new.replace_species({old: new_el for old, new_el in mapping.items()})
    if not rescale:
        return new
    new_charges = None
    if charges:
        new_charges = {mapping.get(el, el): q for el, q in charges.items()}
    return rescale_volume(new, base, new_charges)
