"""The wheel carries what an installed screener needs: the shipped model, the policy presets, the package data."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from screener.campaign.ensemble_model import DEFAULT_PBE_MODEL, default_model_dir, shipped_models_dir

ROOT = Path(__file__).resolve().parents[1]
_SKIP = shutil.ignore_patterns(".venv", ".git", "build", "dist", "site", "*.egg-info", "__pycache__", ".pytest_cache",
                               ".hypothesis", "demo-campaign", "campaigns", "train_state.pt", "last")


def test_default_model_is_the_shipped_one():
    assert shipped_models_dir().resolve() == (ROOT / "models").resolve()
    assert default_model_dir() == shipped_models_dir() / DEFAULT_PBE_MODEL
    assert (default_model_dir() / "MODEL_CARD.md").is_file()


def test_wheel_contains_model_presets_and_data(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=_SKIP)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True, timeout=600)
    (wheel,) = (tmp_path / "dist").glob("screener-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    model = f"screener/data/models/{DEFAULT_PBE_MODEL}"
    assert f"{model}/ensemble.json" in names and f"{model}/MODEL_CARD.md" in names
    assert sum(n.startswith(f"{model}/member_") and n.endswith("model.safetensors") for n in names) >= 2
    assert not any(n.endswith("train_state.pt") for n in names)  # release files only
    presets = {Path(n).name for n in names if n.startswith("screener/policies/presets/")}
    assert presets == {p.name for p in (ROOT / "policies").glob("*.yaml")}
    assert "screener/data/matscholar200.json" in names
