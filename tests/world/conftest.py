"""Shared world fixtures: one small world built once per test session (the CHGNet stand-ins are the slow part)."""

from __future__ import annotations

import pytest

SIZE = 40
SEED = 7


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """A 40-structure world (graphs built in 2 processes); returns (folder, manifest)."""
    from screener.world import build_world

    out = tmp_path_factory.mktemp("world") / "w"
    manifest = build_world(out, size=SIZE, seed=SEED, n_jobs=2, shard_size=25)
    return out, manifest
