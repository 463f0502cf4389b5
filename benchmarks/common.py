"""Timing helpers shared by the benchmarks: best-of-N wall time and result tables."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from znn.net.conv_plan import best_time  # noqa: F401  (re-exported for the benchmarks)

RESULTS = Path(__file__).resolve().parent.parent / "bench-results"


def machine():
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count()}


def write_table(name, header, rows):
    """Print a markdown table and write it (and the raw rows as JSON) to bench-results/."""
    RESULTS.mkdir(exist_ok=True)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    text = "\n".join(lines)
    print(text)
    (RESULTS / f"{name}.md").write_text(f"machine: {machine()}\n\n{text}\n")
    (RESULTS / f"{name}.json").write_text(json.dumps({"header": header, "rows": rows,
                                                      "machine": machine()}, indent=1))
    return text
