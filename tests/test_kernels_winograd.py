"""Winograd tiles of the direct convolution kernels (znn._core._direct, winograd=6|8) against
the numpy tap-loop reference, the GEMM lowering and finite differences."""
import numpy as np
import pytest

import reference_numpy as R
from znn._core import _direct as D

POINTS = (6, 8)
# (n_in, n_out, input shape, kernel, dilation): every y/x kernel length 2..5, dilations below,
# equal to and above the tile size, 3D kernels, rows shorter than one tile, one-voxel outputs
CASES = [
    (2, 3, (1, 9, 11), (1, 3, 3), (1, 1, 1)),
    (3, 2, (1, 20, 17), (1, 4, 4), (1, 2, 2)),
    (2, 2, (1, 23, 31), (1, 5, 5), (1, 3, 2)),
    (4, 5, (5, 13, 12), (2, 3, 3), (1, 1, 1)),
    (3, 2, (9, 14, 15), (3, 2, 4), (2, 2, 3)),
    (1, 1, (1, 6, 6), (1, 2, 5), (1, 1, 1)),
    (2, 3, (4, 8, 9), (2, 3, 2), (3, 1, 2)),
    (2, 2, (1, 40, 37), (1, 3, 3), (1, 16, 16)),
    (1, 2, (1, 3, 4), (1, 3, 4), (1, 1, 1)),
    (3, 1, (2, 30, 7), (1, 4, 2), (1, 9, 5)),
    (2, 2, (1, 7, 252), (1, 3, 3), (1, 1, 1)),  # 63 tiles a row, padded to 64 (6 points)
    (2, 2, (1, 12, 70), (1, 3, 3), (1, 2, 2)),  # rows split into phases of class pairs
    # 4 and 8 x classes (whole runs copied as one vector), also fewer columns than classes
    (2, 3, (2, 21, 45), (1, 3, 3), (1, 4, 4)),
    (3, 2, (2, 30, 59), (2, 3, 4), (1, 8, 8)),
    (2, 2, (1, 22, 20), (1, 3, 3), (1, 8, 8)),
    # runs of several output slices per item, whose source slices wrap around the ring
    (2, 3, (20, 9, 10), (3, 3, 3), (2, 1, 1)),
    (3, 2, (30, 8, 8), (2, 3, 3), (3, 1, 1)),
    # one band of 8 tile rows (6 points) thinned to two for more items
    (2, 3, (8, 34, 34), (3, 3, 3), (1, 1, 1)),
]
IDS = ["3x3", "4x4-d2", "5x5-d3x2", "2x3x3", "3x2x4-d2x2x3", "2x5", "2x3x2-d3x1x2",
       "3x3-d16", "1-voxel", "4x2-d9x5", "padded-row", "3x3-d2-wide", "3x3-d4", "2x3x4-d8", "3x3-d8-narrow",
       "3x3x3-d2-runs", "2x3x3-d3-runs", "3x3x3-thin-bands"]


def _data(case, dtype, seed=0):
    n_in, n_out, ins, k, d = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_in,) + ins).astype(dtype)
    w = rng.standard_normal((n_in, n_out) + k).astype(dtype)
    out = tuple(n - (kk - 1) * dd for n, kk, dd in zip(ins, k, d))
    g = rng.standard_normal((n_out,) + out).astype(dtype)
    return x, w, g, d


def _close(got, want, dtype):
    """Max error relative to the largest reference value: 1e-12 (float64), 2e-5 (float32)."""
    scale = max(float(np.abs(want).max()), 1e-30)
    err = float(np.abs(got.astype(np.float64) - want).max()) / scale
    assert err < (1e-12 if dtype == np.float64 else 2e-5), err


