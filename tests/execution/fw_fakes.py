"""Fast fake campaign components whose calculations are real jobflow jobs, for FireWorks tests across processes.

Importable by a FireWorks worker (``rlaunch``) started with ``PYTHONPATH=tests/execution:tests/campaign``: the jobs
name :func:`fake_dft` of this module. As a script it is ``screener`` (the real CLI) with these fakes in place of
:func:`screener.campaign.components.build_components`::

    python fw_fakes.py run --campaign C --executor fireworks --executor-option launchpad=lp.yaml ... --no-wait

``FAKE_DFT_SLEEP_S`` makes each job sleep that long (a job to kill mid-run).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from campaign_fakes import ELEMENT_MU, FakeHulls, FakeModel, GreedyPlanner, true_e_form


def fake_dft(structure_id: str, fidelity: str, formula: str, n_sites: int, cost_cpu_hours: float) -> Any:
    """The fake world's energy of ``structure_id`` at ``fidelity`` as a CalcResult (what a DFT job returns)."""
    from pymatgen.core import Composition

    from screener.calculators.result import CalcResult

    time.sleep(float(os.environ.get("FAKE_DFT_SLEEP_S", "0")))
    comp = Composition(formula)
    mu = ELEMENT_MU[fidelity]
    e_form = true_e_form(structure_id, fidelity)
    energy = (e_form + sum(comp.get_atomic_fraction(el) * mu[el.symbol] for el in comp)) * comp.num_atoms
    entry = {"@module": "pymatgen.entries.computed_entries", "@class": "ComputedEntry",
             "composition": comp.as_dict(), "energy": energy, "correction": 0.0, "entry_id": structure_id,
             "data": {"structure_id": structure_id, "fidelity": fidelity, "backend": "standin"}}
    return CalcResult(structure_id=structure_id, fidelity=fidelity, backend="standin", label="fake DFT",
                      success=True, energy_ev=energy, energy_per_atom_ev=energy / n_sites, n_sites=n_sites,
                      cost_cpu_hours=cost_cpu_hours, entry=entry, band_gap_ev=1.0)


class JobCalculator:
    """FakeCalculator's costs; its flows are jobflow Jobs of :func:`fake_dft` with the uuid asked for."""

    def estimate_cost_cpu_hours(self, structure: Any, fidelity: str) -> float:
        return 0.1 * len(structure) * (5.0 if fidelity == "scan" else 1.0)

    def make_flow(self, structure: Any, fidelity: str, structure_id: str, *, uuid: str | None = None,
                  **kw: Any) -> Any:
        from jobflow import Job

        cost = self.estimate_cost_cpu_hours(structure, fidelity)
        kwargs = {"uuid": uuid} if uuid else {}
        return Job(fake_dft, function_args=(structure_id, fidelity, structure.composition.formula, len(structure),
                                            cost), name=f"fake {fidelity} {structure_id}",
                   metadata={"structure_id": structure_id, "fidelity": fidelity, "backend": "standin",
                             "n_sites": len(structure)}, **kwargs)


def factory(config: Any, campaign_dir: Path, ledger: Any) -> Any:
    """The real executor of the config (FireWorks) with fast fakes for everything else."""
    from screener.campaign import Components
    from screener.execution import get_executor

    executor = get_executor(config.executor, campaign_dir, **config.executor_options)
    return Components(JobCalculator(), executor, FakeModel(), FakeHulls(), GreedyPlanner())


if __name__ == "__main__":
    import fw_fakes  # by its module name, so jobs name fw_fakes.fake_dft (a worker cannot import __main__'s)

    import screener.campaign.components as components

    components.build_components = fw_fakes.factory
    from screener.cli import main

    main(sys.argv[1:])
