"""Timing helpers shared by the benchmarks: best-of-N wall time, machine facts, result tables."""
from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

from znn.net.conv_plan import best_time  # noqa: F401  (re-exported for the benchmarks)
from znn.net.plan_store import machine  # noqa: F401  (CPU, family/model, vector ISA, cores)

RESULTS = Path(__file__).resolve().parent.parent / "bench-results"


def peak_rss_mb():
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_busy_seconds():
    """CPU seconds (all cores) spent busy since boot, from /proc/stat (None off Linux)."""
    try:
        with open("/proc/stat") as fh:
            vals = [int(v) for v in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(vals) - vals[3] - vals[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def wait_for_idle(max_wait, threshold=0.25):
    """Wait (up to max_wait s) until other processes use < threshold cores; returns s waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait:
        b0 = cpu_busy_seconds()
        if b0 is None:
            break
        time.sleep(1.0)
        if cpu_busy_seconds() - b0 < threshold:
            break
    return time.perf_counter() - t0


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_results(name, text, data, results=None):
    """Write text to <results>/<name>.md and data to <name>.json; returns the .md path."""
    results = Path(results or RESULTS)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.md").write_text(text if text.endswith("\n") else text + "\n")
    (results / f"{name}.json").write_text(json.dumps(data, indent=1, default=str))
    return results / f"{name}.md"


def write_table(name, header, rows):
    """Print a markdown table and write it (and the raw rows as JSON) to bench-results/."""
    text = markdown_table(header, rows)
    print(text)
    write_results(name, f"machine: {machine()}\n\n{text}\n",
                  {"header": header, "rows": rows, "machine": machine()})
    return text


def two_core_probe(calls=200):
    """What two cores deliver right now: the throughput of two single-threaded, in-cache GEMMs
    (1x1x1 convolutions, 96 maps to 96 over 1024 voxels) run at the same time, over one run
    alone.  2.0 means two full cores; on a shared virtual machine other tenants' work on the
    same physical cores lowers it.  A sample of ~0.2 s: it moves within seconds."""
    import threading

    import numpy as np

    from znn import kernels as K

    rng = np.random.default_rng(0)
    pairs = [(rng.standard_normal((96, 4, 16, 16), dtype=np.float32),
              rng.standard_normal((96, 96, 1, 1, 1), dtype=np.float32)) for _ in range(2)]

    def run(k):
        x, w = pairs[k]
        for _ in range(calls):
            K.conv_forward(x, w, (1, 1, 1), nthreads=1)  # releases the GIL

    run(0)
    t0 = time.perf_counter()
    run(0)
    alone = time.perf_counter() - t0
    other = threading.Thread(target=run, args=(1,))
    t0 = time.perf_counter()
    other.start()
    run(0)
    other.join()
    return 2.0 * alone / (time.perf_counter() - t0)
