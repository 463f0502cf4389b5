"""Time the FFT kernels (rfft, irfft, kernel spectra, MACs, weight grad) of one conv layer."""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from znn._core import _fft as F  # noqa: E402

# the per-iteration training work of a layer: old (full spectra) and z-factored (GEMM) paths
OLD = ("kernel_spectra", "mac_forward", "mac_backward", "weight_grad")
NEW = ("kernel_spectra_yx", "zmac_forward", "zmac_backward", "weight_grad_z")


def best_of(fn, repeat):
    fn()  # warm-up (plans, page faults)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def rel_err(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def bench_layer(shape, ksize, nin, nout, dtype, threads, repeat, big, transforms, streamed):
    rng = np.random.default_rng(0)
    n = shape
    span = tuple(k - 1 for k in ksize)
    outs = tuple(n[a] - span[a] for a in range(3))
    d = (1, 1, 1)
    x = rng.standard_normal((nin, *n)).astype(dtype)
    g = rng.standard_normal((nout, *outs)).astype(dtype)
    w = rng.standard_normal((nin, nout, *ksize)).astype(dtype)
    xf = F.rfft(x, n)
    gf = F.rfft(g, n, span)
    yf = np.empty((nout,) + xf.shape[1:], xf.dtype)
    dxf = np.empty_like(xf)
    y = np.empty((nout, *outs), dtype)
    dx = np.empty_like(x)
    wf = F.kernel_spectra(w, d, n)
    wyx = F.kernel_spectra_yx(w, d, n)
    yf2, dxf2 = np.empty_like(yf), np.empty_like(dxf)
    F.mac_forward(xf, wf, yf)
    F.zmac_forward(xf, wyx, ksize, d, n, yf2)
    F.mac_backward(gf, wf, dxf)
    F.zmac_backward(gf, wyx, ksize, d, n, dxf2)
    dw_err = rel_err(F.weight_grad_z(xf, gf, n, ksize, d), F.weight_grad(xf, gf, n, ksize, d))
    print(f"  z-path vs old, max relative difference: forward {rel_err(yf2, yf):.1e}, "
          f"backward {rel_err(dxf2, dxf):.1e}, weight grad {dw_err:.1e}")
    print(f"  cached spectra: full {wf.nbytes / 2**20:.0f} MiB, yx {wyx.nbytes / 2**20:.0f} MiB")
    inv = 1.0 / np.prod(n)
    rows = []
    for t in threads:
        def run(name, fn, reps=repeat):
            rows.append((name, t, best_of(fn, reps)))

        if transforms:
            for strategy, tag in ((1, "per-map"), (2, "batched")):
                F._set_strategy(strategy)
                run(f"rfft x{nin} ({tag})", lambda: F.rfft(x, n, out=xf, nthreads=t))
                run(f"rfft g{nout} at offset ({tag})",
                    lambda: F.rfft(g, n, span, out=gf, nthreads=t))
                run(f"irfft y{nout} crop ({tag})",
                    lambda: F.irfft(yf, n, span, outs, out=y, scale=inv, nthreads=t))
                run(f"irfft dx{nin} full ({tag})",
                    lambda: F.irfft(dxf, n, (0, 0, 0), n, out=dx, scale=inv, nthreads=t))
            F._set_strategy(0)
        reps = 1 if big else repeat
        run("kernel_spectra", lambda: F.kernel_spectra(w, d, n, out=wf, nthreads=t), reps)
        run("mac_forward", lambda: F.mac_forward(xf, wf, yf, nthreads=t))
        run("mac_backward", lambda: F.mac_backward(gf, wf, dxf, nthreads=t))
        run("weight_grad", lambda: F.weight_grad(xf, gf, n, ksize, d, nthreads=t), reps)
        run("kernel_spectra_yx", lambda: F.kernel_spectra_yx(w, d, n, out=wyx, nthreads=t))
        run("zmac_forward", lambda: F.zmac_forward(xf, wyx, ksize, d, n, yf, nthreads=t))
        run("zmac_backward", lambda: F.zmac_backward(gf, wyx, ksize, d, n, dxf, nthreads=t))
        run("weight_grad_z", lambda: F.weight_grad_z(xf, gf, n, ksize, d, nthreads=t))
        if streamed:
            run("mac_forward_streamed",
                lambda: F.mac_forward_streamed(xf, w, d, n, yf, nthreads=t), reps)
            run("mac_backward_streamed",
                lambda: F.mac_backward_streamed(gf, w, d, n, dxf, nthreads=t), reps)
    for t in threads:
        vals = {nm: s for nm, tt, s in rows if tt == t}
        rows.append(("old total (4 above)", t, sum(vals[nm] for nm in OLD)))
        rows.append(("z-path total (4 above)", t, sum(vals[nm] for nm in NEW)))
    return rows


def vec3(text):
    v = tuple(int(s) for s in text.split(","))
    if len(v) == 1:
        v = v * 3
    if len(v) != 3:
        raise argparse.ArgumentTypeError(f"need 1 or 3 integers, got {text!r}")
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--maps", type=int, default=48, help="n_in = n_out")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--only", choices=["2d", "3d"], default=None)
    ap.add_argument("--shape", type=vec3, default=None,
                    help="map (= FFT) size z,y,x: time this layer instead of the default ones")
    ap.add_argument("--ksize", type=vec3, default=None,
                    help="kernel size z,y,x (or one number for a cube); default 3 / 1,3,3")
    ap.add_argument("--no-transforms", action="store_true", help="skip rfft / irfft")
    ap.add_argument("--streamed", action="store_true", help="also time the streamed MACs")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    print(f"backend {F.backend()}, {args.dtype}, {args.maps}->{args.maps} maps, best of "
          f"{args.repeat}")
    if args.shape:
        k = args.ksize or ((1, 3, 3) if args.shape[0] == 1 else (3, 3, 3))
        setups = [("custom", args.shape, k, False)]
    else:
        setups = [("2d", (1, 200, 200), args.ksize or (1, 3, 3), False),
                  ("3d", (64, 64, 64), args.ksize or (3, 3, 3), True)]
    for tag, shape, ksize, big in setups:
        if args.only and args.only != tag:
            continue
        print(f"\nmaps {shape}, kernel {ksize}")
        rows = bench_layer(shape, ksize, args.maps, args.maps, np.dtype(args.dtype), threads,
                           args.repeat, big, not args.no_transforms, args.streamed)
        names = list(dict.fromkeys(r[0] for r in rows))
        print(f"{'operation':36s}" + "".join(f"{f'{t} thr [ms]':>12s}" for t in threads))
        for name in names:
            vals = {t: s for nm, t, s in rows if nm == name}
            print(f"{name:36s}" + "".join(f"{1e3 * vals[t]:12.1f}" for t in threads))


if __name__ == "__main__":
    main()
