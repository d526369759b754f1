"""The demo's golden summary: ``python tests/golden.py out/demo/summary.json`` rewrites it.

Machine facts (timings, this checkout's folders) are left out so that the file compares
across machines and checkouts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

GOLDEN = Path(__file__).with_name("data") / "demo_summary_golden.json"


def comparable(summary: dict) -> dict:
    """The summary less what depends on the machine: timings and the folders of this checkout."""
    summary = dict(summary)
    for key in ("timing_s", "config"):
        summary.pop(key, None)
    model = {k: v for k, v in summary["model"].items() if k != "checkpoint"}
    model["card"] = {k: v for k, v in model["card"].items() if k != "path"}
    summary["model"] = model
    return summary


if __name__ == "__main__":
    summary = comparable(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8")))
    GOLDEN.write_text(json.dumps(summary, indent=0, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"wrote {GOLDEN}")
