"""Budget policy and acquisition: pure functions, numbers in and decisions out (numpy/scipy only).

- :mod:`~screener.policies.scaling_law`: fit ``log MAE = c + a log N_s + b log N_p`` (optionally with a floor), priors.
- :mod:`~screener.policies.allocation`: split a budget between SCAN and PBE; SCAN plans with competing phases.
- :mod:`~screener.policies.acquisition`: P(stable), LCB, EI and diverse batch selection.
- :mod:`~screener.policies.config`: :class:`PolicyConfig` presets loaded from ``policies/*.yaml``.
- :mod:`~screener.policies.decide`: :func:`decide`, the per-round entry point of the campaign.
"""

from __future__ import annotations

from screener.policies.acquisition import (
    acquisition_scores,
    expected_improvement,
    lower_confidence_bound,
    normalize_chemsys,
    probability_stable,
    select_batch,
)
from screener.policies.allocation import Allocation, CompetingPhaseJob, PlanStep, allocate_fidelities, plan_scan_share
from screener.policies.config import (
    BUILTIN_POLICIES,
    AcquisitionConfig,
    ExploitationConfig,
    PolicyConfig,
    list_policies,
    load_policy,
    save_policy,
)
from screener.policies.decide import LearningCurvePoint, PlannedCalculation, PolicyState, RoundPlan, decide
from screener.policies.scaling_law import DEFAULT_PRIOR, ScalingLawFit, ScalingLawPrior, fit_scaling_law

__all__ = [
    "AcquisitionConfig",
    "Allocation",
    "BUILTIN_POLICIES",
    "CompetingPhaseJob",
    "DEFAULT_PRIOR",
    "ExploitationConfig",
    "LearningCurvePoint",
    "PlanStep",
    "PlannedCalculation",
    "PolicyConfig",
    "PolicyState",
    "RoundPlan",
    "ScalingLawFit",
    "ScalingLawPrior",
    "acquisition_scores",
    "allocate_fidelities",
    "decide",
    "expected_improvement",
    "fit_scaling_law",
    "list_policies",
    "load_policy",
    "lower_confidence_bound",
    "normalize_chemsys",
    "plan_scan_share",
    "probability_stable",
    "save_policy",
    "select_batch",
]
