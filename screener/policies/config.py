"""Policy presets: :class:`PolicyConfig` and :func:`load_policy` (YAML files in the repository's ``policies/``).

A name such as ``scaling-law`` resolves to ``<dir>/scaling-law.yaml`` in, in order, the folders listed in the
environment variable ``SCREENER_POLICY_PATH`` (``os.pathsep``-separated), ``./policies`` of the working directory and
the installed presets (``screener/policies/presets``: in a checkout a link to the repository's ``policies/``, in a
wheel a copy of it, so priors written there by ``bench/scaling.py --write-priors`` reach installed users). Should none
hold the file, the four built-in presets fall back to :data:`BUILTIN_POLICIES` (with the default prior).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from screener.errors import InvalidInputError
from screener.policies.acquisition import AcquisitionKind
from screener.policies.scaling_law import ScalingLawPrior

__all__ = [
    "AcquisitionConfig",
    "ExploitationConfig",
    "ExpectedValueConfig",
    "CamdConfig",
    "PolicyConfig",
    "PolicyKind",
    "BUILTIN_POLICIES",
    "load_policy",
    "list_policies",
    "policy_dirs",
    "PRESETS_DIR",
    "save_policy",
]

logger = logging.getLogger(__name__)

#: The shipped presets: a link to the repository's ``policies/`` (copied into wheels as package data).
PRESETS_DIR = Path(__file__).resolve().parent / "presets"

PolicyKind = Literal["scaling-law", "random", "scan-only", "pbe-then-scan", "expected-value", "camd-epsilon-greedy",
                     "camd-gp-lcb"]


class AcquisitionConfig(BaseModel):
    """Which acquisition function ranks the candidates."""

    model_config = ConfigDict(extra="forbid")

    kind: AcquisitionKind = Field("probability-stable", description="probability-stable, lcb or expected-improvement.")
    threshold_ev_per_atom: float = Field(0.0, description="E_hull counted as stable (probability-stable, EI).")
    kappa: float = Field(1.0, ge=0, description="Width factor of the lower confidence bound (lcb).")
    std_floor_ev_per_atom: float = Field(1e-3, gt=0, description="Smallest ensemble std used.")


class ExploitationConfig(BaseModel):
    """SCAN confirmations of candidates the model already thinks are stable."""

    model_config = ConfigDict(extra="forbid")

    fraction: float = Field(
        0.25, ge=0, le=1, description="Share of the round budget reserved for confirming likely-stable candidates."
    )
    min_probability_stable: float = Field(0.5, ge=0, le=1, description="P(stable) a candidate needs to be confirmed.")


class ExpectedValueConfig(BaseModel):
    """Settings of the ``expected-value`` kind (see :mod:`screener.policies.expected_value`)."""

    model_config = ConfigDict(extra="forbid")

    pbe_scan_prior_p_stable_if_pbe_stable: float = Field(
        0.86, gt=0, lt=1, description="Prior P(SCAN-stable | PBE-stable): GNoME 84-87 % of PBE-stable finds stay "
        "stable under r2SCAN; the stand-in worlds ~87 %.")
    pbe_scan_prior_sigma_ev_per_atom: float = Field(
        0.1, gt=0, description="Prior PBE E_hull scale over which P(SCAN-stable) falls (stand-in worlds: PBE-as-SCAN "
        "E_hull MAE 0.07-0.12 eV/atom).")
    pbe_scan_hull_step: bool = Field(
        True, description="Fit P(SCAN-stable) of a structure on the PBE hull (E_hull 0, however far below the old "
        "hull it fell) apart from the probit in E_hull of those above it. E_hull is censored at 0, so the on-hull "
        "group stands for every depth below the hull and is far likelier SCAN-stable than a structure just above "
        "it; one probit through both rated slightly PBE-unstable results 2-10x too high (docs/policy.md).")
    pbe_scan_signed_depth: bool = Field(
        False, description="Read a PBE-stable result's E_hull as its depth below the hull of the other phases "
        "(negative; pymatgen's allow_negative) instead of 0, in the PBE -> SCAN relation's fit and wherever it is "
        "applied, with its own probit slope below the hull (continuous at it; pbe_scan_hull_step then does not "
        "apply). A result far below the PBE hull is far likelier SCAN-stable than one just below it (stand-in "
        "worlds, on the known hulls: 0.85-1.0 at 50 meV/atom and deeper against 0.30-0.44 within 10), which the "
        "censored on-hull group averages away. Off: it found no more in the measured worlds (docs/policy.md).")
    pbe_scan_prior_p_stable_just_above_hull: float = Field(
        0.3, gt=0, lt=1, description="Prior P(SCAN-stable | PBE E_hull just above the hull) of the probit above the "
        "hull (with pbe_scan_hull_step; at E_hull = the stability threshold where that is above 0), worth "
        "prior_weight pairs: with few known pairs just above the hull it moves the fit (docs/policy.md).")
    prior_weight: float = Field(5.0, ge=0, description="Pseudo-pairs of the prior.")
    known_pairs_weight: float | None = Field(
        None, ge=0, description="The known set's PBE/SCAN pairs together count as at most this many observations "
        "in the relation's fit (each weight / n_known, at most 1), so the campaign's own pairs decide once it has "
        "some; null (the default): each known pair counts as one. The known pairs are judged on the known set's "
        "hulls, which agree more often than the pool's candidates against the full hull.")
    pbe_scan_campaign_offset_sd: float | None = Field(
        None, gt=0, description="Give the campaign's own PBE/SCAN pairs a probit offset of their own in the PBE -> "
        "SCAN relation (prior N(0, sd^2), in probit units) and apply the relation with it: the known set's pairs fix "
        "its shape, the campaign's its level. null (the default): one fit for both populations; measured at 0.5 "
        "and left off (docs/policy.md).")
    pbe_scan_size_slope_sd: float | None = Field(
        1.0, gt=0, description="Where candidates' costs differ: let P(SCAN-stable | PBE E_hull) depend on the cell "
        "size, a probit term c_sites ln(n_sites / median candidate n_sites) fitted on the known and campaign pairs "
        "with a prior N(0, sd^2) (probit units per e-fold of sites; default 1). The sign is fitted: on the "
        "Li-Mn-Fe-Co-Ni-O known set large cells on the PBE hull stay SCAN-stable more often (47 % of 1-8 sites, 80 % "
        "of 13-16), on Na-Ti-V-Cr-Cu-O less often. null: one relation for every cell size. Inert with equal costs.")
    outcome_calibration: bool = Field(
        True, description="Recalibrate P(stable) on the campaign's purchases (P at purchase vs stable or not), "
        "refitted each round (see screener.policies.outcome_calibration).")
    outcome_calibration_prior_weight: float = Field(
        10.0, ge=0, description="Purchases the identity map (no recalibration) is worth.")
    outcome_calibration_min_slope: float = Field(
        0.2, ge=0.2, le=3.0, description="Lower bound of the outcome map's probit slope b; 1: an offset only. "
        "Purchases span a narrow range of P, and a slope below 1 fitted there lifts every P below it.")
    outcome_calibration_cost_classes: int = Field(
        4, ge=0, le=16, description="Cost classes (of equal width in the candidates' log cost) that each get their "
        "own probit offset where costs differ; 0 or 1: none.")
    outcome_calibration_chemsys_sd: float | None = Field(
        None, gt=0, description="With outcome_calibration: a probit offset per chemical system among the purchases "
        "(both fidelities' purchases together), a random effect with prior N(0, sd^2): a system whose purchases keep "
        "coming out unstable is marked down as a whole, one whose purchases pay is marked up (see "
        "screener.policies.outcome_calibration). null (the default): no such term. At 0.5 it found 6 more than "
        "without it over eight measured rows, more on K-Cu-Zn-Sn-S-Se (its bar met) and fewer on Mg-Mn-Fe-Cr-V-S "
        "(its bar lost); at 0.25 as many as without it on both (docs/policy-benchmarks.md).")
    outcome_calibration_chemsys_per_fidelity: bool = Field(
        False, description="With outcome_calibration_chemsys_sd and outcome_calibration_per_fidelity: fit the "
        "system offsets in each fidelity's map on that fidelity's purchases alone (PBE screens for the PBE model's P, "
        "SCAN runs for the SCAN model's) instead of once on both together.")
    outcome_calibration_per_fidelity: bool = Field(
        True, description="One outcome map per fidelity (PBE purchases calibrate the PBE model's P, SCAN purchases "
        "the SCAN model's), each shrunk towards the map of both together; false: one pooled map for both.")
    cost_blind_share: float = Field(
        0.5, ge=0, le=1, description="Where candidates' costs differ: the share of the campaign's spend kept for "
        "SCAN runs in the order of scan-only (the model's own P(SCAN-stable), before the outcome calibration and "
        "competitor survival, cost ignored), a hedge against a model error that follows cell size; 0: off. Inert "
        "with equal costs (there cost_blind_share_equal_costs applies).")
    cost_blind_share_screens: bool = Field(
        True, description="Let the cost-blind share buy a PBE screen instead of SCAN now where the candidate's PBE "
        "route, its follow-up going on when the result leaves the odds at least where they were, earns more per "
        "unit than SCAN now and the campaign can still pay that follow-up (its spend counts in the share); a "
        "screened candidate joins the share's order at its P from the PBE result, never the model's. false: the "
        "share buys SCAN now only.")
    cost_blind_share_equal_costs: float = Field(
        0.0, ge=0, le=1, description="The same share where all candidates cost the same (0, the default: off): SCAN "
        "runs in scan-only's order, a hedge on the SCAN model's own ranking where the PBE screen cannot point at "
        "the crystals stable at SCAN only. Measured at 0.2: fewer finds on two worlds (docs/policy.md).")
    composition_gp_weight: float = Field(
        0.0, ge=0, le=1, description="Blend a Gaussian process on composition features (CAMD GP-LCB's model, "
        "conditioned each round on every computed E_hull) into the ensemble's calibrated predictions of both "
        "fidelities as a product of the two Gaussians, the GP's precision times this fixed weight (0, the "
        "default: off; needs composition_gp_pool false; see screener.policies.composition_model). Measured at "
        "0.5 and 1: the GP's wide spread left the ensemble in charge and it found about as many.")
    composition_gp_pool: bool = Field(
        True, description="Pool the composition GP's P(stable) with the ensemble's in probit space, "
        "z = (1 - a) z_ensemble + a z_gp, the weight a learned each round from the campaign's purchases (the a "
        "under which the two P each was bought on, the ensemble's read through today's outcome map, best predict "
        "what came out stable; a = 0 before composition_pool_min_purchases). Measured on six worlds: more finds on "
        "the four where the ensemble ranks worst or was pre-trained on fewest structures, 2-4 fewer on the two "
        "oxide worlds, +0.17 per campaign over 41 (docs/policy-benchmarks.md; see "
        "screener.policies.composition_model); not together with composition_gp_weight.")
    composition_pool_min_purchases: int = Field(
        20, ge=0, description="Purchases the pool's weight needs before it is fitted; below, a = 0 (the ensemble "
        "alone). A weight chosen on a handful of outcomes swings between 0 and 1 from round to round (8 purchases "
        "chose 1 in the demo, 15 then 0); every measured campaign had at least 20 when it first fitted one, so "
        "their decisions are the same with this guard.")
    composition_gp_latent_sigma: bool = Field(
        False, description="The pool reads the GP's P(stable) with its latent sigma (noise left out: how sure it is "
        "of the composition's mean E_hull) instead of its predictive sigma, whose noise (the polymorphs' spread, "
        "0.45-0.65 eV/atom on the measured worlds) squeezes its probits into a few tenths, so that a weight in "
        "[0, 1] barely moves the ensemble's order (see screener.policies.composition_model).")
    composition_pool_stack: bool = Field(
        False, description="Pool the two experts by a probit regression of the campaign's purchase outcomes on both "
        "(P = Phi(b0 + b1 z_model + b2 z_gp), z_gp rescaled to the ensemble's spread over the candidates; "
        "stacking) instead of a convex weight: the GP's probits span a few tenths where the ensemble's span "
        "several units (its noise holds the polymorphs' spread), so a weight in [0, 1] barely moves the "
        "ensemble's order even where the GP ranks far better. Needs composition_gp_pool (see "
        "screener.policies.composition_model).")
    composition_pool_stack_prior_sd: float = Field(
        1.0, gt=0.0, description="Prior standard deviation of each stacking coefficient around the ensemble alone "
        "(b0 = 0, b1 = 1, b2 = 0).")
    reserve_follow_ups: bool = Field(
        True, description="Keep back, from the campaign's remaining budget, the expected cost of the SCAN follow-ups "
        "of the PBE screens planned in the round (P(go) x SCAN cost each): later items of the round may not spend "
        "it, and a screen whose own SCAN run would not fit beside it is worth its learning value only. Binds only "
        "near the end of a campaign, where screens were otherwise bought whose follow-ups nothing paid for.")
    stop_fraction_of_yield: float = Field(
        0.0, ge=0, le=1, description="Stop rule (0, the default: off): an option is bought only if its expected "
        "finds per unit cost reach this fraction of the campaign's yield so far (confirmed finds / budget spent), "
        "once it has stop_after_finds finds, and lambda is never below that rate; when no open calculation reaches "
        "it, the campaign stops and keeps the rest of its budget. The marginal-value rule of foraging (leave when "
        "the next unit earns less than the search has been earning); 0.1 leaves a tenfold margin. Off by default: "
        "at 0.1 it never stopped a measured campaign before its last unit, and as lambda's floor it moved screens' "
        "follow-up thresholds (-2 finds in 1 of 5 campaigns on a fresh world, docs/policy-benchmarks.md).")
    stop_after_finds: int = Field(
        3, ge=1, description="Finds the campaign must have before the stop rule applies (its yield is then more "
        "than one lucky result).")
    competitor_samples: int = Field(
        0, ge=0, le=4096, description="Monte Carlo draws of the competitor survival (P(still SCAN-stable once the "
        "pool's other candidates are computed), see screener.policies.competitors); 0 (the default): off. With 64 "
        "draws it found fewer stable crystals on 7 of 11 measured rows (933 against 978): its independent draws of "
        "many wide predictions mark down the candidates of crowded chemical systems, where the stable ones are; "
        "it found more on K-Cu-Zn-Sn-S-Se, Mg-Ca-Zn-Ge-Sn-N and Li-Mn with the size-dependent cost "
        "(docs/policy-benchmarks.md).")
    competitor_survival_fitted: bool = Field(
        False, description="With competitor_samples > 0: the survival S enters the outcome map as a probit term "
        "g ln S, g fitted on the campaign's purchases (prior 0, at least 0; see "
        "screener.policies.outcome_calibration), instead of multiplying P by S: the campaign learns whether its "
        "purchases in crowded chemistry come out unstable beyond what their P said. Off by default: it landed "
        "between the survival on and off on most measured rows, at most 4 finds above the better of them on any, "
        "860 finds over eleven rows against 876 off (docs/policy-benchmarks.md).")
    scan_hull_map: bool = Field(
        False, description="Reorder the screened candidates waiting for a SCAN follow-up by where each PBE result, "
        "carried to SCAN by the fidelity shift fitted on the pairs computed at both levels, lies against today's "
        "SCAN hull (x_s): P = Phi(Phi^-1(q) - k (x_s - their mean x_s)), k fitted on the campaign's pairs "
        "(screener.policies.scan_hull_map). Off by default: x_s tells the follow-ups that stay stable apart far "
        "better than q does, yet no variant found more (docs/policy-benchmarks.md).")
    scan_hull_map_prior_sd_k: float = Field(
        10.0, gt=0, description="Prior sd of the scan_hull_map slope k (probit per eV/atom; prior mean 0).")
    competitor_error_correlation: float = Field(
        0.0, ge=0.0, lt=1.0, description="Correlation of the model's errors across the candidates of one competitor "
        "Monte Carlo: each draw is sqrt(rho) Z_shared + sqrt(1 - rho) Z_own in sigma units (each candidate's own "
        "P(below the hull) unchanged). 0: independent draws, where the lowest of many wide predictions undercuts "
        "almost every candidate; a shared error moves them together, so the draws keep the model's order.")
    competitor_against: Literal["all", "fewer_elements", "same_elements", "likelier"] = Field(
        "all", description="Which drawn candidates the competitor Monte Carlo judges each candidate against: all "
        "of them; those of fewer elements only (the hull's hubs, which undercut every compound above them), not "
        "its own polymorphs and same-order neighbours; only those of its own chemical system (its polymorphs and "
        "neighbours of as many elements), not the hubs; or those ranked above it by P(below the hull), in blocks "
        "doubling from the batch size, so the likeliest member of a crowd keeps its odds "
        "(screener.policies.competitors). Measured with the survival on and left at 'all': same_elements kept most "
        "of the survival's gain on K-Cu-Zn-Sn-S-Se and half its cost on Mg-Mn-Fe-Cr-V-S, fewer_elements the "
        "reverse, likelier planned almost as the survival off (docs/policy-benchmarks.md).")
    competitor_uses_pbe_results: bool = Field(
        True, description="In the competitor Monte Carlo, draw a candidate with a PBE result from what that result "
        "says (P(SCAN-stable | PBE E_hull) of the PBE -> SCAN relation) instead of the SCAN model's prediction: a "
        "screened PBE-stable candidate is then as likely below the hull as the policy values it, and a screened "
        "PBE-unstable one no longer undercuts its neighbours as if it had never been computed.")
    scan_now_at_most_pbe_view: bool = Field(
        True, description="Value SCAN now of an unscreened candidate at no more than what its PBE prediction says "
        "through the PBE -> SCAN relation (E[q(X)], the PBE route's finds were SCAN always to follow the screen): the "
        "campaign's SCAN model learns its shift from PBE on a few SCAN results the campaign itself selected, and its "
        "direct SCAN picks came out stable about half as often as their P said. With the relation's hull step it "
        "found more on every measured row; without the step it did not (docs/policy-benchmarks.md).")
    pbe_route_joint: bool = Field(
        False, description="Value the PBE route with the candidate's SCAN prediction and PBE prediction jointly "
        "Gaussian (errors differing by the PBE -> SCAN relation's residual scale): the route finds at most what "
        "SCAN now would. false (default): by the PBE prediction and the relation alone, which found more in the "
        "measured worlds (docs/policy-benchmarks.md).")
    learning_value: bool = Field(
        False, description="Add the scaling law's learning value to each option's rate (it is computed and recorded "
        "either way). Off by default: in the measured worlds adding it bought SCAN runs of wild predictions "
        "instead of PBE screens and found less (docs/policy-benchmarks.md).")
    learning_value_draws: int = Field(16, ge=1, le=256, description="Fixed-seed draws of the preposterior estimate.")
    learning_value_min_n_scan: int = Field(
        100, ge=1, description="N_s below this counts as this in the learning value: the power law describes "
        "transfer learning curves from ~1e2 SCAN points on (Hoffmann et al. 2023); below, it would promise an "
        "unbounded MAE drop from the first few calculations.")


    @property
    def uses_composition_gp(self) -> bool:
        """Whether the planner must fit the composition GP (either way of blending it in)."""
        return self.composition_gp_weight > 0 or self.composition_gp_pool

    @model_validator(mode="after")
    def _one_composition_blend(self) -> ExpectedValueConfig:
        if self.composition_gp_weight > 0 and self.composition_gp_pool:
            raise ValueError("composition_gp_weight and composition_gp_pool are two ways of blending the "
                             "composition GP in: set one")
        if self.composition_pool_stack and not self.composition_gp_pool:
            raise ValueError("composition_pool_stack is a way of pooling the composition GP: it needs "
                             "composition_gp_pool: true")
        return self


class CamdConfig(BaseModel):
    """Settings of the CAMD peer agents (``camd-epsilon-greedy``, ``camd-gp-lcb``); defaults are CAMD's.

    See :mod:`screener.policies.camd_epsilon_greedy` and :mod:`screener.policies.camd_gp_lcb`.
    """

    model_config = ConfigDict(extra="forbid")

    high_fidelity_fraction: float = Field(
        0.5, ge=0, le=1, description="camd-epsilon-greedy: share of a round's picks computed with SCAN "
        "(CAMD's highFi_query_frac; it has no default, its tests and examples use 0.5).")
    similarity_threshold: float | None = Field(
        None, gt=0, description="camd-epsilon-greedy: a SCAN pick needs a seed composition within this L2 distance "
        "of its raw composition features (CAMD's similarity_thres, 300 on its 132 Magpie columns; those columns "
        "differ here, so no default transfers; null: no gate).")
    low_fidelity_per_high_fidelity: int = Field(
        1, ge=1, description="camd-epsilon-greedy: PBE picks per good SCAN candidate left for later (lowFi_per_highFi).")
    alpha: float = Field(1.0, ge=0, description="camd-gp-lcb: LCB = GP mean - alpha GP std (CAMD's alpha).")
    rank_threshold: int = Field(
        10, ge=0, description="camd-gp-lcb: a candidate whose LCB rank falls by more than this once its PBE results "
        "are hallucinated is explored with PBE (CAMD's rank_thres).")
    uncertainty_percentile: float = Field(
        5.0, ge=0, le=100, description="camd-gp-lcb: candidates with GP std at or below this percentile are "
        "exploited with SCAN directly (CAMD's unc_percentile).")
    gp_max_iter: int = Field(200, ge=1, description="camd-gp-lcb: optimiser iterations of the GP fit (gp_max_iter).")
    max_seed_rows: int = Field(
        1000, ge=10, description="camd-gp-lcb: known-set rows the GP trains on at most (a seeded subsample; every "
        "campaign result is kept): an exact GP costs O(n^3) per round.")


class PolicyConfig(BaseModel):
    """A budget and acquisition policy (one YAML file in ``policies/``).

    ``batch_size`` sets the round budget in SCAN-calculation equivalents: a round may spend at most
    ``batch_size`` times the median SCAN cost of the open candidates (or ``round_budget_cpu_hours`` when given), and
    never more than the campaign's remaining budget.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Preset name (file stem).")
    kind: PolicyKind = Field(description="scaling-law, random, scan-only or pbe-then-scan.")
    description: str = Field("", description="One line for users.")
    acquisition: AcquisitionConfig = Field(default_factory=AcquisitionConfig)
    max_per_chemsys: int | None = Field(3, ge=1, description="Diversity cap: candidates per chemical system per "
                                        "round and fidelity (null: no cap).")
    batch_size: int = Field(20, ge=1, description="Round budget in SCAN-calculation equivalents.")
    round_budget_cpu_hours: float | None = Field(None, gt=0, description="Fixed round budget (overrides batch_size).")
    max_calculations_per_round: int | None = Field(None, ge=1, description="Hard cap on calculations per round.")
    cost_ratio_scan_to_pbe: float | None = Field(
        None, gt=0, description="Override: SCAN cost = ratio x PBE cost of each candidate (null: the back-end's).",
    )
    exploitation: ExploitationConfig = Field(default_factory=ExploitationConfig)
    pbe_fraction: float = Field(
        0.0, ge=0, le=1, description="Fixed share of the round budget for PBE (pbe-then-scan, random)."
    )
    floor: bool = Field(False, description="Fit the scaling law with an irreducible error floor.")
    priors: ScalingLawPrior = Field(default_factory=ScalingLawPrior, description="Prior on the scaling-law slopes.")
    min_points_for_fit: int = Field(
        2, ge=1, description="Learning-curve points needed before the campaign's own fit is used (else prior only)."
    )
    seed: int = Field(0, description="Seed of the random policy (combined with the round index).")
    expected_value: ExpectedValueConfig = Field(default_factory=ExpectedValueConfig)
    camd: CamdConfig = Field(default_factory=CamdConfig)

    @model_validator(mode="after")
    def _check_kind_fields(self) -> PolicyConfig:
        if self.kind == "pbe-then-scan" and not 0.0 < self.pbe_fraction < 1.0:
            raise ValueError("pbe-then-scan needs 0 < pbe_fraction < 1")
        return self


