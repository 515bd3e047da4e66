"""Simulated multi-fidelity worlds: real and substituted crystals labelled at PBE and SCAN level by stand-ins.

``build_world`` (``screener world build``) writes Alexandria-style ``json.bz2`` shards of ComputedStructureEntry
dicts that the replay back-end reads; ``generate_candidates`` (``screener candidates``) decorates the shipped
prototypes with the elements of one chemical space. See docs/world.md.

Names are resolved lazily so importing this package imports neither pymatgen nor torch.
"""

from __future__ import annotations

from screener._lazy import lazy_getattr


_LAZY = {
    "build_world": "screener.world.build",
    "read_world": "screener.world.io",
    "world_files": "screener.world.io",
    "World": "screener.world.io",
    "WorldManifest": "screener.world.manifest",
    "label_statistics": "screener.world.manifest",
    "GeneratorConfig": "screener.world.generate",
    "generate_world_structures": "screener.world.generate",
    "generate_candidates": "screener.world.generate",
    "parse_elements": "screener.world.generate",
    "LabelConfig": "screener.world.labels",
    "label_structures": "screener.world.labels",
    "Prototype": "screener.world.prototypes",
    "load_prototypes": "screener.world.prototypes",
    "prototypes_from_records": "screener.world.prototypes",
    "oxidation_states": "screener.world.substitution",
    "apply_substitution": "screener.world.substitution",
    "propose_substitution": "screener.world.substitution",
    "substitution_elements": "screener.world.substitution",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
