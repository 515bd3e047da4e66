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

The GP's probits are compressed: its predictive sigma holds its noise (0.45-0.65 eV/atom on the measured worlds,
the spread of the polymorphs it cannot tell apart), so ``z_g`` spans a few tenths where the ensemble's ``z_m`` spans
several units, and a convex weight barely moves the ensemble's order even where the GP's is far better (on
Mg-Ca-Zn-Ge-Sn-N ``z_m + 10 z_g`` ranks the open candidates about as the GP does; ``a = 0.75`` as the ensemble).
:func:`fit_pool_stack` therefore stacks them instead (``composition_pool_stack``): a probit regression of the
purchases' outcomes, ``P = Phi(b0 + b1 z_m + b2 c z_g)`` with ``c`` (:func:`gp_probit_scale`) the ratio of the two
experts' spreads over the round's candidates, the coefficients MAP under a Gaussian prior centred on the ensemble
alone (``b = (0, 1, 0)``), ``b1, b2 >= 0``. :func:`stack_pool` turns it into a Gaussian with the ensemble's sigma.
The other way round the squeeze is the GP's latent sigma (``composition_gp_latent_sigma``: its noise left out) in
the learned pool. Both rank the open candidates better on Mg-Ca-Zn-Ge-Sn-N and found no more there (59 and 61
against 65 over five seeds: docs/policy-benchmarks.md), so both are off by default.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["composition_gp_predictions", "fit_pool_stack", "fit_pool_weight", "gp_probit_scale", "precision_blend",
           "probit_pool", "stack_pool"]


def composition_gp_predictions(policy: Any, state: Any, *, latent: bool = False
                                ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """Posterior mean and standard deviation (noise included, unless ``latent``) of each candidate's E_hull per
    fidelity.

    Parameters
    ----------
    policy : PolicyConfig
        Its ``camd`` block sets the GP's seed-row cap and fit iterations; ``seed`` the subsample.
    state : PolicyState
        Needs ``formulas`` and ``seed_rows`` (computed E_hull of known and campaign structures).

    latent : bool
        The std without the GP's noise (its latent sigma: how sure it is of the composition's mean E_hull), else
        the predictive std (noise included: where one structure of that composition may fall).

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
        if latent:  # how sure the GP is of the composition's mean, not where one polymorph falls around it
            var = np.maximum(var - fitted.gp.noise, 1e-12)
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


def gp_probit_scale(mean_model: Any, std_model: Any, mean_gp: Any, std_gp: Any, threshold: float) -> float:
    """``c`` = spread of the ensemble's probits over the spread of the GP's, over the candidates both predict (1
    where either is flat): ``c z_g`` then spans what ``z_m`` does, and a stacking coefficient of 1 on either means
    the same."""
    zm = (threshold - np.asarray(mean_model, float)) / np.asarray(std_model, float)
    zg = (threshold - np.asarray(mean_gp, float)) / np.asarray(std_gp, float)
    ok = np.isfinite(zm) & np.isfinite(zg)
    if ok.sum() < 2:
        return 1.0
    sm, sg = float(np.std(zm[ok])), float(np.std(zg[ok]))
    return sm / sg if sm > 0 and sg > 0 else 1.0


def fit_pool_stack(p_model: Any, p_gp: Any, outcome: Any, *, scale: float = 1.0, prior_sd: float = 1.0
                   ) -> tuple[tuple[float, float, float], dict[str, Any]]:
    """Coefficients ``(b0, b1, b2)`` of ``P = Phi(b0 + b1 z_m + b2 scale z_g)`` that make the purchases' outcomes
    likeliest under a Gaussian prior of sd ``prior_sd`` around ``(0, 1, 0)`` (the ensemble alone), ``b1, b2 >= 0``.

    Parameters
    ----------
    p_model, p_gp : array_like
        P(stable) of each purchase when it was bought, by the (outcome-calibrated) ensemble and by the GP.
    outcome : array_like of bool
        Whether it came out stable.
    scale : float
        ``c`` of :func:`gp_probit_scale`, applied to the GP's probits.
    prior_sd : float
        The prior's standard deviation of each coefficient.

    Returns
    -------
    tuple, dict
        The coefficients (``(0, 1, 0)`` without purchases) and numbers for the ledger.
    """
    from scipy.optimize import minimize
    from scipy.special import log_ndtr, ndtri

    pm = np.clip(np.asarray(p_model, float), 1e-6, 1 - 1e-6)
    pg = np.clip(np.asarray(p_gp, float), 1e-6, 1 - 1e-6)
    y = np.asarray(outcome, bool)
    prior = np.array([0.0, 1.0, 0.0])
    numbers: dict[str, Any] = {"composition_pool_n": int(y.size), "composition_pool_gp_scale": float(scale)}
    if y.size == 0:
        b = prior
    else:
        x = np.column_stack([np.ones(y.size), ndtri(pm), scale * ndtri(pg)])
        sign = np.where(y, 1.0, -1.0)

        def objective(b: np.ndarray) -> tuple[float, np.ndarray]:
            t = sign * (x @ b)
            logp = log_ndtr(t)
            ratio = np.exp(-0.5 * t * t - 0.5 * np.log(2 * np.pi) - logp)  # phi(t) / Phi(t), stable in the tails
            grad = -(x.T @ (sign * ratio)) + (b - prior) / prior_sd**2
            return float(-logp.sum() + 0.5 * np.sum((b - prior) ** 2) / prior_sd**2), grad

        res = minimize(objective, prior, jac=True, method="L-BFGS-B", bounds=[(None, None), (0.0, None), (0.0, None)])
        b = res.x
        numbers["composition_pool_loglik_gain"] = float(objective(prior)[0] - res.fun)
    coef = (float(b[0]), float(b[1]), float(b[2]))
    numbers.update(composition_pool_b0=coef[0], composition_pool_b1=coef[1], composition_pool_b2=coef[2])
    return coef, numbers


def stack_pool(mean_model: Any, std_model: Any, mean_gp: Any, std_gp: Any, coef: tuple[float, float, float],
               threshold: float, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The Gaussian whose P(E_hull <= threshold) is the stack's ``Phi(b0 + b1 z_m + b2 scale z_g)``, with the
    ensemble's sigma (what a calculation's result may come out at is still the ensemble's spread). A non-finite
    model mean (no prediction) stays as it is."""
    mm, sm = np.asarray(mean_model, float), np.asarray(std_model, float)
    mg, sg = np.asarray(mean_gp, float), np.asarray(std_gp, float)
    b0, b1, b2 = coef
    ok = np.isfinite(mm)
    z = b0 + b1 * (threshold - np.where(ok, mm, 0.0)) / sm + b2 * scale * (threshold - mg) / sg
    return np.where(ok, threshold - z * sm, mm), sm
