"""Tests of screener/policies/config.py: presets load from policies/*.yaml; bad files give clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from screener.errors import InvalidInputError
from screener.policies.config import BUILTIN_POLICIES, PolicyConfig, list_policies, load_policy, save_policy

REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"


@pytest.mark.parametrize("name", ["scaling-law", "random", "scan-only", "pbe-then-scan"])
def test_each_preset_loads_from_its_yaml_file(name):
    path = REPO_POLICIES / f"{name}.yaml"
    assert path.is_file()
    by_name, by_path = load_policy(name), load_policy(path)
    assert by_name == by_path
    assert by_name.name == name and by_name.kind == name
    # the YAML files only document the built-in defaults (priors may be replaced by measured ones)
    assert by_name.model_dump(exclude={"priors"}) == BUILTIN_POLICIES[name].model_dump(exclude={"priors"})
    assert by_name.priors.a < 0 and by_name.priors.b < 0 and by_name.priors.source


def test_list_policies_and_unknown_name():
    assert {"scaling-law", "random", "scan-only", "pbe-then-scan"} <= set(list_policies())
    with pytest.raises(InvalidInputError, match="unknown policy 'greedy-ish'"):
        load_policy("greedy-ish")
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_policy("nowhere/p.yaml")


def test_policy_path_environment_variable(tmp_path, monkeypatch):
    (tmp_path / "mine.yaml").write_text("kind: scan-only\nbatch_size: 7\n")
    monkeypatch.setenv("SCREENER_POLICY_PATH", str(tmp_path))
    p = load_policy("mine")
    assert p.name == "mine" and p.kind == "scan-only" and p.batch_size == 7
    assert "mine" in list_policies()


def test_builtin_fallback_when_no_yaml_folder(monkeypatch, tmp_path):
    import screener.policies.config as config

    monkeypatch.setattr(config, "policy_dirs", lambda: [tmp_path / "empty"])
    assert load_policy("pbe-then-scan") == BUILTIN_POLICIES["pbe-then-scan"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("kind: scaling-law\nacquisition: [unclosed\n", r"not valid YAML at line \d+"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("kind: scaling-law\nbatch_sise: 10\n", r"field 'batch_sise': Extra inputs are not permitted"),
        ("kind: greedy\n", r"field 'kind'"),
        ("kind: scaling-law\nacquisition:\n  kappa: lots\n", r"field 'acquisition\.kappa'"),
        ("kind: scaling-law\npriors:\n  a: -0.3\n  a_std: -1\n", r"field 'priors\.a_std'"),
        ("kind: scaling-law\nexploitation:\n  fraction: 1.5\n", r"field 'exploitation\.fraction'"),
        ("kind: pbe-then-scan\npbe_fraction: 0\n", "pbe_fraction"),
        ("batch_size: 3\n", r"field 'kind': Field required"),
    ],
)
def test_bad_policy_files_raise_clear_errors(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InvalidInputError, match=match) as info:
        load_policy(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)  # one line for the CLI


def test_save_and_reload_round_trip(tmp_path):
    policy = BUILTIN_POLICIES["scaling-law"].model_copy(update={"batch_size": 12, "floor": True})
    path = save_policy(policy, tmp_path / "sub" / "custom.yaml")
    assert load_policy(path) == policy
    assert load_policy(policy) is policy
    assert PolicyConfig.model_validate_json(policy.model_dump_json()) == policy


def test_installed_presets_are_the_repository_files():
    """``screener/policies/presets`` links to ``policies/`` so that written priors reach wheel installs too."""
    from screener.policies.config import PRESETS_DIR

    shipped = {p.name: p.read_bytes() for p in PRESETS_DIR.glob("*.yaml")}
    repo = {p.name: p.read_bytes() for p in REPO_POLICIES.glob("*.yaml")}
    assert shipped == repo and len(repo) >= 4
