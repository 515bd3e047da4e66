"""A composition model beside the CGAT ensemble: a Gaussian process on composition features, blended by precision.

The CGAT ensemble learns a campaign's results only through fine-tuning, a few epochs a round on a few dozen new
structures. A Gaussian process conditions on every computed E_hull at once, so one composition found stable raises
its neighbours' P(stable) in the next round. CAMD's GP-LCB agent ranks with such a GP (composition features plus a
one-hot fidelity, trained on every computed E_hull; :mod:`screener.policies.camd_gp_lcb`), and on a small
composition space it ranked better than the ensemble (docs/policy.md, Mg-Ca-Zn-Ge-Sn-N).

:func:`composition_gp_predictions` fits that GP (the same features, seed rows, subsample and fit as the CAMD peer)
and predicts each candidate's E_hull at both fidelities. :func:`precision_blend` combines it with the ensemble's
calibrated Gaussian as a product of two experts: ``1/s^2 = 1/s_m^2 + w/s_g^2``, ``mu = s^2 (mu_m/s_m^2 +
w mu_g/s_g^2)``, with the weight ``w`` in (0, 1] discounting the GP's precision (the two share their training data,
so their errors are not independent). The GP sees composition only: polymorphs get the same GP prediction and the
ensemble alone orders them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["composition_gp_predictions", "precision_blend"]


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
        for the ledger.

    Raises
    ------
    InvalidInputError
        No formulas, or fewer than two seed rows.
    """
    from pymatgen.core import Composition

    from screener.errors import InvalidInputError
    from screener.policies.camd_features import composition_features
    from screener.policies.camd_gp_lcb import ExactGP, _rows, _seed, _standardise

    if not state.formulas:
        raise InvalidInputError("the composition model needs the candidates' formulas (state.formulas)")
    seed_formulas, seed_fidelities, seed_y = _seed(state, policy)
    if len(seed_y) < 2:
        raise InvalidInputError("the composition model needs at least 2 computed structures (state.seed_rows)")
    feats = composition_features([Composition(f).reduced_formula for f in state.formulas])
    seed_feats = composition_features(seed_formulas)
    x_train = np.vstack([_rows(seed_feats[[i]], f) for i, f in enumerate(seed_fidelities)])
    x_train, x_scan, x_pbe = _standardise(x_train, _rows(feats, "scan"), _rows(feats, "pbe"))
    gp = ExactGP(x_train, seed_y, max_iter=policy.camd.gp_max_iter)
    out = {}
    for fidelity, x in (("scan", x_scan), ("pbe", x_pbe)):
        mean, var, _ = gp.posterior(x)
        out[fidelity] = (mean, np.sqrt(var))
    numbers = {"composition_gp_n_train": int(len(seed_y)), "composition_gp_variance": gp.variance,
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
