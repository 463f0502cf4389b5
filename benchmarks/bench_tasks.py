"""Two threads across independent work against two threads inside each kernel.

A training step's backward pass has two independent pieces of work per conv layer: the
input gradient (backward-data) and the weight gradient (backward-weight).  Task parallelism
runs them at once, one thread each; znn instead runs them one after the other, each kernel
splitting its own work over both threads.  This times both ways on the conv layers of a
network (direct convolution, Winograd tiles where the kernel fits, as the conv plan mostly
picks for N4 and VD2D3D), alternated round by round with the host's two-core probe (two
single-threaded in-cache GEMMs at once over one alone; see common.two_core_probe).

Usage: python benchmarks/bench_tasks.py [--net N4.znn --out 1,200,200] [--rounds 5]
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import markdown_table, two_core_probe, write_results  # noqa: E402


def layer_work(edge, rng):
    """(backward-data(nthreads), backward-weight(nthreads)) closures for one conv edge."""
    from znn import kernels as K

    wino = 6 if edge.ksize != (1, 1, 1) and K.winograd_fits(edge.ksize) else 0
    x = rng.standard_normal((edge.src.n,) + tuple(edge.src.size)).astype(np.float32)
    g = rng.standard_normal((edge.dst.n,) + tuple(edge.dst.size)).astype(np.float32)
    w, gw, d = edge.filters, np.zeros_like(edge.filters), edge.dilation

    def data(nt):
        K.conv_backward_data(g, w, d, x.shape[1:], nthreads=nt, winograd=wino)

    def weight(nt):
        K.conv_backward_weight(x, g, d, out=gw, nthreads=nt, winograd=wino)
    return data, weight


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", default=str(HERE.parent / "networks" / "VD2D3D.znn"))
    ap.add_argument("--out", default="4,100,100", help="output patch z,y,x")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out-dir", default=None, help="results folder (default bench-results/)")
    args = ap.parse_args(argv)
    from znn.formats.network_file import read_network
    from znn.net.graph import Network
    from znn.process import tune_memory

    tune_memory(huge_pages=True)
    out = tuple(int(v) for v in args.out.split(","))
    net = Network(read_network(args.net), out, dtype="float32", num_threads=2, seed=0)
    rng = np.random.default_rng(0)
    pool = ThreadPoolExecutor(1)
    rows, totals = [], {"in kernels": 0.0, "across tasks": 0.0}
    for edge in net.conv_edges():
        if not edge.src.needs_grad:
            continue
        data, weight = layer_work(edge, rng)

        def inside():  # one after the other, each on both threads
            data(2)
            weight(2)

        def across():  # at once, one thread each
            other = pool.submit(data, 1)
            weight(1)
            other.result()
        inside(), across()
        took = {"in kernels": [], "across tasks": []}
        probes = []
        for r in range(args.rounds):
            for name, fn in ((("in kernels", inside), ("across tasks", across)) if r % 2 == 0
                             else (("across tasks", across), ("in kernels", inside))):
                t0 = time.perf_counter()
                fn()
                took[name].append(time.perf_counter() - t0)
            probes.append(two_core_probe(100))
        med = {k: median(v) for k, v in took.items()}
        for k in totals:
            totals[k] += med[k]
        rows.append([edge.name, f"{edge.src.n}->{edge.dst.n}",
                     "x".join(map(str, edge.ksize)), f"{med['in kernels'] * 1e3:.1f}",
                     f"{med['across tasks'] * 1e3:.1f}",
                     f"{med['in kernels'] / med['across tasks']:.2f}x",
                     f"{median(probes):.2f}x"])
        print(rows[-1], flush=True)
    rows.append(["total", "", "", f"{totals['in kernels'] * 1e3:.1f}",
                 f"{totals['across tasks'] * 1e3:.1f}",
                 f"{totals['in kernels'] / totals['across tasks']:.2f}x", ""])
    text = markdown_table(["layer", "maps", "kernel", "in kernels ms (2 threads each)",
                           "across tasks ms (1 thread each, at once)",
                           "speed-up of tasks", "two-core probe"], rows)
    print(text)
    path = write_results("tasks", f"# Backward pass: threads inside kernels or across tasks\n\n"
                         f"network {Path(args.net).name}, output {args.out}, medians of "
                         f"{args.rounds} alternated rounds\n\n{text}\n",
                         {"rows": rows, "net": args.net, "out": out}, args.out_dir)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
