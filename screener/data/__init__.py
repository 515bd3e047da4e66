"""Data shipped inside the package (element embeddings, reference tables); see README.md here for sources."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import numpy as np
from numpy.typing import NDArray

__all__ = ["MAX_Z", "element_embedding_table", "elements_with_embedding", "data_path"]

MAX_Z = 118  # embedding tables are indexed by atomic number 0..MAX_Z (row 0 unused)


def data_path(name: str) -> str:
    """Absolute path of a file in ``screener/data``."""
    return str(resources.files("screener.data").joinpath(name))


@lru_cache(maxsize=4)
def _load_embedding(name: str) -> dict[str, list[float]]:
    with open(data_path(f"{name}.json")) as fh:
        return json.load(fh)


def elements_with_embedding(name: str = "matscholar200") -> frozenset[str]:
    """Element symbols that have a vector in the embedding ``name``."""
    return frozenset(_load_embedding(name))


def element_embedding_table(name: str = "matscholar200") -> NDArray[np.float32]:
    """Embedding table indexed by atomic number, shape (MAX_Z + 1, dim); rows of elements without a vector are 0."""
    from pymatgen.core import Element

    emb = _load_embedding(name)
    dim = len(next(iter(emb.values())))
    table = np.zeros((MAX_Z + 1, dim), dtype=np.float32)
    for symbol, vector in emb.items():
        table[Element(symbol).Z] = vector
    return table