@pytest.mark.parametrize("points", POINTS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_passes_match_the_numpy_reference(case, dtype, points):
    x, w, g, d = _data(case, dtype)
    ins = x.shape[1:]
    y = D.conv_forward(x, w, d, winograd=points)
    _close(y, R.conv_valid(x.astype(np.float64), w.astype(np.float64), d), dtype)
    dx = D.conv_backward_data(g, w, d, ins, winograd=points)
    _close(dx, R.conv_backward_data(g.astype(np.float64), w.astype(np.float64), d, ins), dtype)
    dw = D.conv_backward_weight(x, g, d, winograd=points)
    _close(dw, R.conv_backward_weight(x.astype(np.float64), g.astype(np.float64), d), dtype)


@pytest.mark.parametrize("points", POINTS)
def test_gradients_match_finite_differences(points):
    """Loss L = sum(c * y(x, w)): dL/dw and dL/dx from the Winograd backward passes against
    central differences of the Winograd forward pass (float64)."""
    x, w, c, d = _data((2, 2, (3, 9, 10), (2, 3, 4), (1, 2, 1)), np.float64, seed=3)

    def loss(xx, ww):
        return float(np.sum(c * D.conv_forward(xx, ww, d, winograd=points)))
    dw = D.conv_backward_weight(x, c, d, winograd=points)
    dx = D.conv_backward_data(c, w, d, x.shape[1:], winograd=points)
    rng, h = np.random.default_rng(4), 1e-5
    for _ in range(12):
        i = tuple(int(rng.integers(0, n)) for n in w.shape)
        e = np.zeros_like(w)
        e[i] = h
        assert abs((loss(x, w + e) - loss(x, w - e)) / (2 * h) - dw[i]) < 1e-7 * (1 + abs(dw[i]))
        j = tuple(int(rng.integers(0, n)) for n in x.shape)
        e = np.zeros_like(x)
        e[j] = h
        assert abs((loss(x + e, w) - loss(x - e, w)) / (2 * h) - dx[j]) < 1e-7 * (1 + abs(dx[j]))


@pytest.mark.parametrize("points", POINTS)
def test_accumulate_and_out(points):
    x, w, g, d = _data(CASES[3], np.float64)
    base = np.full((w.shape[1],) + g.shape[1:], 0.5)
    y = D.conv_forward(x, w, d, out=base.copy(), accumulate=True, winograd=points)
    _close(y - 0.5, D.conv_forward(x, w, d), np.float64)
    dxb = np.full(x.shape, -1.0)
    dx = D.conv_backward_data(g, w, d, x.shape[1:], out=dxb, accumulate=True, winograd=points)
    assert dx is dxb
    _close(dx + 1.0, D.conv_backward_data(g, w, d, x.shape[1:]), np.float64)
    dwb = np.ones(w.shape)
    D.conv_backward_weight(x, g, d, out=dwb, accumulate=True, winograd=points)
    _close(dwb - 1.0, D.conv_backward_weight(x, g, d), np.float64)
    over = np.full((w.shape[1],) + g.shape[1:], 7.0)  # no accumulate: overwritten everywhere
    _close(D.conv_forward(x, w, d, out=over, winograd=points), D.conv_forward(x, w, d),
           np.float64)


@pytest.mark.parametrize("points", POINTS)
def test_many_small_items_and_threads_give_the_same_result(monkeypatch, points):
    """One tile row per item (ZNN_WINO_BAND=1) and 1 or 2 threads: the items are independent
    and the weight gradient's partial sums are added in a fixed order."""
    x, w, g, d = _data((3, 4, (4, 26, 21), (2, 3, 3), (1, 2, 1)), np.float32)
    ins = x.shape[1:]

    def run(nt):
        return (D.conv_forward(x, w, d, nthreads=nt, winograd=points),
                D.conv_backward_data(g, w, d, ins, nthreads=nt, winograd=points),
                D.conv_backward_weight(x, g, d, nthreads=nt, winograd=points))
    one, two = run(1), run(2)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    monkeypatch.setenv("ZNN_WINO_BAND", "1")
    for a, b in zip(run(2), one):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5 * float(np.abs(b).max()))


def test_no_maps():
    x = np.zeros((0, 1, 6, 6))
    w = np.zeros((0, 2, 1, 3, 3))
    y = D.conv_forward(x, w, 1, winograd=6)
    assert y.shape == (2, 1, 4, 4) and not y.any()
    out = np.ones((2, 1, 4, 4))
    assert (D.conv_forward(x, w, 1, out=out, accumulate=True, winograd=6) == 1).all()
    g = np.ones((2, 1, 4, 4))
    assert D.conv_backward_weight(x, g, 1, winograd=8).shape == (0, 2, 1, 3, 3)


def test_kernels_without_tiles_and_bad_points_are_refused():
    assert D.winograd_fits((1, 3, 3)) and D.winograd_fits((7, 2, 5))
    assert not D.winograd_fits((1, 1, 3)) and not D.winograd_fits((1, 3, 6))
    x = np.zeros((1, 1, 8, 8), np.float32)
    with pytest.raises(ValueError, match="kernel y and x lengths 2..5"):
        D.conv_forward(x, np.zeros((1, 1, 1, 1, 3), np.float32), 1, winograd=6)
    with pytest.raises(ValueError, match="kernel y and x lengths 2..5"):
        D.conv_backward_weight(x, np.zeros((1, 1, 8, 2), np.float32), 1, winograd=8)
    for bad in (7, True, "6"):
        with pytest.raises(ValueError, match="winograd must be 0 or one of"):
            D.conv_forward(x, np.zeros((1, 1, 1, 3, 3), np.float32), 1, winograd=bad)


