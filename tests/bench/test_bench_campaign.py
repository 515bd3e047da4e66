"""bench/campaign.py: the scoring against the world's ground truth, and a tiny end-to-end run of the script."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "campaign.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_campaign", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_campaign"] = module
    spec.loader.exec_module(module)
    return module


def _run(scan, pbe=(), claims=(), rounds=None):
    return {"done": {"scan": list(scan), "pbe": list(pbe)}, "status": {"stable_found": list(claims),
            "budget_spent": 9.0, "budget_left": 1.0}, "summary": {"rounds_run": 2}, "n_failed": 0, "wall_s": 1.0,
            "scan_round": rounds or {s: 1 for s in scan}}


def test_score_counts_only_scan_confirmed_truly_stable(bench):
    truth = {"a": True, "b": False, "c": True, "d": False, "e": True}
    run = _run(scan=["a", "b", "competing-x"], pbe=["c", "d"], claims=["a", "b"], rounds={"a": 2, "b": 1})
    s = bench.score(run, truth, prevalence=0.6)
    assert s["selected"] == 2  # ids outside the pool (not in truth) are not candidates
    assert s["found"] == 1  # "c" is truly stable but only PBE-computed: not found
    assert s["precision"] == pytest.approx(0.5)
    assert s["daf"] == pytest.approx(0.5 / 0.6)
    assert s["pbe_screened_truly_stable"] == 1
    assert (s["campaign_claims_stable"], s["campaign_claims_truly_stable"]) == (2, 1)
    assert s["found_by_round"] == {"1": 0, "2": 1}


def test_score_without_scan_has_no_precision(bench):
    s = bench.score(_run(scan=[]), {"a": True}, prevalence=1.0)
    assert s["found"] == 0 and math.isnan(s["precision"]) and math.isnan(s["daf"])


def test_oracle_confirms_stable_cheapest_first(bench):
    truth = {"a": True, "b": True, "c": False, "d": True}
    cost = {"a": 5.0, "b": 2.0, "c": 1.0, "d": 4.0}
    assert bench.oracle(list(truth), truth, cost, budget=7.5) == {"max_found": 2, "max_scan_calculations": 3}
    assert bench.oracle(list(truth), truth, cost, budget=1.5) == {"max_found": 0, "max_scan_calculations": 1}


def test_policy_file_takes_the_seed_and_an_acquisition(bench, tmp_path):
    from screener.policies import load_policy

    policy = load_policy(bench.policy_file("scan-only+lcb", 3, tmp_path))
    assert policy.seed == 3 and policy.acquisition.kind == "lcb" and policy.kind == "scan-only"
    assert load_policy(bench.policy_file("random", 5, tmp_path)).seed == 5


@pytest.mark.slow
def test_tiny_run_prints_one_json_object(bench, tmp_path, capsys):
    out = tmp_path / "result.json"
    result = bench.main([
        "--quick", "--size", "24", "--pretrain-epochs", "2", "--members", "2", "--budget", "12", "--batch", "3",
        "--fine-tune-epochs", "1", "--seeds", "0", "--policies", "random,scan-only", "--work-dir", str(tmp_path),
        "--output", str(out), "--calibration-split", "0",  # 12 known structures: too few to hold 20 out
        "--no-malloc-tuning",  # the test session's allocator stays as it is
    ])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == json.loads(out.read_text()) == json.loads(json.dumps(result))
    pool = result["pool"]
    assert pool["n_candidates"] + pool["n_known_pbe"] == result["world"]["n_structures"]
    assert pool["prevalence"] == pytest.approx(pool["n_truly_stable"] / pool["n_candidates"], abs=1e-4)
    assert set(result["runs"]) == {"random", "scan-only"}
    assert result["malloc_tuning"] is False
    for policy, by_seed in result["runs"].items():
        run = by_seed["0"]
        assert 0 < run["budget_spent"] <= 12 + 1e-9, policy
        assert run["selected"] == run["n_scan"] > 0, policy
        assert 0 <= run["found"] <= min(run["selected"], pool["n_truly_stable"]), policy
        assert run["found"] <= result["oracle"]["max_found"], policy
    assert result["summary"]["random"]["found_vs_random"]["mean"] in (1.0, None)

    # a lane of one later seed with a model per seed trains that seed's model only, not the world seed's as well
    lane = tmp_path / "lane"
    later = bench.main([
        "--quick", "--world", result["world"]["dir"], "--pretrain-epochs", "2", "--members", "2", "--budget", "12",
        "--batch", "3", "--fine-tune-epochs", "1", "--seeds", "1", "--model-per-seed", "--policies", "random",
        "--work-dir", str(lane), "--output", str(lane / "result.json"), "--calibration-split", "0",
        "--no-malloc-tuning",
    ])
    trained = sorted(d.name for d in lane.glob("campaign_init_*") if d.is_dir())
    assert len(trained) == 1 and trained[0].endswith("_ms1"), trained
    assert later["initial_model"] is None and later["initial_model_per_seed"]["1"]["training_seed"] == 1


def test_summary_of_a_partial_grid_uses_the_seeds_each_policy_finished(bench):
    def r(found, spent=10.0):
        return {"found": found, "found_per_unit": found / spent, "daf": float(found), "selected": 5}

    runs = {"expected-value": {"0": r(6), "1": r(4)}, "random": {"0": r(2), "1": r(1)},
            "scan-only": {"0": r(3)}, "camd-gp-lcb": {}}
    summary = bench.summarise(runs, [0, 1, 2])
    ev = summary["expected-value"]
    assert ev["found"]["n"] == 2
    # seed 0: best baseline scan-only (3); seed 1: scan-only did not finish, so random (1)
    assert ev["found_per_unit_vs_best_baseline"]["mean"] == pytest.approx((6 / 3 + 4 / 1) / 2)
    assert ev["found_vs_random"]["mean"] == pytest.approx((3 + 4) / 2)
    assert summary["camd-gp-lcb"]["found"]["n"] == 0
    assert "found_per_budget" not in ev  # only with the budget given


def test_found_per_budget_judges_an_early_stop_on_the_whole_budget(bench):
    """A policy that stopped at 6 of 10 units with 3 finds: 0.5 per unit spent, 0.3 per unit of the budget; a
    baseline that spent all 10 for 4 finds is 0.4 either way."""
    runs = {"expected-value": {"0": {"found": 3, "found_per_unit": 3 / 6, "daf": 1.0, "selected": 3,
                                     "budget_spent": 6.0}},
            "scan-only": {"0": {"found": 4, "found_per_unit": 4 / 10, "daf": 1.0, "selected": 4,
                                "budget_spent": 10.0}}}
    ev = bench.summarise(runs, [0], budget=10.0)["expected-value"]
    assert ev["found_per_unit_vs_best_baseline"]["mean"] == pytest.approx(0.5 / 0.4)
    assert ev["found_per_budget"]["mean"] == pytest.approx(0.3)
    assert ev["found_per_budget_vs_best_baseline"]["mean"] == pytest.approx(0.3 / 0.4)
    assert ev["budget_spent"]["mean"] == pytest.approx(6.0)


def test_model_per_seed_gives_each_campaign_seed_its_own_training_seed(bench):
    shared = bench.parse_args(["--quick", "--world-seed", "3"])
    per_seed = bench.parse_args(["--quick", "--world-seed", "3", "--model-per-seed"])
    assert [bench.model_seed(shared, s) for s in (0, 1, 2)] == [3, 3, 3]
    assert [bench.model_seed(per_seed, s) for s in (0, 1, 2)] == [3, 4, 5]  # seed 0 keeps the shared model
    with pytest.raises(SystemExit):  # a given model cannot be pre-trained per seed
        bench.parse_args(["--quick", "--model-per-seed", "--model", "models/x"])


def test_transfer_from_makes_its_own_initial_models_in_their_own_folders(bench, tmp_path, monkeypatch):
    shipped = Path(__file__).resolve().parents[2] / "models" / "pbe-e-form-small-world20k"
    with pytest.raises(SystemExit):  # not an ensemble folder
        bench.parse_args(["--quick", "--transfer-from", str(tmp_path)])
    with pytest.raises(SystemExit):  # a given model is not made by transfer
        bench.parse_args(["--quick", "--transfer-from", str(shipped), "--model", str(shipped)])
    args = bench.parse_args(["--quick", "--transfer-from", str(shipped), "--model-per-seed",
                             "--work-dir", str(tmp_path)])
    calls = []
    monkeypatch.setattr(bench, "train_initial", lambda *a, **k: calls.append((a[4], k)) or (a[4], {}))

    class Data:
        structure_ids = ["a", "b", "c"]
        world_dir = Path("w")

    bench.initial_model(args, Data(), np.array([0, 1]), np.array([2]), training_seed=1)
    directory, kwargs = calls[0]
    assert directory.name.endswith("_ms1_cal0.1_from-pbe-e-form-small-world20k")
    assert kwargs["init"] == shipped and "transferred" in kwargs["source"]

def test_a_second_process_waits_for_the_initial_model_and_reads_it_back(bench, tmp_path, monkeypatch):
    """Two benchmark lanes started together need the same initial model: the one that finds it being trained waits
    on the lock and reads the model back, rather than training it again into the same folder."""
    import threading

    directory = tmp_path / "campaign_init_world"
    holding, release = threading.Event(), threading.Event()

    def first_lane() -> None:  # trains: holds the lock, writes the model's record, lets go
        with bench.training_lock(directory):
            holding.set()
            release.wait(10)
            directory.mkdir()
            (directory / "bench_pretrain.json").write_text(json.dumps({"training_seed": 3, "n_train": 7}))

    def train_again(*args, **kwargs):
        raise AssertionError("the second lane trained the model the first lane was training")

    monkeypatch.setattr(bench, "_train_initial_locked", train_again)
    lane = threading.Thread(target=first_lane)
    lane.start()
    assert holding.wait(10)
    got: list = []
    second = threading.Thread(target=lambda: got.append(bench.train_initial(None, None, None, None, directory, 3,
                                                                            "pbe", source="test")))
    second.start()
    second.join(0.3)
    assert second.is_alive() and not got  # blocked on the lock while the first lane trains
    release.set()
    lane.join(10)
    second.join(10)
    assert got == [(directory, {"training_seed": 3, "n_train": 7})]
    # with nobody holding it, a lane that finds no model trains it itself, under the lock
    monkeypatch.setattr(bench, "_train_initial_locked", lambda *a, **k: ("trained", {}))
    assert bench.train_initial(None, None, None, None, tmp_path / "other", 4, "pbe", source="test") == ("trained", {})


def test_a_campaign_another_process_is_running_is_left_alone(bench, tmp_path):
    """Two lanes given the same campaign: the second must not delete the folder the first is running (it restarts
    only an unfinished campaign nobody holds); the grid then skips that campaign."""
    from screener.campaign.folder import CampaignBusyError, acquire_lock

    campaign_dir = tmp_path / "seed0" / "expected-value_flat_b300"
    campaign_dir.mkdir(parents=True)
    (campaign_dir / "ledger.sqlite").write_text("being written")
    lock = acquire_lock(campaign_dir, what="run")
    try:
        with pytest.raises(CampaignBusyError, match="being run by process"):
            bench.run_one(None, policy="expected-value", seed=0, campaign_dir=campaign_dir, pool_file=Path("x"),
                          model=Path("m"), world=None, references=Path("r"))
        assert (campaign_dir / "ledger.sqlite").read_text() == "being written"
    finally:
        lock.release()


def test_calibration_split_fits_the_spread_on_the_held_out_known_structures_only(bench, tmp_path, monkeypatch):
    from types import SimpleNamespace

    import numpy as np

    from screener.campaign.ensemble_model import model_spread_calibration
    from screener.cgat import ensemble as ensemble_module
    from screener.policies.calibration import fit_held_out_calibration

    rng = np.random.default_rng(0)
    n = 60
    labels = rng.normal(size=n)
    std = rng.uniform(0.02, 0.3, size=n)
    mean = labels + rng.normal(size=n) * 2.5 * std  # errors wider than the std: the fit must find a scale > 1

    class Ensemble:  # predicts graph i (its index) with the arrays above
        def predict(self, graphs):
            idx = np.asarray(graphs)
            return SimpleNamespace(mean=mean[idx], std=std[idx])

    monkeypatch.setattr(ensemble_module.CGATEnsemble, "load", classmethod(lambda cls, d: Ensemble()))
    data = SimpleNamespace(graphs=list(range(n)), labels={("pbe", "e_form"): labels})
    held = np.arange(10, 40)
    info = bench.calibrate_initial_model(tmp_path, data, held)
    expected = fit_held_out_calibration(mean[held] - labels[held], std[held])
    assert info["n_held_out"] == 30 and info["scale"] == pytest.approx(expected.scale) and expected.scale > 1
    recorded = model_spread_calibration(tmp_path, "pbe")  # what a campaign's round 1 reads
    assert (recorded.scale, recorded.exponent) == pytest.approx((expected.scale, expected.exponent))
    with pytest.raises(SystemExit, match="at least 20"):
        bench.calibrate_initial_model(tmp_path, data, np.arange(5))
    with pytest.raises(SystemExit):
        bench.parse_args(["--quick", "--calibration-split", "0.6"])
    quick = bench.parse_args(["--quick"])
    assert quick.calibration_split == 0.1  # the default, as `screener train` holds out 10 %
    assert bench.calibration_share(quick, 1000) == pytest.approx(0.1)
    assert bench.calibration_share(quick, 150) == pytest.approx(20 / 150)  # at least the 20 errors a fit needs
    with pytest.raises(SystemExit, match="too few"):
        bench.calibration_share(quick, 30)
    assert bench.calibration_share(bench.parse_args(["--quick", "--calibration-split", "0"]), 30) == 0.0


def test_no_new_after_is_the_next_such_time_past_midnight_too(bench):
    day = 20_000 * 86400.0  # a UTC midnight
    evening = day + 22 * 3600 + 40 * 60  # 22:40
    assert bench.no_new_after_deadline("00:30", evening) == day + 86400 + 30 * 60  # tomorrow, not already past
    assert bench.no_new_after_deadline("23:10", evening) == day + 23 * 3600 + 10 * 60  # later today
    for bad in ("25:00", "10", "10:00:00", "ten"):
        with pytest.raises(bench.argparse.ArgumentTypeError, match="HH:MM"):
            bench.no_new_after_deadline(bad, evening)
