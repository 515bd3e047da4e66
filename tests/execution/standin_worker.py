"""Subprocess used by test_local.py: run 20 MP-20 candidates x {PBE, SCAN} with the stand-in through `local`.

Usage: python standin_worker.py CAMPAIGN_DIR N_CANDIDATES
Prints one JSON line at the end: {"calls": <stand-in calculations run by this process>, "uuids": [...]}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HELPER = Path(__file__).parents[1] / "calculators" / "mp20_candidates.py"


def main() -> None:
    import torch

    torch.set_num_threads(1)
    import importlib.util

    spec = importlib.util.spec_from_file_location("screener_test_mp20_candidates", HELPER)
    helper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helper)

    from screener.calculators import get_calculator
    from screener.calculators.standin import CALL_COUNTS
    from screener.execution import get_executor

    campaign, n = Path(sys.argv[1]), int(sys.argv[2])
    calc = get_calculator("standin")
    flows = [calc.make_flow(s, f, sid) for sid, s in helper.load_candidates(n) for f in ("pbe", "scan")]
    executor = get_executor("local", campaign, create_folders=False)
    uuids = executor.submit(flows)
    executor.run()
    print(json.dumps({"calls": sum(CALL_COUNTS.values()), "uuids": uuids}))


if __name__ == "__main__":
    main()