_PEAK = """
import sys
import numpy as np
from znn._core import _direct as D
n, size, points, pass_, threads = 128, 386, 8, sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
x = rng.standard_normal((n, 1, size, size), dtype=np.float32)
w = rng.standard_normal((n, n, 1, 3, 3), dtype=np.float32)
g = rng.standard_normal((n, 1, size - 2, size - 2), dtype=np.float32)
out = np.full(w.shape if pass_ == "backward_weight" else
              (x.shape if pass_ == "backward_data" else g.shape), 0, np.float32)  # touched
def run(x, w, g, out):
    if pass_ == "forward":
        D.conv_forward(x, w, 1, out=out, nthreads=threads, winograd=points)
    elif pass_ == "backward_data":
        D.conv_backward_data(g, w, 1, x.shape[1:], out=out, nthreads=threads, winograd=points)
    else:
        D.conv_backward_weight(x, g, 1, out=out, nthreads=threads, winograd=points)
run(x[:, :, :20, :20].copy(), w, g[:, :, :18, :18].copy(), None)  # loads MKL's code
def kib(key):
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith(key))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # restart the peak (VmHWM) at the current resident size
before = kib("VmRSS:")
run(x, w, g, out)
grown = (kib("VmHWM:") - before) * 1024
print(grown, D.winograd_scratch_bytes(n, n, (1, size, size), (1, 3, 3), 1, points, pass_, 4,
                                      threads))
"""


@pytest.mark.parametrize("pass_", ["forward", "backward_data", "backward_weight"])
def test_scratch_estimate_matches_the_memory_the_kernels_touch(pass_):
    """Peak RSS growth of a fresh process during one call (Linux VmHWM, restarted by
    /proc/self/clear_refs) against winograd_scratch_bytes; the weight gradient's 8 partial
    sums of 128x128 transformed kernels (4.2 MB each) dominate its 42 MB."""
    import os
    import subprocess
    import sys

    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux /proc/self/clear_refs to restart the peak RSS")
    res = subprocess.run([sys.executable, "-c", _PEAK, pass_, "2"], capture_output=True,
                         text=True, check=True)
    grown, estimate = (int(v) for v in res.stdout.split())
    assert estimate > 8 << 20
    assert 0.6 * estimate <= grown <= 1.1 * estimate + (4 << 20), (grown, estimate)


def test_scratch_estimate_scales_with_threads_and_maps(monkeypatch):
    args = ((1, 200, 200), (1, 3, 3), (1, 2, 2), 6)
    one = D.winograd_scratch_bytes(48, 48, *args, "forward", 4, 1)
    two = D.winograd_scratch_bytes(48, 48, *args, "forward", 4, 2)
    assert 0 < one < two < 2 * one + 1  # per-thread tiles, one copy of the kernels
    # bands hold a fixed number of bytes: wider elements, fewer tile rows per band
    assert D.winograd_scratch_bytes(48, 48, *args, "forward", 8, 1) < 2 * one
    monkeypatch.setenv("ZNN_WINO_BAND", "3")  # the same band for both element sizes
    one = D.winograd_scratch_bytes(48, 48, *args, "forward", 4, 1)
    doubled = D.winograd_scratch_bytes(48, 48, *args, "forward", 8, 1)
    assert 0 <= 2 * one - doubled <= 8 * 200  # all but the int64 row slots double
    wide = D.winograd_scratch_bytes(48, 96, *args, "backward_weight", 4, 1)
    assert wide > D.winograd_scratch_bytes(48, 48, *args, "backward_weight", 4, 1)
    assert D.winograd_scratch_bytes(0, 48, *args, "backward_weight", 4, 2) == 0
    with pytest.raises(ValueError, match="pass_ must be one of"):
        D.winograd_scratch_bytes(2, 2, *args, "sideways")
    with pytest.raises(ValueError, match="points must be one of"):
        D.winograd_scratch_bytes(2, 2, (1, 9, 9), (1, 3, 3), 1, 0)
    with pytest.raises(ValueError, match="kernel y and x lengths 2..5"):
        D.winograd_scratch_bytes(2, 2, (1, 9, 9), (1, 1, 7), 1, 6)
    with pytest.raises(ValueError, match="larger than in_shape"):
        D.winograd_scratch_bytes(2, 2, (1, 4, 4), (1, 3, 3), 2, 6)


@pytest.mark.parametrize("pass_", ["forward", "backward_weight"])
def test_z_taps_thin_a_lone_band_for_more_items(monkeypatch, pass_):
    """A layer with z taps whose tile rows fit one band splits them into bands of at least
    32 tiles before splitting its output slices into runs (which transform the span's source
    slices again); without z taps the band stays whole.  The scratch holds one band."""
    def scratch(k, band=None):
        if band:
            monkeypatch.setenv("ZNN_WINO_BAND", str(band))
        else:
            monkeypatch.delenv("ZNN_WINO_BAND", raising=False)
        return D.winograd_scratch_bytes(4, 4, (8, 34, 34), k, 1, 6, pass_, 4, 1)
    # 32x32 outputs, 4 per tile: 8 tile rows of 8 tiles; 4 rows hold the 32 tiles
    assert scratch((3, 3, 3)) == scratch((3, 3, 3), band=4) < scratch((3, 3, 3), band=8)
    assert scratch((1, 3, 3)) == scratch((1, 3, 3), band=8)
