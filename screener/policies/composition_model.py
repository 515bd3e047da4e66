"""A composition model beside the CGAT ensemble: a Gaussian process on composition features, pooled with it.

The CGAT ensemble learns a campaign's results only through fine-tuning, a few epochs a round on a few dozen new
structures. A Gaussian process conditions on every computed E_hull at once, so one composition found stable raises
its neighbours' P(stable) in the next round. CAMD's GP-LCB agent ranks with such a GP (composition features plus a
one-hot fidelity, trained on every computed E_hull; :mod:`screener.policies.camd_gp_lcb`), and on a small
composition space it ranked better than the ensemble (docs/policy-benchmarks.md, Mg-Ca-Zn-Ge-Sn-N).

:func:`composition_gp_predictions` fits that GP (the CAMD peer's own fit,
:func:`~screener.policies.camd_gp_lcb.fit_composition_gp`) and predicts each candidate's E_hull at both fidelities.
:func:`precision_blend` combines it with the ensemble's calibrated Gaussian as a product of two experts:
``1/s^2 = 1/s_m^2 + w/s_g^2``, ``mu = s^2 (mu_m/s_m^2 + w mu_g/s_g^2)``, with the weight ``w`` in (0, 1] discounting
the GP's precision (the two share their training data,
so their errors are not independent). The GP sees composition only: polymorphs get the same GP prediction and the
ensemble alone orders them.

Where the two disagree in how good they are, a fixed weight cannot serve both: on the measured worlds the GP,
conditioned on a campaign's first results, ranked the open candidates 2-7x better than the ensemble on two worlds
and worse on the third (``bench/ranking_from_ledgers.py``). :func:`probit_pool` therefore pools the two
probabilities in probit space, ``z = (1 - a) z_m + a z_g`` with ``z = (thr - mu) / s``, as a Gaussian of mean
``thr - z s`` and ``1/s = (1 - a)/s_m + a/s_g`` (so P(stable) is exactly the pooled one and the closed forms of the
policy still hold), and :func:`fit_pool_weight` learns ``a`` from the campaign's purchases: the value on a grid that
makes the outcomes likeliest, each purchase judged by the two P it was bought on (before its result was known),
the ensemble's read through the campaign's current outcome calibration, so that the weight rewards what the GP adds
to the calibrated ensemble rather than the calibration itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["composition_gp_predictions", "fit_pool_weight", "precision_blend", "probit_pool"]


def composition_gp_predictions(policy: Any, state: Any) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]],
                                                                   dict[str, Any]]:
    """Posterior mean and standard deviation (noise included) of each candidate's E_hull per fidelity.

    Parameters
    ----------
    policy : PolicyConfig
        Its ``camd`` block sets the GP's seed-row cap and fit iterations; ``seed`` the subsample.
    state : PolicyState
        Needs ``formulas`` and ``seed_rows`` (computed E_hull of known and campaign structures).

    Returns
    -------
    dict, dict
        ``{"scan": (mean, std), "pbe": (mean, std)}`` in eV/atom, one entry per candidate, and the fit's numbers
        for the ledger. Without the candidates' formulas or with fewer than two computed structures to learn from
        (a campaign without known phases, before its first results) the first is empty and the numbers say why:
        the ensemble then stands alone.
    """
    from screener.policies.camd_gp_lcb import TooFewSeedRows, fit_composition_gp

    if not state.formulas or not all(state.formulas):
        return {}, {"composition_gp_skipped": "no formula for every candidate"}
    try:
        fitted = fit_composition_gp(state, policy)
    except TooFewSeedRows as exc:  # a campaign without known phases, before its first results
        return {}, {"composition_gp_skipped": str(exc)}
    every = np.arange(len(state.formulas))
    out = {}
    for fidelity in ("scan", "pbe"):
        mean, var, _ = fitted.posterior(every, fidelity)
        out[fidelity] = (mean, np.sqrt(var))
    gp = fitted.gp
    numbers = {"composition_gp_n_train": fitted.n_train, "composition_gp_variance": gp.variance,
               "composition_gp_length_scale": gp.length_scale, "composition_gp_noise_variance": gp.noise}
    return out, numbers


def precision_blend(mean_model: Any, std_model: Any, mean_gp: Any, std_gp: Any, weight: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Product of the model's and the GP's Gaussians, the GP's precision times ``weight`` (see the module docstring).

    A non-finite model mean (no prediction) stays as it is.
    """
    mm, sm = np.asarray(mean_model, float), np.asarray(std_model, float)
    mg, sg = np.asarray(mean_gp, float), np.asarray(std_gp, float)
    pm, pg = 1.0 / sm**2, float(weight) / sg**2
    var = 1.0 / (pm + pg)
    ok = np.isfinite(mm)
    mean = np.where(ok, var * (pm * np.where(ok, mm, 0.0) + pg * mg), mm)
    return mean, np.where(ok, np.sqrt(var), sm)


#: the pool weights fit_pool_weight chooses from
POOL_GRID = tuple(i / 20 for i in range(21))


def fit_pool_weight(p_model: Any, p_gp: Any, outcome: Any) -> tuple[float, dict[str, Any]]:
    """The probit-pool weight ``a`` that makes the purchases' outcomes likeliest (0 without purchases).

    Parameters
    ----------
    p_model, p_gp : array_like
        P(stable) of each purchase when it was bought, by the ensemble and by the GP.
    outcome : array_like of bool
        Whether it came out stable.

    Returns
    -------
    float, dict
        ``a`` in [0, 1] (ties: the smaller, i.e. nearer the ensemble alone) and numbers for the ledger.
    """
    from scipy.special import log_ndtr, ndtri

    pm = np.clip(np.asarray(p_model, float), 1e-6, 1 - 1e-6)
    pg = np.clip(np.asarray(p_gp, float), 1e-6, 1 - 1e-6)
    y = np.asarray(outcome, bool)
    if y.size == 0:
        return 0.0, {"composition_pool_weight": 0.0, "composition_pool_n": 0}
    zm, zg = ndtri(pm), ndtri(pg)
    loglik = [float(np.where(y, log_ndtr(z), log_ndtr(-z)).sum()) for z in ((1 - a) * zm + a * zg for a in POOL_GRID)]
    best = int(np.argmax(loglik))
    return POOL_GRID[best], {"composition_pool_weight": POOL_GRID[best], "composition_pool_n": int(y.size),
                             "composition_pool_loglik_gain": loglik[best] - loglik[0]}


def probit_pool(mean_model: Any, std_model: Any, mean_gp: Any, std_gp: Any, weight: float, threshold: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """The Gaussian whose P(E_hull <= threshold) is ``Phi((1 - a) z_m + a z_g)`` (see the module docstring).

    A non-finite model mean (no prediction) stays as it is.
    """
    mm, sm = np.asarray(mean_model, float), np.asarray(std_model, float)
    mg, sg = np.asarray(mean_gp, float), np.asarray(std_gp, float)
    a = float(weight)
    ok = np.isfinite(mm)
    z = (1 - a) * (threshold - np.where(ok, mm, 0.0)) / sm + a * (threshold - mg) / sg
    std = 1.0 / ((1 - a) / sm + a / sg)
    return np.where(ok, threshold - z * std, mm), np.where(ok, std, sm)
