"""Materials Project entries: a fake MPRester (mp-api is optional and never contacted here), the disk cache."""

from __future__ import annotations

import sys
import types

import pytest

from screener.errors import OfflineError
from screener.hull import FidelityHull, get_mp_entries
from screener.hull.mp_cache import MPAccessError, default_mp_cache_dir, mp_cache_path

KEY = "x" * 32


@pytest.fixture
def fake_mp_api(monkeypatch, mp_entries_readonly):
    """Install a fake ``mp_api.client`` whose MPRester serves the Li-Fe-O entries and records every call."""
    calls: list[dict] = []

    class FakeMPRester:
        def __init__(self, api_key=None, **kwargs):
            calls.append({"init": api_key})
            self.api_key = api_key

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def get_entries_in_chemsys(self, elements, additional_criteria=None, **kwargs):
            calls.append({"elements": list(elements), "criteria": additional_criteria})
            wanted = set(elements)
            return [e for e in mp_entries_readonly if {str(el) for el in e.composition.elements} <= wanted]

    package = types.ModuleType("mp_api")
    client = types.ModuleType("mp_api.client")
    client.MPRester = FakeMPRester
    package.client = client
    monkeypatch.setitem(sys.modules, "mp_api", package)
    monkeypatch.setitem(sys.modules, "mp_api.client", client)
    monkeypatch.delenv("MP_API_KEY", raising=False)
    return calls


def test_fetch_then_cache_hit_then_offline(tmp_path, fake_mp_api):
    entries = get_mp_entries("Li-O", cache_dir=tmp_path, api_key=KEY)
    assert len(entries) == 52  # Li-O 22 + Li 9 + O 21
    assert fake_mp_api[0] == {"init": KEY}
    assert fake_mp_api[1] == {"elements": ["Li", "O"], "criteria": {"thermo_types": ["GGA_GGA+U"]}}
    path = mp_cache_path("O-Li", "pbe", tmp_path)
    assert path.is_file() and path.name == "Li-O.pbe.json.gz"
    assert all(e.data["fidelity"] == "pbe" and e.data["backend"] == "mp" for e in entries)
    # second call: from the cache, no server call, same energies
    again = get_mp_entries(["O", "Li"], cache_dir=tmp_path, api_key=KEY)
    assert len(fake_mp_api) == 2
    assert [e.energy for e in again] == pytest.approx([e.energy for e in entries])
    offline = get_mp_entries("Li-O", cache_dir=tmp_path, offline=True)
    assert len(offline) == 52 and len(fake_mp_api) == 2
    # MP entries carry MP2020 already: the hull does not apply it again
    hull = FidelityHull("pbe", entries=offline)
    assert sorted(e.composition.reduced_formula for e in hull.stable_entries()) == sorted(
        ["Li", "O2", "Li2O", "Li2O2", "LiO8"])
    # refresh asks again; r2SCAN asks for the R2SCAN thermo type and has its own cache file
    get_mp_entries("Li-O", cache_dir=tmp_path, api_key=KEY, refresh=True)
    assert len(fake_mp_api) == 4
    get_mp_entries("Li-O", fidelity="scan", cache_dir=tmp_path, api_key=KEY)
    assert fake_mp_api[-1]["criteria"] == {"thermo_types": ["R2SCAN"]}
    assert mp_cache_path("Li-O", "scan", tmp_path).is_file()


def test_offline_miss_is_a_clear_error(tmp_path, fake_mp_api):
    with pytest.raises(OfflineError, match="no cached Materials Project entries for Fe-O"):
        get_mp_entries("Fe-O", cache_dir=tmp_path, offline=True)
    assert fake_mp_api == []


def test_no_api_key(tmp_path, fake_mp_api, monkeypatch):
    import pymatgen.core

    monkeypatch.setitem(pymatgen.core.SETTINGS, "PMG_MAPI_KEY", None)
    with pytest.raises(MPAccessError, match="MP_API_KEY"):
        get_mp_entries("Fe-O", cache_dir=tmp_path)
    monkeypatch.setenv("MP_API_KEY", KEY)
    assert len(get_mp_entries("Fe-O", cache_dir=tmp_path)) == 10 + 21 + 136


def test_mp_api_not_installed(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mp_api", None)
    monkeypatch.setitem(sys.modules, "mp_api.client", None)
    with pytest.raises(MPAccessError, match=r"pip install 'screener\[mp\]'"):
        get_mp_entries("Fe-O", cache_dir=tmp_path, api_key=KEY)


def test_server_failure_becomes_offline_error(tmp_path, fake_mp_api, monkeypatch):
    def broken(self, elements, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(sys.modules["mp_api.client"].MPRester, "get_entries_in_chemsys", broken)
    with pytest.raises(OfflineError, match="no route to host"):
        get_mp_entries("Fe-O", cache_dir=tmp_path, api_key=KEY)
    assert not mp_cache_path("Fe-O", "pbe", tmp_path).exists()


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SCREENER_MP_CACHE", str(tmp_path / "mp"))
    assert default_mp_cache_dir() == tmp_path / "mp"
    monkeypatch.delenv("SCREENER_MP_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_mp_cache_dir() == tmp_path / "screener" / "mp"
