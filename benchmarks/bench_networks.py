"""Whole networks: znn against PyTorch CPU, same dense network, patch, threads, one run.

Training: forward + backward + SGD update per output patch (output voxels per second).
Inference: a stack processed densely (boundary mirroring), voxels per second.
Usage: python benchmarks/bench_networks.py [--threads 1,2] [--quick]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import best_time, write_table  # noqa: E402

NETWORKS = HERE.parent / "networks"
ZNN_MODE = "optimize"  # inference conv mode (see --mode)
TRAIN = [("N4", "N4.znn", (1, 200, 200)), ("VD2D3D", "VD2D3D.znn", (4, 100, 100)),
         ("zinet 7^3", "zinet.znn", (16, 16, 16))]


def build(name, out, threads, mode="fft"):
    from znn.formats.network_file import read_network
    from znn.net.graph import Network

    return Network(read_network(NETWORKS / name), out, dtype="float32", conv_mode=mode,
                   num_threads=threads, seed=0, phase="train")


def znn_train_step(net):
    from znn.optim import SGD

    rng = np.random.default_rng(0)
    x = {n: rng.standard_normal(net.nodes[n].shape).astype(np.float32) for n in net.inputs}
    opt = SGD(net, net.output_size, eta=1e-6, momentum=0.9)

    def step():
        y = net.forward(x)
        net.backward({k: np.ones_like(v) for k, v in y.items()})
        opt.step()
    return step


def torch_train_step(net, threads):
    import torch
    from torch_nets import TorchDense

    torch.set_num_threads(threads)
    model = TorchDense(net)
    opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
    x = {n: torch.randn((1,) + net.nodes[n].shape) for n in net.inputs}

    def step():
        opt.zero_grad()
        sum(v.sum() for v in model(x).values()).backward()
        opt.step()
    return step


def bench_training(threads, quick):
    rows = []
    for label, name, out in TRAIN[:2] if quick else TRAIN:
        net = build(name, out, threads)
        mode_times = {}
        for mode in ("fft", "direct"):
            net.set_conv_mode(mode)
            mode_times[mode] = best_time(znn_train_step(net), repeats=2)
        t_torch = best_time(torch_train_step(net, threads), repeats=2)
        vox = int(np.prod(out))
        best = min(mode_times.values())
        rows.append([f"{label} train {'x'.join(map(str, out))}", threads,
                     f"{vox / mode_times['fft']:,.0f}", f"{vox / mode_times['direct']:,.0f}",
                     f"{vox / t_torch:,.0f}", f"{t_torch / best:.2f}x"])
        print(rows[-1], flush=True)
    return rows


INFER = [("N4", "N4.znn", (1, 512, 512)), ("net3d_5", "net3d_5.znn", (16, 128, 128))]


def bench_inference(threads, quick, slices=30):
    """Dense inference over a slices x 512 x 512 stack (boundary mirroring) per network."""
    import tifffile
    import torch
    from torch_nets import TorchDense
    from znn.inference import VolumeForward

    rows = []
    z = 4 if quick else slices
    vol = np.random.default_rng(0).integers(0, 255, (z, 512, 512)).astype(np.uint8)
    torch.set_num_threads(threads)
    for label, name, outsz in INFER:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            tifffile.imwrite(tmp / "stack.tif", vol, photometric="minisblack")
            build(name, (1, 1, 1), threads).save(tmp / "net.h5")
            vf = VolumeForward(NETWORKS / name, tmp / "net.h5", dtype="float32",
                               conv_mode=ZNN_MODE, num_threads=threads, mirror=True,
                               outsz=outsz, log=lambda s: None)
            t_znn = best_time(lambda: vf.run({"input": [(tmp / "stack.tif", "none")]},
                                             tmp / "out"), repeats=1, warmup=0)
        fov = build(name, (1, 1, 1), threads).fov
        pads = [((f - 1) // 2, f // 2) for f in fov]
        padded = np.pad(vol.astype(np.float32), pads, mode="symmetric")
        if fov[0] == 1:  # 2D network: whole slices, one at a time
            model = TorchDense(build(name, (1, 512, 512), threads))
            inputs = [padded[k][None, None, None] for k in range(z)]
        else:  # 3D network: the whole padded stack at once
            model = TorchDense(build(name, vol.shape, threads))
            inputs = [padded[None, None]]

        def torch_run():
            with torch.no_grad():
                for a in inputs:
                    model({"input": torch.from_numpy(np.ascontiguousarray(a))})
        t_torch = best_time(torch_run, repeats=1, warmup=0)
        rows.append([f"{label} inference {z}x512x512 ({ZNN_MODE})", threads,
                     f"{vol.size / t_znn:,.0f}", "", f"{vol.size / t_torch:,.0f}",
                     f"{t_torch / t_znn:.2f}x"])
        print(rows[-1], flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--slices", type=int, default=30, help="z slices of the inference stack")
    ap.add_argument("--mode", default="optimize", choices=["optimize", "fft", "direct"],
                    help="znn conv mode for inference")
    ap.add_argument("--only", choices=["training", "inference"], default=None)
    args = ap.parse_args(argv)
    global ZNN_MODE
    ZNN_MODE = args.mode
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        if args.only != "inference":
            rows += bench_training(threads, args.quick)
        if args.only != "training":
            rows += bench_inference(threads, args.quick, args.slices)
    write_table("networks", ["case", "threads", "znn fft vox/s", "znn direct vox/s",
                             "torch vox/s", "torch time / znn time"], rows)


if __name__ == "__main__":
    main()
