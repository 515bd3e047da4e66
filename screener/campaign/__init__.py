"""The campaign: the round loop over ranking, acquisition, calculations, hulls and fine-tuning, and its ledger.

Importing this package does not import torch, jobflow or the calculators; they load when a campaign runs.
"""

from screener.campaign.config import CampaignConfig
from screener.campaign.ledger import BudgetSummary, JobRow, Ledger
from screener.campaign.loop import Campaign, Components
from screener.campaign.protocols import ModelVersion, Plan, PlanItem, PlanRequest
from screener.campaign.status import campaign_status

__all__ = [
    "Campaign",
    "CampaignConfig",
    "Components",
    "Ledger",
    "JobRow",
    "BudgetSummary",
    "ModelVersion",
    "Plan",
    "PlanItem",
    "PlanRequest",
    "campaign_status",
]
