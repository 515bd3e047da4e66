"""Calculations as jobflow jobs: one result type (:class:`CalcResult`), back-ends ``standin`` (CHGNet via atomate2
force-field makers), ``vasp`` (atomate2 MP makers) and ``replay`` (a labelled data set), and a cost model.

Names are resolved lazily so importing this package does not import atomate2 or torch.
"""

from __future__ import annotations

from screener._lazy import lazy_getattr


_LAZY = {
    "CalcResult": "screener.calculators.result",
    "make_entry_dict": "screener.calculators.result",
    "CostModel": "screener.calculators.cost",
    "get_calculator": "screener.calculators.base",
    "calc_uuid": "screener.calculators.base",
    "Calculator": "screener.calculators.base",
    "StandinCalculator": "screener.calculators.standin",
    "StandinMaker": "screener.calculators.standin",
    "energies_batch": "screener.calculators.standin",
    "VaspCalculator": "screener.calculators.vasp",
    "ReplayCalculator": "screener.calculators.replay",
    "ReplayDataset": "screener.calculators.replay",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
