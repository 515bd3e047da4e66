"""Cost model: SCAN/PBE ratio, size scaling, overrides."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from screener.calculators.cost import CostModel


def test_defaults_scan_is_five_pbe_and_size_scales_quadratically():
    model = CostModel()
    assert model.cpu_hours(10, "scan") == pytest.approx(5 * model.cpu_hours(10, "pbe"))
    assert model.cpu_hours(20, "pbe") == pytest.approx(4 * model.cpu_hours(10, "pbe"))
    assert model.cpu_hours(10, "pbe", relax=True) == pytest.approx(5 * model.cpu_hours(10, "pbe"))


def test_user_overrides():
    model = CostModel(base_cpu_hours=2.0, reference_n_sites=4, exponent=3.0, scan_to_pbe_ratio=8.0)
    assert model.cpu_hours(8, "pbe") == pytest.approx(2.0 * 8)
    assert model.cpu_hours(8, "scan") == pytest.approx(2.0 * 8 * 8)
    assert CostModel.model_validate_json(model.model_dump_json()) == model


def test_bad_values_are_refused():
    with pytest.raises(ValueError):
        CostModel(exponent=7)
    with pytest.raises(ValueError):
        CostModel(base_cpu_hours=0)
    with pytest.raises(ValueError):
        CostModel().cpu_hours(0, "pbe")
    with pytest.raises(ValueError):
        CostModel().cpu_hours(3, "hse")


@given(st.integers(1, 200), st.integers(1, 200))
def test_cost_grows_with_cell_size(n1, n2):
    model = CostModel()
    small, large = sorted((n1, n2))
    assert model.cpu_hours(small, "pbe") <= model.cpu_hours(large, "pbe")
    assert model.cpu_hours(small, "scan") > model.cpu_hours(small, "pbe")
