"""Time the FFT kernels (rfft, irfft, kernel spectra, MACs, weight grad) of one conv layer."""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from znn._core import _fft as F  # noqa: E402


def best_of(fn, repeat):
    fn()  # warm-up (plans, page faults)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_layer(shape, ksize, nin, nout, dtype, threads, repeat, big):
    rng = np.random.default_rng(0)
    n = shape
    span = tuple(k - 1 for k in ksize)
    outs = tuple(n[a] - span[a] for a in range(3))
    x = rng.standard_normal((nin, *n)).astype(dtype)
    g = rng.standard_normal((nout, *outs)).astype(dtype)
    w = rng.standard_normal((nin, nout, *ksize)).astype(dtype)
    xf = F.rfft(x, n)
    gf = F.rfft(g, n, span)
    yf = np.empty((nout,) + xf.shape[1:], xf.dtype)
    dxf = np.empty_like(xf)
    y = np.empty((nout, *outs), dtype)
    dx = np.empty_like(x)
    wf = F.kernel_spectra(w, (1, 1, 1), n)
    inv = 1.0 / np.prod(n)
    rows = []
    for t in threads:
        def run(name, fn, reps=repeat):
            rows.append((name, t, best_of(fn, reps)))

        for strategy, tag in ((1, "per-map"), (2, "batched")):
            F._set_strategy(strategy)
            run(f"rfft x{nin} ({tag})", lambda: F.rfft(x, n, out=xf, nthreads=t))
            run(f"rfft g{nout} at offset ({tag})", lambda: F.rfft(g, n, span, out=gf, nthreads=t))
            run(f"irfft y{nout} crop ({tag})",
                lambda: F.irfft(yf, n, span, outs, out=y, scale=inv, nthreads=t))
            run(f"irfft dx{nin} full ({tag})",
                lambda: F.irfft(dxf, n, (0, 0, 0), n, out=dx, scale=inv, nthreads=t))
        F._set_strategy(0)
        run("mac_forward", lambda: F.mac_forward(xf, wf, yf, nthreads=t))
        run("mac_backward", lambda: F.mac_backward(gf, wf, dxf, nthreads=t))
        reps = 1 if big else repeat
        run(f"kernel_spectra {nin}x{nout}",
            lambda: F.kernel_spectra(w, (1, 1, 1), n, out=wf, nthreads=t), reps)
        run("mac_forward_streamed",
            lambda: F.mac_forward_streamed(xf, w, (1, 1, 1), n, yf, nthreads=t), reps)
        run("mac_backward_streamed",
            lambda: F.mac_backward_streamed(gf, w, (1, 1, 1), n, dxf, nthreads=t), reps)
        run(f"weight_grad {nin}x{nout}",
            lambda: F.weight_grad(xf, gf, n, ksize, (1, 1, 1), nthreads=t), reps)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--maps", type=int, default=48, help="n_in = n_out")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--only", choices=["2d", "3d"], default=None)
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    print(f"backend {F.backend()}, {args.dtype}, {args.maps}->{args.maps} maps, best of "
          f"{args.repeat}")
    setups = [("2d", (1, 200, 200), (1, 3, 3), False), ("3d", (64, 64, 64), (3, 3, 3), True)]
    for tag, shape, ksize, big in setups:
        if args.only and args.only != tag:
            continue
        rows = bench_layer(shape, ksize, args.maps, args.maps, np.dtype(args.dtype), threads,
                           args.repeat, big)
        print(f"\nmaps {shape}, kernel {ksize}")
        names = list(dict.fromkeys(r[0] for r in rows))
        print(f"{'operation':36s}" + "".join(f"{f'{t} thr [ms]':>12s}" for t in threads))
        for name in names:
            vals = {t: s for nm, t, s in rows if nm == name}
            print(f"{name:36s}" + "".join(f"{1e3 * vals[t]:12.1f}" for t in threads))


if __name__ == "__main__":
    main()
