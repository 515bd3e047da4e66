"""The CGAT network, its training, transfer, ensembles and checkpoints.

Only the configuration is imported eagerly; the torch-based names below load on first access.
"""

from __future__ import annotations

from screener._lazy import lazy_getattr
from screener.cgat.config import PRESETS, CGATConfig, get_preset

_LAZY = {
    "CGAT": "screener.cgat.model",
    "TrainConfig": "screener.cgat.training",
    "TrainResult": "screener.cgat.training",
    "train_model": "screener.cgat.training",
    "predict_model": "screener.cgat.training",
    "CGATEnsemble": "screener.cgat.ensemble",
    "EnsemblePrediction": "screener.cgat.ensemble",
    "EnsembleInfo": "screener.cgat.ensemble",
    "train_ensemble": "screener.cgat.ensemble",
    "make_splits": "screener.cgat.ensemble",
    "ModelMeta": "screener.cgat.checkpoint",
    "Normalization": "screener.cgat.checkpoint",
    "save_model": "screener.cgat.checkpoint",
    "load_model": "screener.cgat.checkpoint",
    "load_for_transfer": "screener.cgat.transfer",
    "freeze_for_transfer": "screener.cgat.transfer",
    "train_from_files": "screener.cgat.api",
    "predict_files": "screener.cgat.api",
    "run_demo": "screener.cgat.api",
}

__all__ = ["CGATConfig", "PRESETS", "get_preset", *_LAZY]


__getattr__ = lazy_getattr(__name__, _LAZY)
