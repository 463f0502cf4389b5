"""One 48->48 conv layer: znn FFT and direct against PyTorch CPU, forward and forward+backward.

Usage: python benchmarks/bench_layers.py [--threads 1,2] [--quick]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_time, write_table  # noqa: E402

LAYERS = [  # (name, kernel, input size)
    ("3^3 on 64^3", (3, 3, 3), (64, 64, 64)),
    ("5^3 on 64^3", (5, 5, 5), (64, 64, 64)),
    ("7^3 on 64^3", (7, 7, 7), (64, 64, 64)),
    ("1x5x5 on 256^2", (1, 5, 5), (1, 256, 256)),
    ("1x11x11 on 256^2", (1, 11, 11), (1, 256, 256)),
]
MAPS = 48

NET = """nodes input
type input
size {n}
edges conv
type conv
init uniform
size {k}
input input
output output
nodes output
type sum
size {n}
"""


def znn_layer(kernel, in_size, threads):
    from znn.formats.network_file import parse_network
    from znn.net.graph import Network

    out = tuple(i - k + 1 for i, k in zip(in_size, kernel))
    spec = parse_network(NET.format(n=MAPS, k=",".join(map(str, kernel))), "<bench>")
    return Network(spec, out, dtype="float32", num_threads=threads, seed=0)


def torch_times(w, x, threads, repeats):
    import torch

    torch.set_num_threads(threads)
    xt = torch.tensor(x[None])
    wt = torch.nn.Parameter(torch.tensor(w).flip(2, 3, 4).transpose(0, 1).contiguous())

    def fwd():
        with torch.no_grad():
            torch.nn.functional.conv3d(xt, wt)

    def train():
        xg = xt.clone().requires_grad_(True)
        y = torch.nn.functional.conv3d(xg, wt)
        y.backward(torch.ones_like(y))

    return best_time(fwd, repeats), best_time(train, repeats)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--quick", action="store_true", help="skip the 7^3 layer, one repeat")
    args = ap.parse_args(argv)
    from znn.net.conv_plan import time_layer

    rows = []
    repeats = 1 if args.quick else 2
    for threads in [int(t) for t in args.threads.split(",")]:
        for name, kernel, in_size in LAYERS:
            if args.quick and kernel == (7, 7, 7):
                continue
            net = znn_layer(kernel, in_size, threads)
            edge = net.edges["conv"]
            fwd = time_layer(edge, training=False, repeats=repeats)
            trn = time_layer(edge, training=True, repeats=repeats)
            x = np.random.default_rng(0).standard_normal((MAPS,) + in_size).astype(np.float32)
            t_fwd, t_trn = torch_times(edge.filters, x, threads, repeats)
            best_f, best_t = min(fwd.values()), min(trn.values())
            rows.append([name, threads,
                         f"{fwd['fft'] * 1e3:.0f}", f"{fwd['direct'] * 1e3:.0f}",
                         f"{t_fwd * 1e3:.0f}", f"{t_fwd / best_f:.2f}x",
                         f"{trn['fft'] * 1e3:.0f}", f"{trn['direct'] * 1e3:.0f}",
                         f"{t_trn * 1e3:.0f}", f"{t_trn / best_t:.2f}x"])
            print(rows[-1], flush=True)
    write_table("layers", ["layer 48->48", "threads", "fwd fft ms", "fwd direct ms",
                           "fwd torch ms", "torch/znn", "train fft ms", "train direct ms",
                           "train torch ms", "torch/znn"], rows)


if __name__ == "__main__":
    main()