#: Defaults of the four presets; the YAML files in ``policies/`` are the editable copies.
BUILTIN_POLICIES: dict[str, PolicyConfig] = {
    "scaling-law": PolicyConfig(
        name="scaling-law",
        kind="scaling-law",
        description="Split each round between SCAN and PBE by the fitted scaling law; confirm likely-stable "
        "candidates with SCAN.",
    ),
    "random": PolicyConfig(
        name="random",
        kind="random",
        description="Baseline: random candidates, computed with SCAN.",
        max_per_chemsys=None,
        exploitation=ExploitationConfig(fraction=0.0),
    ),
    "scan-only": PolicyConfig(
        name="scan-only",
        kind="scan-only",
        description="Greedy: the whole budget buys SCAN calculations of the best-ranked candidates.",
        exploitation=ExploitationConfig(fraction=0.0),
    ),
    "expected-value": PolicyConfig(
        name="expected-value",
        kind="expected-value",
        description="Per candidate: skip, PBE screen or SCAN now, by expected confirmed SCAN-stable finds per unit "
        "cost (calibrated P, PBE->SCAN relation, scaling-law learning value).",
        exploitation=ExploitationConfig(fraction=0.0),
    ),
    "pbe-then-scan": PolicyConfig(
        name="pbe-then-scan",
        kind="pbe-then-scan",
        description="Fixed split: screen with PBE, confirm the best PBE-screened candidates with SCAN.",
        pbe_fraction=0.5,
        exploitation=ExploitationConfig(fraction=0.0),
    ),
    "camd-epsilon-greedy": PolicyConfig(
        name="camd-epsilon-greedy",
        kind="camd-epsilon-greedy",
        description="Peer (CAMD EpsilonGreedyMultiAgent): a fixed share of picks to SCAN, best predicted first; the "
        "rest to PBE of the next-best.",
        max_per_chemsys=None,
        exploitation=ExploitationConfig(fraction=0.0),
    ),
    "camd-gp-lcb": PolicyConfig(
        name="camd-gp-lcb",
        kind="camd-gp-lcb",
        description="Peer (CAMD GPMultiAgent): GP lower confidence bound on composition features; risky picks go "
        "to PBE.",
        max_per_chemsys=None,
        exploitation=ExploitationConfig(fraction=0.0),
    ),
}


