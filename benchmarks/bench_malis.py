"""Time MALIS weights and the rand error on a 3 x 16 x 128 x 128 affinity patch (one core)."""
import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from znn import malis  # noqa: E402


def cells(shape, cell, rng):
    """Segmentation of jittered box cells separated by one-voxel boundaries (id 0)."""
    grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    ids = np.zeros(shape, dtype=np.int64)
    for g, c in zip(grids, cell):
        off = rng.integers(0, c)
        ids = ids * 1000 + (g + off) // c
    seg = ids + 1
    for ax in range(3):
        if shape[ax] > 1:
            diff = np.diff(seg, axis=ax) != 0
            pad = [(0, 0)] * 3
            pad[ax] = (1, 0)
            seg[np.pad(diff, pad)] = 0
    return seg


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", type=int, nargs=3, default=(16, 128, 128), metavar=("Z", "Y", "X"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    shape = tuple(args.shape)
    seg = cells(shape, (4, 16, 16), rng)
    true = malis.affinities_from_segmentation(seg, dtype=args.dtype)
    noisy = np.clip(true + rng.normal(0, 0.3, true.shape), 0, 1).astype(args.dtype)
    uniform = rng.random(true.shape).astype(args.dtype)
    nvox = int(np.prod(shape))
    print(f"patch 3 x {' x '.join(map(str, shape))} ({nvox} voxels), {args.dtype}, "
          f"best of {args.repeat}")
    rows = [
        ("segment_from_affinities", lambda: malis.segment_from_affinities(true)),
        ("malis_weights (noisy labels)", lambda: malis.malis_weights(noisy, true)),
        ("malis_weights (uniform random)", lambda: malis.malis_weights(uniform, true)),
        ("malis_weights frac_norm", lambda: malis.malis_weights(noisy, true, frac_norm=True)),
        ("rand_error", lambda: malis.rand_error(noisy, true)),
        ("malis_gradient_weights constrained",
         lambda: malis.malis_gradient_weights(noisy, true, constrained=True)),
    ]
    for name, fn in rows:
        print(f"  {name:36s} {best_of(fn, args.repeat) * 1e3:8.1f} ms")
    _, _, st = malis.malis_weights(noisy, true)
    print(f"  labelled voxels {st['n']}, rand error (noisy) {st['rand_error']:.4f}")


if __name__ == "__main__":
    main()
