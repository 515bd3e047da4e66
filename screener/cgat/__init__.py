"""The CGAT network, its training, transfer, ensembles and checkpoints."""

from screener.cgat.config import PRESETS, CGATConfig, get_preset

__all__ = ["CGATConfig", "PRESETS", "get_preset"]