def policy_dirs() -> list[Path]:
    """Folders searched for ``<name>.yaml``, in order."""
    dirs = [Path(p) for p in os.environ.get("SCREENER_POLICY_PATH", "").split(os.pathsep) if p]
    dirs.append(Path.cwd() / "policies")
    dirs.append(PRESETS_DIR)
    seen: list[Path] = []
    for d in dirs:
        if d not in seen:
            seen.append(d)
    return seen


def list_policies() -> list[str]:
    """Names of the presets that :func:`load_policy` can resolve."""
    names = set(BUILTIN_POLICIES)
    for d in policy_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def _format_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "(top level)"
        parts.append(f"field '{loc}': {err.get('msg', 'invalid')}")
    more = "" if len(exc.errors()) <= 5 else f" (and {len(exc.errors()) - 5} more)"
    return "; ".join(parts) + more


def _load_yaml(path: Path) -> PolicyConfig:
    import yaml  # pyyaml; imported here so importing screener stays light

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"cannot read policy file {path}: {exc.strerror or exc}") from None
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidInputError(f"policy file {path} is not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"policy file {path} must hold a mapping of fields, got {type(data).__name__}")
    data.setdefault("name", path.stem)
    try:
        return PolicyConfig.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(f"policy file {path}: {_format_validation_error(exc)}") from None


def load_policy(path_or_name: str | os.PathLike[str] | PolicyConfig) -> PolicyConfig:
    """Load a policy from a YAML file or by preset name.

    Parameters
    ----------
    path_or_name : str, path or PolicyConfig
        A path to a ``.yaml``/``.yml`` file, or a preset name (``scaling-law``, ``random``, ``scan-only``,
        ``pbe-then-scan`` or any ``<name>.yaml`` in :func:`policy_dirs`). A PolicyConfig is returned unchanged.

    Returns
    -------
    PolicyConfig

    Raises
    ------
    InvalidInputError
        Unknown name, unreadable file, invalid YAML or invalid fields (the message names the file and the field).
    """
    if isinstance(path_or_name, PolicyConfig):
        return path_or_name
    text = os.fspath(path_or_name)
    path = Path(text)
    if path.suffix in {".yaml", ".yml"} or os.sep in text or path.is_file():
        if not path.is_file():
            raise InvalidInputError(f"policy file {path} does not exist")
        return _load_yaml(path)
    for d in policy_dirs():
        candidate = d / f"{text}.yaml"
        if candidate.is_file():
            return _load_yaml(candidate)
    if text in BUILTIN_POLICIES:
        logger.info("policy file %s.yaml not found in %s; using built-in defaults", text, policy_dirs())
        return BUILTIN_POLICIES[text]
    raise InvalidInputError(f"unknown policy {text!r}; choose one of {list_policies()} or give a path to a YAML file")


def save_policy(policy: PolicyConfig, path: str | os.PathLike[str]) -> Path:
    """Write a policy as YAML (e.g. with measured priors from a world build); returns the path."""
    import yaml

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(policy.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    return out
