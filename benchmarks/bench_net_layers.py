"""Every conv layer of one network: znn, with the method its conv plan chose, against PyTorch
CPU's conv3d on the same shapes (dilated, same threads), layer by layer.

Usage: python benchmarks/bench_net_layers.py NET.znn --outsz Z,Y,X [--mode train|forward]
       [--threads 1,2] [--repeats 5] [--out-dir DIR]

The plan is the network's saved one (as `znn optimize-conv NET.znn --outsz ... --mode ...`
makes it, next to the network file), made and saved first when there is none.  'train' times
what a training step runs per layer: forward, weight gradient and input gradient (none for
the input layer); 'forward' the forward pass alone (FFT kernel spectra kept, as inference
keeps them).  znn and PyTorch calls alternate, so a slow spell of a shared host falls on
both; each keeps its best of --repeats.  The plan's own time of the chosen method is shown
next to the measured one.  Writes bench-results/net_layers.md (and .json).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, machine, write_results  # noqa: E402


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def znn_pass(e, x, g, training):
    """One pass of conv edge e in the mode its plan set."""
    from znn.net.conv_plan import fft_pass

    if e.mode == "fft":
        fft_pass(e, x, g, training)
        return
    e.forward(x)
    if training:
        e.backward_weight(g)
        if e.src.needs_grad:
            e.backward_data(g)


def torch_pass(e, x, g, training):
    """The same layer in PyTorch: conv3d with the edge's dilation, forward (+ backward)."""
    import torch

    xt = torch.from_numpy(x)[None].requires_grad_(training and e.src.needs_grad)
    w = torch.from_numpy(np.ascontiguousarray(np.swapaxes(e.filters, 0, 1)))
    dilation = tuple(int(d) for d in e.dilation)
    if not training:
        def run():
            with torch.no_grad():
                torch.nn.functional.conv3d(xt, w, dilation=dilation)
        return run
    w.requires_grad_(True)
    gt = torch.from_numpy(g)[None]

    def run():
        torch.nn.functional.conv3d(xt, w, dilation=dilation).backward(gt)
    return run


def layer_rows(path, outsz, training, threads, repeats, log=print):
    """[row per conv layer] + [total row] for one thread count."""
    import torch

    from znn.cli.optimize_conv import choice_label
    from znn.formats.network_file import read_network
    from znn.net.conv_plan import plan_network
    from znn.net.graph import Network

    torch.set_num_threads(threads)
    net = Network(read_network(path), outsz, dtype="float32", conv_mode="direct",
                  num_threads=threads, seed=0, phase="train" if training else "forward")
    report = plan_network(net, path, training=training, log=log).report
    rng = np.random.default_rng(0)
    rows, total = [], [0.0, 0.0, 0.0]
    for e in net.conv_edges():
        x = rng.random((e.src.n,) + tuple(e.src.size), dtype=np.float32)
        g = rng.random((e.dst.n,) + tuple(e.dst.size), dtype=np.float32)
        mine, theirs = (lambda: znn_pass(e, x, g, training)), torch_pass(e, x, g, training)
        mine(), theirs()  # warm-up: plans, allocations
        best = [float("inf"), float("inf")]
        for _ in range(repeats):
            best = [min(best[0], _timed(mine)), min(best[1], _timed(theirs))]
        e.release()
        e.invalidate_spectra()
        r = report.get(e.name)
        planned = r[r["choice"]] if r else None
        label = choice_label(e, r) if r else "direct (1x1x1)"
        total = [total[0] + best[0], total[1] + best[1], total[2] + (planned or 0.0)]
        rows.append([e.name, f"{e.src.n}->{e.dst.n}", "x".join(map(str, e.ksize)),
                     "x".join(map(str, e.dilation)), "x".join(map(str, e.dst.size)), threads,
                     label, "-" if planned is None else f"{planned * 1e3:.2f}",
                     f"{best[0] * 1e3:.2f}", f"{best[1] * 1e3:.2f}", f"{best[1] / best[0]:.2f}x"])
        log(" | ".join(map(str, rows[-1])))
    rows.append(["all", "", "", "", "", threads, "", f"{total[2] * 1e3:.2f}",
                 f"{total[0] * 1e3:.2f}", f"{total[1] * 1e3:.2f}", f"{total[1] / total[0]:.2f}x"])
    return rows


HEADER = ["layer", "maps", "kernel", "dilation", "output", "threads", "znn method",
          "plan ms", "znn ms", "torch ms", "torch/znn"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("network", help="the .znn network file (its plan is kept next to it)")
    ap.add_argument("--outsz", required=True, help="output patch z,y,x")
    ap.add_argument("--mode", choices=["train", "forward"], default="train")
    ap.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per layer (best of)")
    ap.add_argument("--out-dir", default=None, help="results folder (default bench-results/)")
    args = ap.parse_args(argv)
    try:
        outsz = tuple(int(v) for v in args.outsz.split(","))
        threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        ap.error("--outsz and --threads take comma-separated integers")
    if len(outsz) != 3 or min(outsz) < 1:
        ap.error("--outsz takes three positive integers z,y,x")
    if not Path(args.network).is_file():
        ap.error(f"{args.network}: no such network file")
    rows = []
    for t in threads:
        rows += layer_rows(args.network, outsz, args.mode == "train", t, args.repeats)
    text = markdown_table(HEADER, rows)
    print(text)
    head = (f"network: {args.network}, output {args.outsz}, mode {args.mode}\n"
            f"machine: {machine()}\n")
    path = write_results("net_layers", f"{head}\n{text}\n",
                         {"header": HEADER, "rows": rows, "machine": machine(),
                          "network": args.network, "outsz": outsz, "mode": args.mode},
                         args.out_dir)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
