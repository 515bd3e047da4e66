"""A failing "VASP" job for the custodian tests: real custodian (its Custodian class writes the real custodian.json
and raises its real exception), a fake command instead of VASP and a handler that always finds zbrent/brmix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from custodian.custodian import Custodian, ErrorHandler, Job
from jobflow import job
from jobflow.core.job import JobConfig
from jobflow.core.reference import OnMissing

from screener.calculators.result import CalcResult

#: the (module, callable) pairs of this file, for the tests to allow-list
CALLABLES = {("custodian_fakes", "fake_vasp"), ("custodian_fakes", "convert"), ("custodian_fakes", "walltime_once")}


class FakeVaspJob(Job):
    """Runs nothing (a VASP run that keeps hitting the same errors)."""

    def setup(self, directory: str = "./") -> None:
        pass

    def run(self, directory: str = "./") -> Any:
        import subprocess

        return subprocess.Popen(["true"], cwd=directory)

    def postprocess(self, directory: str = "./") -> None:
        pass


class ZbrentBrmixHandler(ErrorHandler):
    """Finds ZBRENT and BRMIX every time and 'fixes' them (as VaspErrorHandler would, with INCAR changes)."""

    is_monitor = False

    def check(self, directory: str = "./") -> bool:
        return True

    def correct(self, directory: str = "./") -> dict:
        return {"errors": ["zbrent", "brmix"], "actions": [{"dict": "INCAR", "action": {"_set": {"IBRION": 1}}}]}


def run_failing_custodian(directory: str | Path = ".", max_errors_per_job: int = 2) -> None:
    """custodian's run as atomate2's run_vasp does it; raises MaxCorrectionsPerJobError after writing its log."""
    Custodian([ZbrentBrmixHandler()], [FakeVaspJob()], max_errors=10, max_errors_per_job=max_errors_per_job,
              directory=str(directory)).run()


@job
def fake_vasp(structure_id: str) -> dict:
    """A VASP job that custodian gives up on (in the job's own folder, as atomate2's)."""
    run_failing_custodian(".")
    return {"never": structure_id}


@job(config=JobConfig(on_missing_references=OnMissing.NONE))
def convert(task_doc: Any, structure_id: str) -> CalcResult:
    """What the VASP back-end's conversion job writes when the VASP job left no output."""
    return CalcResult.failed(structure_id=structure_id, fidelity="pbe", backend="vasp", label="fake VASP",
                             reason="VASP job of attempt 1 failed without output", n_sites=2, cost_cpu_hours=1.0)


@job
def walltime_once(structure_id: str, marker: str) -> CalcResult:
    """Killed at the walltime on its first run (the scheduler's message), then finishes."""
    path = Path(marker)
    if not path.exists():
        path.write_text("killed once")
        raise RuntimeError("slurmstepd: error: *** JOB 4242 ON nid001 CANCELLED AT 2026-01-01 DUE TO TIME LIMIT ***")
    return CalcResult(structure_id=structure_id, fidelity="pbe", backend="standin", label="fake", success=True,
                      energy_ev=-4.0, n_sites=2, cost_cpu_hours=1.0)
