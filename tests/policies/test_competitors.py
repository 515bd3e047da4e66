"""Competitor survival: P(still stable once the pool's other candidates are computed | stable on today's hull)."""

from __future__ import annotations

import numpy as np
import pytest

from scipy.special import ndtr

from screener.policies.competitors import competitor_survival, lower_hull_energy, scan_mean_given_p_stable

# binary A-B with one known compound AB at -0.5 eV/atom
BASE_X = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
BASE_E = np.array([0.0, 0.0, -0.5])


def test_lower_hull_energy_matches_the_hull_by_hand() -> None:
    q = np.array([[0.5, 0.5], [0.25, 0.75], [0.75, 0.25], [1.0, 0.0]])
    np.testing.assert_allclose(lower_hull_energy(BASE_X, BASE_E, q), [-0.5, -0.25, -0.25, 0.0], atol=1e-9)
    # ternary: a compound below the binary tie-line lowers the hull at its own composition only
    x = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1 / 3, 1 / 3, 1 / 3]], dtype=float)
    e = np.array([0.0, 0.0, 0.0, -0.3])
    got = lower_hull_energy(x, e, np.array([[1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0], [2 / 3, 1 / 6, 1 / 6]]))
    np.testing.assert_allclose(got, [-0.3, 0.0, -0.15], atol=1e-9)


def test_the_higher_of_two_polymorphs_rarely_survives() -> None:
    cand_x = np.array([[0.5, 0.5], [0.5, 0.5]])
    survival, numbers = competitor_survival(BASE_X, BASE_E, cand_x, [-0.05, -0.20], [0.03, 0.03], samples=200)
    assert survival[0] < 0.1 < 0.9 < survival[1]
    assert numbers["n_plausible"] == 2


def test_a_compound_of_another_composition_can_cut_the_hull_below_a_candidate() -> None:
    # a candidate just below the A-AB tie-line at x_B = 0.25, and a likely deep one at x_B = 0.2 that cuts below it
    cand_x = np.array([[0.75, 0.25], [0.8, 0.2]])
    survival, _ = competitor_survival(BASE_X, BASE_E, cand_x, [-0.01, -0.3], [0.01, 0.02], samples=100)
    assert survival[0] < 0.2 and survival[1] > 0.9
    alone, _ = competitor_survival(BASE_X, BASE_E, cand_x[:1], [-0.01], [0.01], samples=100)
    assert alone[0] == pytest.approx(1.0)


def test_implausible_candidates_take_the_overall_share_and_nothing_plausible_gives_one() -> None:
    cand_x = np.array([[0.5, 0.5], [0.5, 0.5], [0.25, 0.75]])
    survival, numbers = competitor_survival(BASE_X, BASE_E, cand_x, [-0.05, -0.20, 2.0], [0.03, 0.03, 0.05],
                                            samples=100)
    assert numbers["n_plausible"] == 2
    assert survival[2] == pytest.approx(numbers["overall_survival"])
    none, numbers = competitor_survival(BASE_X, BASE_E, cand_x, [2.0, 2.0, 2.0], [0.05] * 3)
    assert numbers["n_plausible"] == 0 and np.all(none == 1.0)


