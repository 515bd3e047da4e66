"""Report test fixtures: one synthetic campaign and its built report, shared by the module's tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = str(Path(__file__).parent)
if HERE not in sys.path:  # synthetic_campaign.py importable under --import-mode=importlib
    sys.path.insert(0, HERE)


@pytest.fixture(scope="session")
def synthetic_campaign(tmp_path_factory) -> Path:
    from synthetic_campaign import build_synthetic_campaign

    return build_synthetic_campaign(tmp_path_factory.mktemp("report") / "campaign")


@pytest.fixture(scope="session")
def built_report(synthetic_campaign, tmp_path_factory):
    from screener.report import build_report

    return build_report(synthetic_campaign, tmp_path_factory.mktemp("site") / "report")


@pytest.fixture(scope="session")
def ev_campaign(tmp_path_factory) -> Path:
    """The same campaign with the numbers the expected-value policy records."""
    from synthetic_campaign import build_synthetic_campaign

    return build_synthetic_campaign(tmp_path_factory.mktemp("report-ev") / "campaign", policy="expected-value")
