"""Structure inputs: read candidate crystals from files, validate them, remove duplicates, write them out.

Knows nothing of graphs or models. See ``docs/development.md`` for the contract.
"""

from __future__ import annotations

from screener.structures.dedup import deduplicate, group_duplicates
from screener.structures.formats import detect_format
from screener.structures.reader import collect_files, read_structures
from screener.structures.records import ReadResult, StructureRecord
from screener.structures.validation import MIN_INTERATOMIC_DISTANCE_A, validate_structure
from screener.structures.writer import write_structures

__all__ = [
    "StructureRecord",
    "ReadResult",
    "read_structures",
    "collect_files",
    "detect_format",
    "validate_structure",
    "deduplicate",
    "group_duplicates",
    "write_structures",
    "MIN_INTERATOMIC_DISTANCE_A",
]
