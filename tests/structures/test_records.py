"""StructureRecord / ReadResult: JSON round trip and the user-facing summary."""

from __future__ import annotations

import json

import pytest

from screener.errors import InvalidInputError, InvalidStructureError
from screener.structures import ReadResult, StructureRecord, read_structures


def test_record_json_round_trip(structures_dir):
    record = read_structures(structures_dir / "alexandria_part_1.json.bz2", target="e_form").records[1]
    back = StructureRecord.from_dict(json.loads(json.dumps(record.as_dict())))
    assert back.structure_id == record.structure_id == "agm003157159"
    assert back.structure == record.structure
    assert back.targets == record.targets
    assert back.entry.energy == record.entry.energy
    assert back.entry.data["mat_id"] == "agm003157159"
    assert back.data == record.data
    assert back.source == record.source
    assert back.formula == record.formula


def test_summary_lists_and_counts_skipped(si):
    result = ReadResult(
        records=[StructureRecord("si", si)],
        skipped=[InvalidStructureError(f"bad-{i}", "overlapping atoms") for i in range(12)],
    )
    text = result.summary(max_listed=10)
    assert text.splitlines()[0] == "read 1 structures, skipped 12"
    assert "  skipped bad-0: overlapping atoms" in text
    assert text.splitlines()[-1] == "  ... and 2 more"
    assert len(result) == 1 and result.structures == [si] and [r.structure_id for r in result] == ["si"]


def test_require_records(si):
    assert ReadResult(records=[StructureRecord("si", si)]).require_records().structure_ids == ["si"]
    empty = ReadResult(skipped=[InvalidStructureError("x.cif", "unreadable CIF file")])
    expected = r"no valid structures \(1 skipped; first: x.cif: unreadable CIF file\)"
    with pytest.raises(InvalidInputError, match=expected):
        empty.require_records()
