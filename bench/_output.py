"""How a benchmark hands over its result: one JSON object, written to ``--output`` (if given) and printed as the
last line of stdout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit(out: dict[str, Any], output: Path | None) -> dict[str, Any]:
    """Write ``out`` (indented) to ``output`` when given, print it on one line, and return it."""
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))
    return out
