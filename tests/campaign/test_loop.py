"""Tests of screener/campaign/loop.py with fast fake components (tests/campaign/campaign_fakes.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from campaign_fakes import (
    FakeCalculator,
    FakeExecutor,
    FakeHulls,
    FakeModel,
    GreedyPlanner,
    count_performed,
    fake_factory,
    make_structures,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymatgen.core import Lattice, Structure

from screener.campaign import Campaign, CampaignConfig, Components, Ledger, Plan, PlanItem, campaign_status
from screener.errors import InvalidInputError


class OverPlanner:
    """Ignores the budget and the batch size: the loop and the ledger must still never overspend."""

    def plan(self, request):
        items = list(request.competing)
        for i, sid in enumerate(request.structure_ids):
            for fidelity in ("scan", "pbe"):
                items.append(PlanItem(sid, fidelity, "everything", float(request.cost[fidelity][i])))
        return Plan(items, {})


def test_run_to_the_end(tmp_path):
    store = tmp_path / "store"
    camp = Campaign.create(tmp_path / "c", CampaignConfig(budget_total=20, batch_size=4), make_structures(10),
                           fake_factory(store))
    out = camp.run()
    assert out["finished"] and out["rounds_run"] >= 2
    status = campaign_status(tmp_path / "c")
    assert status["budget_spent"] <= 20 + 1e-9
    # nothing more fits: the cheapest calculation still open costs more than what is left
    done = {(j.structure_id, j.fidelity) for j in camp.ledger.jobs()}
    open_costs = [camp._cost(s, f)[0] for s in camp._structures for f in ("pbe", "scan") if (s, f) not in done]
    assert not open_costs or min(open_costs) > status["budget_left"] - 1e-9
    assert set(count_performed(store).values()) == {1}
    # every round: hull snapshots, predictions, decisions with the policy's numbers, a model version
    rounds = [r for r in camp.ledger.rounds() if r["state"] == "finished"]
    for r in rounds:
        assert len(camp.ledger.predictions(r["round"])) == 2 * 10
        assert camp.ledger.decisions(r["round"])
    assert len(camp.ledger.hull_snapshots("scan")) == len(rounds)
    # a model version per round, except the last: nothing was left to buy, so no round would use its model
    assert {m["round"] for m in camp.ledger.models()} == {r["round"] for r in rounds[:-1]}
    assert rounds[-1]["info"]["fine_tune"] == "deferred"
    # SCAN calculations get the PBE band gap of the same structure (MP's r2SCAN k-point rule needs it)
    assert camp._flow_kwargs(next(s for s, f in done if f == "pbe"), "scan") == {"pbe_band_gap_ev": 1.0}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    salt=st.text(alphabet="abcdef", min_size=1, max_size=4),
    budget=st.floats(0.05, 40.0),
    batch=st.integers(1, 8),
    fail_bits=st.integers(0, 2**20 - 1),
    actual_factor=st.floats(0.2, 1.0),
    unit=st.sampled_from(["pbe-equivalent", "core-hours"]),
    over_planner=st.booleans(),
)
def test_budget_never_exceeded(tmp_path_factory, salt, budget, batch, fail_bits, actual_factor, unit, over_planner):
    tmp = tmp_path_factory.mktemp("prop")
    structures = make_structures(8, seed=len(salt))
    ids = list(structures)
    fail = {(ids[i // 2], ("pbe", "scan")[i % 2]) for i in range(16) if fail_bits >> i & 1}

    def factory(config, campaign_dir, ledger):
        return Components(FakeCalculator(salt), FakeExecutor(tmp / "store", fail=fail, actual_factor=actual_factor),
                          FakeModel(), FakeHulls(), OverPlanner() if over_planner else GreedyPlanner())

    config = CampaignConfig(budget_total=budget, batch_size=batch, budget_unit=unit, fine_tune_epochs=0)
    camp = Campaign.create(tmp / "c", config, structures, factory)
    seen = []
    original = camp.ledger.commit_plan

    def checked_commit(*args, **kwargs):
        accepted = original(*args, **kwargs)
        b = camp.ledger.budget()
        seen.append(b.spent + b.reserved)
        assert b.spent + b.reserved <= budget + 1e-9  # right after every reservation
        return accepted

    camp.ledger.commit_plan = checked_commit
    camp.run()
    b = camp.ledger.budget()
    assert b.reserved == 0.0
    assert b.spent <= budget + 1e-9
    jobs = camp.ledger.jobs()
    assert sum(j.actual_cost for j in jobs) <= budget + 1e-9  # actual <= estimate here
    assert all(j.state in ("done", "failed") for j in jobs)
    assert len({(j.structure_id, j.fidelity) for j in jobs}) == len(jobs)  # nothing bought twice
    assert {(s, f) for (s, f) in fail} & {(j.structure_id, j.fidelity) for j in jobs if j.state == "done"} == set()
    camp.ledger.close()


def test_actual_cost_over_estimate_stops_planning(tmp_path):
    """Real VASP may cost more than estimated: overruns are charged, and planning stops when the rest is too small."""
    config = CampaignConfig(budget_total=10, batch_size=3, fine_tune_epochs=0)
    camp = Campaign.create(tmp_path / "c", config, make_structures(10),
                           fake_factory(tmp_path / "store", actual_factor=1.5))
    camp.run()
    jobs = camp.ledger.jobs()
    assert sum(j.estimated_cost for j in jobs) <= 10 + 1e-9
    charged = sum(j.actual_cost for j in jobs)
    assert charged == pytest.approx(1.5 * sum(j.estimated_cost for j in jobs))
    # after the last round the remaining budget could not pay for any open calculation's estimate
    left = max(0.0, 10 - charged)
    done = {(j.structure_id, j.fidelity) for j in jobs}
    assert min(camp._cost(s, f)[0] for s in camp._structures for f in ("pbe", "scan") if (s, f) not in done) > left


def _binary(formula_species, a=3.0):
    n = len(formula_species)
    return Structure(Lattice.orthorhombic(a * n, a, a), formula_species, [[i / n, 0, 0] for i in range(n)])


class FixedModel(FakeModel):
    def __init__(self, values):
        super().__init__()
        self.values = values

    def predict_formation_energy(self, structures, fidelity):
        return np.array([self.values[s] for s in structures]), np.full(len(structures), 0.02)


def test_new_stable_phase_raises_neighbours_e_hull(tmp_path):
    """E_hull is measured against the current hull: a new stable Li3Na raises the predicted E_hull of LiNa.

    By hand (reference energies 0): before, the hull is the Li-Na tie line at 0, so E_hull(LiNa) = E_form = -0.1.
    After Li3Na at -0.3 eV/atom (x_Na = 0.25), the hull at x_Na = 0.5 is -0.3 * (1 - 0.5) / (1 - 0.25) = -0.2, so
    E_hull(LiNa) = -0.1 - (-0.2) = +0.1; LiNa2 (x_Na = 2/3) moves from -0.05 to -0.05 + 0.3 * (1/3) / 0.75 = +0.0833.
    """
    structures = {"LiNa": _binary(["Li", "Na"]), "LiNa2": _binary(["Li", "Na", "Na"]),
                  "Li3Na": _binary(["Li", "Li", "Li", "Na"])}
    model = FixedModel({"LiNa": -0.1, "LiNa2": -0.05, "Li3Na": -0.3})
    hulls = FakeHulls()

    def factory(config, campaign_dir, ledger):
        return Components(FakeCalculator(), FakeExecutor(tmp_path / "store"), model, hulls, GreedyPlanner())

    camp = Campaign.create(tmp_path / "c", CampaignConfig(budget_total=5), structures, factory)
    before = camp.rank(1)
    i_lina, i_lina2 = 0, 1
    assert before["pbe"]["e_hull_mean"][i_lina] == pytest.approx(-0.1)
    # a calculation finds Li3Na on the hull: E = E_form + mu (mu_Li = -1.9, mu_Na = -1.3 in the fake world)
    from campaign_fakes import ELEMENT_MU

    mu = ELEMENT_MU["pbe"]
    hulls.add_result("pbe", {"@module": "pymatgen.entries.computed_entries", "@class": "ComputedEntry",
                             "composition": {"Li": 3, "Na": 1}, "correction": 0.0, "entry_id": "Li3Na",
                             "energy": 4 * -0.3 + 3 * mu["Li"] + mu["Na"]})
    after = camp.rank(2)
    assert after["pbe"]["e_hull_mean"][i_lina] == pytest.approx(0.1)
    assert after["pbe"]["e_hull_mean"][i_lina2] == pytest.approx(-0.05 + 0.3 / 3 / 0.75)
    # sigma = the ensemble spread of E_form through the campaign's power-law calibration (no errors yet: scale 1,
    # the exponent at its prior)
    assert after["pbe"]["e_hull_std"][i_lina] == pytest.approx(0.1 * (0.02 / 0.1) ** camp.config.spread_exponent_prior)
    # the SCAN hull has not moved: fidelities are never mixed
    assert after["scan"]["e_hull_mean"][i_lina] == pytest.approx(before["scan"]["e_hull_mean"][i_lina])
    rows = {(p["structure_id"], p["fidelity"]): p for p in camp.ledger.predictions(2)}
    assert rows[("LiNa", "pbe")]["hull_e_form_ev_per_atom"] == pytest.approx(-0.2)


def test_competing_phases_are_planned_and_paid(tmp_path):
    ref = _binary(["Li", "Li"])
    factory = fake_factory(tmp_path / "store", missing={"scan": [("ref-Li2", ref)]})
    camp = Campaign.create(tmp_path / "c", CampaignConfig(budget_total=12, batch_size=3), make_structures(6),
                           factory)
    camp.run(max_rounds=1)
    jobs = {(j.structure_id, j.fidelity): j for j in camp.ledger.jobs()}
    assert ("ref-Li2", "scan") in jobs and jobs[("ref-Li2", "scan")].role == "competing"
    assert jobs[("ref-Li2", "scan")].estimated_cost == pytest.approx(5.0 * 2 / camp.config.unit_cpu_hours * 0.1)
    assert [c["structure_id"] for c in camp.ledger.candidates(role="competing")] == ["ref-Li2"]
    reasons = [d["reason"] for d in camp.ledger.decisions(1)]
    assert any("competing phase" in r for r in reasons)


class Crash(BaseException):
    """Stands for a kill: raised from inside the ledger, never caught by the loop."""


_N_TRANSACTIONS: list[int] = []


def _count_transactions(tmp_path, monkeypatch) -> int:
    """Ledger transactions of one uninterrupted run of the crash-test campaign (measured once)."""
    if not _N_TRANSACTIONS:
        counter = itertools.count()
        original = Ledger.transaction

        def counting(self):
            next(counter)
            return original(self)

        camp = Campaign.create(tmp_path / "dry", CampaignConfig(budget_total=15, batch_size=3),
                               make_structures(8), fake_factory(tmp_path / "dry-store"))
        with monkeypatch.context() as m:
            m.setattr(Ledger, "transaction", counting)
            camp.run()
            camp.ledger.close()
        _N_TRANSACTIONS.append(next(counter))
    return _N_TRANSACTIONS[0]


@pytest.mark.parametrize("fraction", [0.02, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.97])
def test_crash_at_any_transaction_then_resume(tmp_path, monkeypatch, fraction):
    """Crash before the k-th ledger transaction, resume: no calculation repeated or lost, same end state."""
    crash_at = int(fraction * _count_transactions(tmp_path, monkeypatch))
    store = tmp_path / "store"
    structures = make_structures(8)
    config = CampaignConfig(budget_total=15, batch_size=3)
    camp = Campaign.create(tmp_path / "c", config, structures, fake_factory(store))
    counter = itertools.count()
    original = Ledger.transaction

    def crashing(self):
        if next(counter) == crash_at:
            raise Crash()
        return original(self)

    monkeypatch.setattr(Ledger, "transaction", crashing)
    with pytest.raises(Crash):
        camp.run()
    camp.ledger.close()
    monkeypatch.setattr(Ledger, "transaction", original)
    resumed = Campaign.open(tmp_path / "c", fake_factory(store))
    resumed.run()
    jobs = resumed.ledger.jobs()
    performed = count_performed(store)
    assert set(performed.values()) == {1}, "a calculation was repeated"
    assert set(performed) == {(j.structure_id, j.fidelity) for j in jobs}, "a calculation was lost"
    assert all(j.state == "done" and j.result for j in jobs)
    assert resumed.ledger.budget().spent <= 15 + 1e-9
    points = [(p["round"], p["fidelity"]) for p in resumed.ledger.learning_curve()]
    assert len(points) == len(set(points))  # a learning-curve point per round and fidelity, even across a crash
    assert all(r["state"] in ("finished", "empty") for r in resumed.ledger.rounds())


def test_bad_inputs(tmp_path):
    with pytest.raises(InvalidInputError, match="no candidate"):
        Campaign.create(tmp_path / "a", CampaignConfig(budget_total=1), {}, fake_factory(tmp_path / "s"))
    with pytest.raises(InvalidInputError, match="not a screener campaign"):
        Campaign.open(tmp_path, fake_factory(tmp_path / "s"))
    Campaign.create(tmp_path / "b", CampaignConfig(budget_total=1), make_structures(2), fake_factory(tmp_path / "s"))
    with pytest.raises(InvalidInputError, match="already holds a campaign"):
        Campaign.create(tmp_path / "b", CampaignConfig(budget_total=1), make_structures(2),
                        fake_factory(tmp_path / "s"))
    with pytest.raises(ValueError):
        CampaignConfig(budget_total=0)


class OneAtATimeExecutor(FakeExecutor):
    """A remote queue (FireWorks, jobflow-remote): each poll finds at most one more job finished."""

    runs_locally = False

    def run(self):
        if self.queue:
            self.queue, rest = self.queue[:1], self.queue[1:]
            super().run()
            self.queue = rest


def test_remote_executor_is_polled_until_every_job_is_back(tmp_path):
    store = tmp_path / "store"

    def factory(config, campaign_dir, ledger):
        return Components(FakeCalculator(), OneAtATimeExecutor(store), FakeModel(), FakeHulls(), GreedyPlanner())

    config = CampaignConfig(budget_total=10, batch_size=4, poll_interval_s=0.001, executor="fireworks")
    camp = Campaign.create(tmp_path / "c", config, make_structures(6), factory)
    camp.run(max_rounds=1)
    jobs = camp.ledger.jobs()
    assert len(jobs) >= 2 and all(j.state == "done" for j in jobs)
    assert set(count_performed(store).values()) == {1}
