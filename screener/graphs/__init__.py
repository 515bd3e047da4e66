"""Crystal graphs: structure -> 24-nearest-neighbour graph with shell-rank edges; batching; on-disk cache; sharded store.

:class:`GraphBatch` and :func:`collate_graphs` need torch and are imported on first use, so building graphs (for
example in worker processes) does not import torch.
"""

from __future__ import annotations

from screener._lazy import lazy_getattr
from screener.graphs.build import build_graph
from screener.graphs.graph import CrystalGraph

__all__ = [
    "CrystalGraph", "GraphBatch", "collate_graphs", "build_graph", "build_graphs", "GraphCache", "GraphStore",
    "build_store",
]

_LAZY = {
    "GraphBatch": "screener.graphs.batch",
    "collate_graphs": "screener.graphs.batch",
    "build_graphs": "screener.graphs.parallel",
    "GraphCache": "screener.graphs.cache",
    "GraphStore": "screener.graphs.store",
    "build_store": "screener.graphs.store",
}


__getattr__ = lazy_getattr(__name__, _LAZY)