def test_a_hull_of_the_elements_alone_is_flat_at_zero() -> None:
    x = np.eye(3)
    q = np.array([[1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
    np.testing.assert_allclose(lower_hull_energy(x, np.zeros(3), q), [0.0, 0.0], atol=1e-9)
    survival, numbers = competitor_survival(np.eye(2), np.zeros(2), np.array([[0.5, 0.5]]), [-0.1], [0.05])
    assert numbers["n_plausible"] == 1 and survival[0] == pytest.approx(1.0)


def test_a_candidate_known_through_its_p_stable_is_drawn_below_the_hull_that_often() -> None:
    p, std = np.array([0.05, 0.5, 0.61, 1.0]), np.array([0.03, 0.1, 0.05, 0.02])
    mean = scan_mean_given_p_stable(p, std, threshold=0.01)
    np.testing.assert_allclose(ndtr((0.01 - mean) / std), [0.05, 0.5, 0.61, 1.0 - 1e-6], rtol=1e-9)
    assert np.all(np.isfinite(mean)) and mean[1] == pytest.approx(0.01)


def test_a_shared_model_error_stops_many_wide_long_shots_from_undercutting_a_likely_candidate() -> None:
    # one likely candidate just below the A-AB tie-line, and 30 long shots around it (0.3 eV/atom above the hull,
    # sigma 0.4): drawn independently, the lowest of them cuts below the candidate in most draws; with a shared
    # error they fall together, the candidate with them, and it keeps its place far more often
    xs = np.linspace(0.05, 0.45, 31)
    cand_x = np.column_stack([1 - xs, xs])
    mean = np.full(31, 0.3)
    std = np.full(31, 0.4)
    mean[15], std[15] = -0.05, 0.4
    alone, _ = competitor_survival(BASE_X, BASE_E, cand_x, mean, std, samples=400, seed=1)
    shared, _ = competitor_survival(BASE_X, BASE_E, cand_x, mean, std, samples=400, seed=1, error_correlation=0.8)
    assert alone[15] < 0.5 and shared[15] > alone[15] + 0.2


def test_no_error_correlation_repeats_the_independent_draws_exactly() -> None:
    cand_x = np.array([[0.75, 0.25], [0.8, 0.2], [0.5, 0.5]])
    args = (BASE_X, BASE_E, cand_x, [-0.01, -0.3, -0.02], [0.05, 0.1, 0.2])
    np.testing.assert_array_equal(competitor_survival(*args, seed=3)[0],
                                  competitor_survival(*args, seed=3, error_correlation=0.0)[0])
    with_rho = competitor_survival(*args, seed=3, error_correlation=0.5)[0]
    assert np.all((with_rho >= 0) & (with_rho <= 1))


def test_fewer_elements_keeps_polymorphs_but_lets_a_deep_binary_undercut_a_ternary() -> None:
    # ternary A-B-C with the elements only: two ternary polymorphs at ABC, and a likely deep binary AB that cuts the
    # hull far below the shallow one at ABC
    x = np.eye(3)
    cand_x = np.array([[1 / 3, 1 / 3, 1 / 3], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
    mean, std = [-0.05, -0.20, -0.6], [0.03, 0.03, 0.02]
    every, _ = competitor_survival(x, np.zeros(3), cand_x[:2], mean[:2], std[:2], samples=200)
    assert every[0] < 0.1  # against its own polymorph the shallow one rarely survives
    lower, _ = competitor_survival(x, np.zeros(3), cand_x[:2], mean[:2], std[:2], samples=200, against="fewer_elements")
    np.testing.assert_allclose(lower, 1.0)  # no fewer-element candidate: nothing undercuts either polymorph
    # the binary at -0.6 puts the hull at ABC at -0.4 (two thirds of the way on the AB-C tie-line): both ternaries,
    # at -0.05 and -0.2, lie above it; the binary, judged against the elements only, survives
    with_binary, _ = competitor_survival(x, np.zeros(3), cand_x, mean, std, samples=200, against="fewer_elements")
    assert with_binary[0] < 0.1 and with_binary[1] < 0.1 and with_binary[2] > 0.9
    # same_elements is the other way round: the polymorphs judged against each other, the binary ignored
    same, _ = competitor_survival(x, np.zeros(3), cand_x, mean, std, samples=200, against="same_elements")
    np.testing.assert_allclose(same, every.tolist() + [1.0], atol=0.02)


def test_likelier_keeps_the_likeliest_polymorph_and_marks_down_the_next() -> None:
    # two polymorphs at AB: the deeper one is the likelier; the shallow one lies above it in most draws
    cand_x = np.array([[0.5, 0.5], [0.5, 0.5]])
    mean, std = [-0.02, -0.08], [0.03, 0.03]  # P(below today's hull) 0.75 and 0.996
    every, _ = competitor_survival(BASE_X, BASE_E, cand_x, mean, std, samples=200)
    ranked, _ = competitor_survival(BASE_X, BASE_E, cand_x, mean, std, samples=200, against="likelier", block=1)
    assert every[0] < 0.2 and ranked[0] < 0.2  # the shallow one loses to the deep one either way
    assert every[1] > 0.9 and ranked[1] > 0.9
    # listed the other way round the ranking follows P, not the order given
    flipped, _ = competitor_survival(BASE_X, BASE_E, cand_x[::-1], mean[::-1], std[::-1], samples=200,
                                     against="likelier", block=1)
    np.testing.assert_allclose(flipped, ranked[::-1])
    # a likely polymorph beside a wide long shot: against all, the long shot's deep draws undercut it; ranked, the
    # likely one keeps its odds and only the long shot is judged against it
    wide_mean, wide_std = [-0.05, -0.03], [0.02, 0.2]  # P(below) 0.994 and 0.56
    every, _ = competitor_survival(BASE_X, BASE_E, cand_x, wide_mean, wide_std, samples=400)
    ranked, _ = competitor_survival(BASE_X, BASE_E, cand_x, wide_mean, wide_std, samples=400, against="likelier",
                                    block=1)
    assert every[0] < 0.75 and ranked[0] > 0.95
    # in one block neither is judged against the other
    together, _ = competitor_survival(BASE_X, BASE_E, cand_x, mean, std, samples=200, against="likelier", block=2)
    np.testing.assert_allclose(together, 1.0)
    with pytest.raises(ValueError, match="against"):
        competitor_survival(BASE_X, BASE_E, cand_x, mean, std, against="same")
