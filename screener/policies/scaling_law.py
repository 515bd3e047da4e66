"""Scaling law of the SCAN model's test error: fit, priors and predictions.

Hoffmann et al. (Digital Discovery 2023) found the test MAE of a transferred SCAN model to be a straight line on a
log-log plot against the SCAN training-set size ``N_s`` and against the PBE pre-training size ``N_p``::

    log MAE = c + a log N_s + b log N_p                    (power law)
    MAE     = floor + exp(c) N_s^a N_p^b                   (power law with an irreducible floor)

:func:`fit_scaling_law` fits either form to a campaign's learning curve (weighted least squares on the logs, nonlinear
least squares for the floor) and combines it with a Gaussian :class:`ScalingLawPrior` on the slopes ``a`` and ``b``
(precision weighting: the prior counts like one more measurement of each slope, so the campaign's own data take over
as soon as they constrain the slopes better than the prior does). Counts below one are clamped to one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field

from screener.errors import InvalidInputError

__all__ = ["ScalingLawPrior", "ScalingLawFit", "fit_scaling_law", "DEFAULT_PRIOR"]

logger = logging.getLogger(__name__)

#: Parameter order of :attr:`ScalingLawFit.covariance`.
PARAMETERS: tuple[str, ...] = ("c", "a", "b", "floor")


class ScalingLawPrior(BaseModel):
    """Gaussian prior on the two slopes of the scaling law.

    The intercept ``c`` carries no prior (it is set by the data or, without data, by ``c``), because the absolute
    error level depends on the chemistry of the candidates while the slopes transfer between campaigns.
    """

    model_config = ConfigDict(extra="forbid")

    a: float = Field(-0.3, description="Slope of log MAE against log N_s (SCAN training-set size).")
    a_std: float = Field(0.1, gt=0, description="Standard deviation of the prior on a.")
    b: float = Field(-0.24, description="Slope of log MAE against log N_p (PBE pre-training size).")
    b_std: float = Field(0.1, gt=0, description="Standard deviation of the prior on b.")
    c: float | None = Field(
        3.19,
        description="Intercept used while there are no learning-curve points (log MAE in eV/atom); the default "
        "gives 22 meV/atom at N_s = 140k, N_p = 1.8M and 47 meV/atom at N_s = 11k (Hoffmann et al. 2023).",
    )
    source: str = Field(
        "default: a ~ -0.3 (formation-energy learning curves), b = 0.8 a (SCAN/PBE buys balance at N_p = 4 N_s "
        "for a cost ratio of 5; Hoffmann et al. 2023, Fig. 5); see docs/policy.md",
        description="Where the numbers come from (paper, world builder run, earlier campaign).",
    )

    @classmethod
    def default(cls) -> ScalingLawPrior:
        """The documented default prior (``a = -0.3 ± 0.1``, ``b = -0.24 ± 0.1``, ``c = 3.19``)."""
        return cls()


DEFAULT_PRIOR = ScalingLawPrior()


class ScalingLawFit(BaseModel):
    """A fitted (or prior-only) scaling law with its uncertainty.

    ``c, a, b, floor_mae`` are the combined (posterior) values; ``a_data``/``b_data`` are the estimates from the data
    alone (``None`` where the data cannot determine them, e.g. ``b`` when all points share one ``N_p``), used by
    :meth:`is_significant`. MAE values are in the units they were given (eV/atom in screener).
    """

    model_config = ConfigDict(extra="forbid")

    c: float = Field(description="Intercept of log MAE (log of the power-law part at N_s = N_p = 1).")
    a: float = Field(description="Slope against log N_s.")
    b: float = Field(description="Slope against log N_p.")
    floor_mae: float = Field(0.0, ge=0, description="Irreducible error added to the power law (MAE units).")
    covariance: list[list[float]] = Field(description="4x4 covariance of (c, a, b, floor_mae).")
    residual_std_log: float = Field(description="Standard deviation of the residuals of log MAE used for errors.")
    dof: int = Field(0, description="Degrees of freedom of the residuals (points minus fitted data parameters).")
    n_points: int = Field(0, description="Learning-curve points used.")
    n_distinct_scan: int = Field(0, description="Distinct N_s values among the points.")
    n_distinct_pbe: int = Field(0, description="Distinct N_p values among the points.")
    with_floor: bool = Field(False, description="Whether the floor was fitted.")
    a_data: float | None = Field(None, description="Slope a from the data alone (None if not identifiable).")
    a_data_std: float | None = Field(None, description="Standard error of a_data.")
    b_data: float | None = Field(None, description="Slope b from the data alone (None if not identifiable).")
    b_data_std: float | None = Field(None, description="Standard error of b_data.")
    prior: ScalingLawPrior | None = Field(None, description="Prior combined with the data (None: data only).")
    prior_weight_a: float = Field(0.0, description="Share of the precision on a that comes from the prior (0..1).")
    prior_weight_b: float = Field(0.0, description="Share of the precision on b that comes from the prior (0..1).")
    source: str = Field("fit", description="'fit', 'fit+prior' or 'prior'.")

    # ---- derived numbers ---------------------------------------------------------------------------------------
    @property
    def cov(self) -> NDArray[np.float64]:
        """Covariance as an array, parameter order (c, a, b, floor_mae)."""
        return np.asarray(self.covariance, dtype=float)

    @property
    def a_std(self) -> float:
        """Posterior standard deviation of a."""
        return float(math.sqrt(max(self.cov[1, 1], 0.0)))

    @property
    def b_std(self) -> float:
        """Posterior standard deviation of b."""
        return float(math.sqrt(max(self.cov[2, 2], 0.0)))

    @property
    def c_std(self) -> float:
        """Posterior standard deviation of c."""
        return float(math.sqrt(max(self.cov[0, 0], 0.0)))

    @property
    def floor_std(self) -> float:
        """Standard deviation of the floor (0 when not fitted)."""
        return float(math.sqrt(max(self.cov[3, 3], 0.0)))

    # ---- predictions ---------------------------------------------------------------------------------------------
    def predict_mae(self, n_scan: ArrayLike, n_pbe: ArrayLike) -> NDArray[np.float64] | float:
        """Predicted test MAE of the SCAN model at training-set sizes ``n_scan`` and ``n_pbe``.

        Parameters
        ----------
        n_scan, n_pbe : float or array_like
            Numbers of SCAN and PBE training systems (broadcast together; values below 1 count as 1).

        Returns
        -------
        float or ndarray
            MAE in the units of the fitted data.
        """
        eta = self._eta(n_scan, n_pbe)
        out = self.floor_mae + np.exp(eta)
        return float(out) if np.ndim(out) == 0 else out

    def predict_interval(
        self,
        n_scan: ArrayLike,
        n_pbe: ArrayLike,
        level: float = 0.9,
        *,
        include_noise: bool = False,
    ) -> tuple[NDArray[np.float64] | float, NDArray[np.float64] | float]:
        """Confidence band of the predicted MAE (delta method on log MAE).

        Parameters
        ----------
        n_scan, n_pbe : float or array_like
            Training-set sizes (broadcast together).
        level : float
            Two-sided coverage, e.g. 0.9.
        include_noise : bool
            Add the residual scatter of single learning-curve points (a prediction interval instead of a confidence
            band of the mean curve).

        Returns
        -------
        lower, upper : float or ndarray
            Band limits in MAE units.
        """
        from scipy import stats  # scipy costs ~0.1 s to import; only needed for bands

        if not 0.0 < level < 1.0:
            raise InvalidInputError(f"level must lie in (0, 1), got {level}")
        eta = self._eta(n_scan, n_pbe)
        power = np.exp(eta)
        total = self.floor_mae + power
        x, z = _log_counts(n_scan, n_pbe)
        x, z = np.broadcast_arrays(x, z)
        share = power / total  # d log(total) / d eta
        grad = np.stack([share, share * x, share * z, 1.0 / total], axis=-1)  # d log MAE / d(c, a, b, floor)
        var = np.einsum("...i,ij,...j->...", grad, self.cov, grad)
        if include_noise:
            var = var + self.residual_std_log**2
        q = stats.t.ppf(0.5 + level / 2.0, self.dof) if self.dof > 0 else stats.norm.ppf(0.5 + level / 2.0)
        half = q * np.sqrt(np.maximum(var, 0.0))
        lower, upper = total * np.exp(-half), total * np.exp(half)
        if np.ndim(lower) == 0:
            return float(lower), float(upper)
        return lower, upper

    def is_significant(
        self,
        parameter: Literal["a", "b", "both"] = "a",
        *,
        t_min: float = 3.0,
        min_distinct_sizes: int = 3,
    ) -> bool:
        """Whether the data alone establish a (negative) slope.

        Parameters
        ----------
        parameter : {"a", "b", "both"}
            Which slope to test.
        t_min : float
            Minimum ``|slope| / standard error`` of the data-only estimate.
        min_distinct_sizes : int
            Minimum number of distinct training-set sizes along that axis.
        """
        if parameter == "both":
            return self.is_significant("a", t_min=t_min, min_distinct_sizes=min_distinct_sizes) and self.is_significant(
                "b", t_min=t_min, min_distinct_sizes=min_distinct_sizes
            )
        value, std, distinct = (
            (self.a_data, self.a_data_std, self.n_distinct_scan)
            if parameter == "a"
            else (self.b_data, self.b_data_std, self.n_distinct_pbe)
        )
        if value is None or std is None or distinct < min_distinct_sizes or self.dof < 1:
            return False
        if value >= 0:
            return False
        return std == 0.0 or abs(value) / std >= t_min

    def _eta(self, n_scan: ArrayLike, n_pbe: ArrayLike) -> NDArray[np.float64]:
        x, z = _log_counts(n_scan, n_pbe)
        return self.c + self.a * x + self.b * z

    @classmethod
    def from_prior(cls, prior: ScalingLawPrior | None = None, *, c: float | None = None) -> ScalingLawFit:
        """A scaling law made of the prior alone (no learning-curve points yet).

        The intercept only scales the MAE; decisions between SCAN and PBE (ratios of gains) do not depend on it.
        """
        prior = prior or DEFAULT_PRIOR
        c_value = c if c is not None else (prior.c if prior.c is not None else math.log(0.05))
        cov = np.diag([1.0, prior.a_std**2, prior.b_std**2, 0.0])
        return cls(
            c=c_value,
            a=prior.a,
            b=prior.b,
            covariance=cov.tolist(),
            residual_std_log=0.0,
            prior=prior,
            prior_weight_a=1.0,
            prior_weight_b=1.0,
            source="prior",
        )


def _log_counts(n_scan: ArrayLike, n_pbe: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    return (
        np.log(np.maximum(np.asarray(n_scan, dtype=float), 1.0)),
        np.log(np.maximum(np.asarray(n_pbe, dtype=float), 1.0)),
    )


def _identifiable(x: NDArray[np.float64], z: NDArray[np.float64]) -> tuple[bool, bool]:
    """Which of (a, b) the data alone determine."""
    n_x, n_z = len(np.unique(np.round(x, 12))), len(np.unique(np.round(z, 12)))
    design = np.column_stack([np.ones_like(x), x, z])
    if np.linalg.matrix_rank(design) == 3:
        return True, True
    if n_x >= 2 and n_z == 1:
        return True, False
    if n_z >= 2 and n_x == 1:
        return False, True
    return False, False


def fit_scaling_law(
    n_scan: Sequence[float] | ArrayLike,
    n_pbe: Sequence[float] | ArrayLike,
    mae: Sequence[float] | ArrayLike,
    *,
    floor: bool = False,
    weights: Sequence[float] | ArrayLike | None = None,
    prior: ScalingLawPrior | None = None,
    noise_std_log: float = 0.05,
    noise_dof: float = 2.0,
) -> ScalingLawFit:
    """Fit ``log MAE = c + a log N_s + b log N_p`` (optionally with a floor) to learning-curve points.

    Parameters
    ----------
    n_scan, n_pbe : array_like, shape (n,)
        SCAN training-set size and PBE pre-training size of each point (values below 1 count as 1).
    mae : array_like, shape (n,)
        Test MAE at each point (> 0; eV/atom in screener).
    floor : bool
        Fit ``MAE = floor + exp(c) N_s^a N_p^b`` by nonlinear least squares on log MAE (``0 <= floor < min(mae)``).
    weights : array_like, shape (n,), optional
        Relative precisions of the points (e.g. test-set sizes); default all equal.
    prior : ScalingLawPrior, optional
        Gaussian prior on (a, b), combined by precision weighting. Without it the fit is ordinary (weighted) least
        squares, and only slopes the data cannot determine (b when all points share one N_p, for instance) are taken
        from :data:`DEFAULT_PRIOR`.
    noise_std_log, noise_dof : float
        With a prior, the residual variance is shrunk toward ``noise_std_log**2`` with ``noise_dof`` pseudo degrees
        of freedom (so three nearly collinear points cannot swamp the prior); also the residual scale when there are
        no residual degrees of freedom.

    Returns
    -------
    ScalingLawFit

    Raises
    ------
    InvalidInputError
        On empty or mismatched input, non-positive MAE or counts, or too few points for a floor fit.

    Examples
    --------
    >>> import numpy as np
    >>> ns = np.array([100, 200, 400, 800, 100, 200, 400, 800])
    >>> npbe = np.array([1e4, 1e4, 1e4, 1e4, 4e4, 4e4, 4e4, 4e4])
    >>> fit = fit_scaling_law(ns, npbe, 2.0 * ns**-0.3 * npbe**-0.2)
    >>> round(fit.a, 3), round(fit.b, 3)
    (-0.3, -0.2)
    """
    ns = np.atleast_1d(np.asarray(n_scan, dtype=float))
    npb = np.atleast_1d(np.asarray(n_pbe, dtype=float))
    y_mae = np.atleast_1d(np.asarray(mae, dtype=float))
    if not (len(ns) == len(npb) == len(y_mae)):
        raise InvalidInputError(
            f"learning curve arrays differ in length: n_scan {len(ns)}, n_pbe {len(npb)}, mae {len(y_mae)}"
        )
    if len(ns) == 0:
        raise InvalidInputError("no learning-curve points to fit; use ScalingLawFit.from_prior(prior) instead")
    if not (np.all(np.isfinite(y_mae)) and np.all(y_mae > 0)):
        raise InvalidInputError("every MAE of the learning curve must be finite and > 0")
    if not (np.all(np.isfinite(ns)) and np.all(np.isfinite(npb)) and np.all(ns >= 0) and np.all(npb >= 0)):
        raise InvalidInputError("training-set sizes must be finite and >= 0")
    w = np.ones_like(ns) if weights is None else np.atleast_1d(np.asarray(weights, dtype=float))
    if len(w) != len(ns) or not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise InvalidInputError("weights must be one positive number per learning-curve point")
    w = w / w.mean()

    x, z = _log_counts(ns, npb)
    y = np.log(y_mae)
    id_a, id_b = _identifiable(x, z)

    # prior precision on (a, b): the user's prior on both, or the default prior only where the data are silent
    prior_mean = np.zeros(3)
    prior_prec = np.zeros(3)
    used_prior = prior
    if prior is not None:
        prior_mean[1:] = prior.a, prior.b
        prior_prec[1:] = 1.0 / prior.a_std**2, 1.0 / prior.b_std**2
    else:
        if not id_b:
            prior_mean[2], prior_prec[2] = DEFAULT_PRIOR.b, 1.0 / DEFAULT_PRIOR.b_std**2
            used_prior = DEFAULT_PRIOR
            logger.info("N_p does not vary independently of N_s; slope b taken from the default prior")
        if not id_a and (id_b or len(np.unique(np.round(x, 12))) < 2):
            # N_s never varies: a from the prior (when N_p follows N_s instead, the prior on b identifies a)
            prior_mean[1], prior_prec[1] = DEFAULT_PRIOR.a, 1.0 / DEFAULT_PRIOR.a_std**2
            used_prior = DEFAULT_PRIOR

    data = _data_only_slopes(x, z, y, w, id_a, id_b, noise_std_log)
    if floor:
        result = _fit_with_floor(x, z, y, w, y_mae, prior_mean, prior_prec, prior is not None, noise_std_log, noise_dof)
    else:
        result = _fit_linear(x, z, y, w, prior_mean, prior_prec, prior is not None, noise_std_log, noise_dof)
    theta, cov, sigma, dof = result

    # share of each slope's (marginal) posterior precision 1/var that the prior contributes
    weights_prior = [
        float(min(1.0, max(0.0, prior_prec[idx] * cov[idx, idx]))) if np.isfinite(cov[idx, idx]) else 0.0
        for idx in (1, 2)
    ]
    source = "fit+prior" if np.any(prior_prec > 0) else "fit"
    return ScalingLawFit(
        c=float(theta[0]),
        a=float(theta[1]),
        b=float(theta[2]),
        floor_mae=float(theta[3]),
        covariance=cov.tolist(),
        residual_std_log=float(sigma),
        dof=int(dof),
        n_points=len(ns),
        n_distinct_scan=len(np.unique(ns)),
        n_distinct_pbe=len(np.unique(npb)),
        with_floor=floor,
        a_data=data[0],
        a_data_std=data[1],
        b_data=data[2],
        b_data_std=data[3],
        prior=used_prior if np.any(prior_prec > 0) else None,
        prior_weight_a=weights_prior[0],
        prior_weight_b=weights_prior[1],
        source=source,
    )


def _data_only_slopes(
    x: NDArray[np.float64],
    z: NDArray[np.float64],
    y: NDArray[np.float64],
    w: NDArray[np.float64],
    id_a: bool,
    id_b: bool,
    noise_std_log: float,
) -> tuple[float | None, float | None, float | None, float | None]:
    """Weighted OLS on the identifiable columns only: (a, se_a, b, se_b), None where not identifiable."""
    cols = [np.ones_like(x)] + ([x] if id_a else []) + ([z] if id_b else [])
    design = np.column_stack(cols)
    n, p = design.shape
    if p == 1:
        return None, None, None, None
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(design * sw[:, None], y * sw, rcond=None)
    resid = (y - design @ coef) * sw
    dof = n - p
    sigma2 = float(resid @ resid) / dof if dof > 0 else noise_std_log**2
    cov = sigma2 * np.linalg.pinv(design.T @ (design * w[:, None]))
    out: list[float | None] = [None, None, None, None]
    k = 1
    if id_a:
        out[0], out[1] = float(coef[k]), float(math.sqrt(max(cov[k, k], 0.0)))
        k += 1
    if id_b:
        out[2], out[3] = float(coef[k]), float(math.sqrt(max(cov[k, k], 0.0)))
    return out[0], out[1], out[2], out[3]


def _residual_variance(rss: float, dof: int, shrink: bool, noise_std_log: float, noise_dof: float) -> float:
    if shrink:
        return (rss + noise_dof * noise_std_log**2) / (max(dof, 0) + noise_dof)
    return rss / dof if dof > 0 else noise_std_log**2


def _fit_linear(
    x: NDArray[np.float64],
    z: NDArray[np.float64],
    y: NDArray[np.float64],
    w: NDArray[np.float64],
    prior_mean: NDArray[np.float64],
    prior_prec: NDArray[np.float64],
    shrink: bool,
    noise_std_log: float,
    noise_dof: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64], float, int]:
    design = np.column_stack([np.ones_like(x), x, z])
    xtwx = design.T @ (design * w[:, None])
    xtwy = design.T @ (w * y)
    rank = np.linalg.matrix_rank(design)
    dof = len(y) - rank
    # residual scale from the data-only least-squares solution (minimum-norm where rank deficient)
    coef_ls, *_ = np.linalg.lstsq(design * np.sqrt(w)[:, None], y * np.sqrt(w), rcond=None)
    r = (y - design @ coef_ls) * np.sqrt(w)
    sigma2 = _residual_variance(float(r @ r), dof, shrink, noise_std_log, noise_dof)
    precision = xtwx / sigma2 + np.diag(prior_prec)
    cov3 = np.linalg.pinv(precision)
    theta3 = cov3 @ (xtwy / sigma2 + prior_prec * prior_mean)
    cov = np.zeros((4, 4))
    cov[:3, :3] = cov3
    return np.append(theta3, 0.0), cov, math.sqrt(sigma2), dof


def _fit_with_floor(
    x: NDArray[np.float64],
    z: NDArray[np.float64],
    y: NDArray[np.float64],
    w: NDArray[np.float64],
    y_mae: NDArray[np.float64],
    prior_mean: NDArray[np.float64],
    prior_prec: NDArray[np.float64],
    shrink: bool,
    noise_std_log: float,
    noise_dof: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64], float, int]:
    from scipy.optimize import least_squares  # scipy is only needed for the floor fit

    n_free = 4 - int(np.sum(prior_prec > 0))
    n_data_params = 2 + int(len(np.unique(np.round(x, 12))) >= 2) + int(len(np.unique(np.round(z, 12))) >= 2)
    if len(y) < n_free + (0 if shrink else 1):
        raise InvalidInputError(
            f"a scaling-law fit with a floor needs at least {n_free + (0 if shrink else 1)} learning-curve points "
            f"(got {len(y)}); fit without the floor or give a prior"
        )
    upper_floor = float(np.min(y_mae)) * (1.0 - 1e-6)
    sw = np.sqrt(w)
    prior_idx = np.flatnonzero(prior_prec > 0)

    def residuals(theta: NDArray[np.float64], sigma: float) -> NDArray[np.float64]:
        c, a, b, fl = theta
        model = np.log(fl + np.exp(c + a * x + b * z))
        data = sw * (y - model) / sigma
        pri = (theta[prior_idx] - prior_mean[prior_idx]) * np.sqrt(prior_prec[prior_idx])
        return np.concatenate([data, pri])

    # start from the linear fit of the data above a floor of a fifth of the smallest MAE
    floor0 = 0.2 * upper_floor
    start_lin, _, _, _ = _fit_linear(
        x, z, np.log(y_mae - floor0), w, prior_mean, np.where(prior_prec > 0, prior_prec, 1e-6), True, 0.05, 2.0
    )
    theta = np.array([start_lin[0], start_lin[1], start_lin[2], floor0])
    lower = np.array([-np.inf, -np.inf, -np.inf, 0.0])
    upper = np.array([np.inf, np.inf, np.inf, upper_floor])
    sigma = noise_std_log
    dof = max(len(y) - min(n_data_params, n_free), 0)
    for _ in range(2):  # second pass with the residual scale of the first
        sigma_pass = sigma
        sol = least_squares(residuals, theta, bounds=(lower, upper), args=(sigma,), method="trf", x_scale="jac")
        theta = sol.x
        data_resid = residuals(theta, 1.0)[: len(y)]
        sigma = math.sqrt(_residual_variance(float(data_resid @ data_resid), dof, shrink, noise_std_log, noise_dof))
        sigma = max(sigma, 1e-9)
    jac = np.array(sol.jac, dtype=float)
    jac[: len(y)] *= sigma_pass / sigma  # data rows at the final residual scale
    cov = np.linalg.pinv(jac.T @ jac)
    return theta, cov, sigma, dof
