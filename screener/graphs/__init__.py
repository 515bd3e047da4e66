"""Crystal graphs: structure -> 24-nearest-neighbour graph with shell-rank edges; batching; on-disk cache."""

from screener.graphs.batch import GraphBatch, collate_graphs
from screener.graphs.graph import CrystalGraph

__all__ = ["CrystalGraph", "GraphBatch", "collate_graphs"]
