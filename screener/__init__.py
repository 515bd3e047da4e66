"""screener: active learning for stable crystals at SCAN accuracy.

Importing :mod:`screener` has no side effects and does not import torch; the public API is resolved lazily.
"""

from __future__ import annotations

from screener._lazy import lazy_getattr


__version__ = "0.1.0"

# name -> module that defines it; resolved on first access so `screener --help` stays fast.
_LAZY = {
    "ScreenerError": "screener.errors",
    "InvalidInputError": "screener.errors",
    "InvalidStructureError": "screener.errors",
    "read_structures": "screener.structures",
    "StructureRecord": "screener.structures",
    "ReadResult": "screener.structures",
    "validate_structure": "screener.structures",
    "deduplicate": "screener.structures",
    "write_structures": "screener.structures",
    "build_graph": "screener.graphs",
    "build_graphs": "screener.graphs",
    "CrystalGraph": "screener.graphs",
    "GraphBatch": "screener.graphs",
    "collate_graphs": "screener.graphs",
    "decide": "screener.policies",
    "load_policy": "screener.policies",
    "PolicyConfig": "screener.policies",
    "fit_scaling_law": "screener.policies",
    "ScalingLawFit": "screener.policies",
    "ScalingLawPrior": "screener.policies",
    "FidelityHull": "screener.hull",
    "HullSet": "screener.hull",
    "reference_entries": "screener.hull",
    "get_mp_entries": "screener.hull",
    "CalcResult": "screener.calculators",
    "CostModel": "screener.calculators",
    "get_calculator": "screener.calculators",
    "get_executor": "screener.execution",
    "make_job_store": "screener.execution",
    "build_world": "screener.world",
    "read_world": "screener.world",
    "generate_candidates": "screener.world",
    "run_campaign": "screener.campaign.api",
    "campaign_status": "screener.campaign",
    "build_report": "screener.report",
    "CGATConfig": "screener.cgat",
    "CGAT": "screener.cgat",
    "CGATEnsemble": "screener.cgat",
    "train_ensemble": "screener.cgat",
}

__all__ = ["__version__", *_LAZY]


__getattr__ = lazy_getattr(__name__, _LAZY)
