"""FFT convolution kernels (znn._core._fft) against a direct numpy convolution."""
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from znn._core import _fft as F

ROOT = Path(__file__).resolve().parents[1]
TOL = {np.float32: 2e-5, np.float64: 1e-12}


# ------------------------------------------------------------ direct numpy reference

def taps(k):
    return [(a, b, c) for a in range(k[0]) for b in range(k[1]) for c in range(k[2])]


def ref_forward(x, w, d):
    """y[j, p] = sum_i sum_t x[i, p + (K-1-t)*d] * w[i, j, t] (valid, dilated, flipped)."""
    k = w.shape[2:]
    span = [(k[a] - 1) * d[a] for a in range(3)]
    os_ = [x.shape[1 + a] - span[a] for a in range(3)]
    y = np.zeros((w.shape[1], *os_), x.dtype)
    for t in taps(k):
        s = [(k[a] - 1 - t[a]) * d[a] for a in range(3)]
        xs = x[:, s[0]:s[0] + os_[0], s[1]:s[1] + os_[1], s[2]:s[2] + os_[2]]
        y += np.einsum("izyx,ij->jzyx", xs, w[:, :, t[0], t[1], t[2]])
    return y


def ref_backward_data(g, w, d, in_shape):
    k = w.shape[2:]
    dx = np.zeros((w.shape[0], *in_shape), g.dtype)
    os_ = g.shape[1:]
    for t in taps(k):
        s = [(k[a] - 1 - t[a]) * d[a] for a in range(3)]
        dx[:, s[0]:s[0] + os_[0], s[1]:s[1] + os_[1], s[2]:s[2] + os_[2]] += np.einsum(
            "jzyx,ij->izyx", g, w[:, :, t[0], t[1], t[2]])
    return dx


def ref_weight_grad(x, g, k, d):
    dw = np.zeros((x.shape[0], g.shape[0], *k), x.dtype)
    os_ = g.shape[1:]
    for t in taps(k):
        s = [(k[a] - 1 - t[a]) * d[a] for a in range(3)]
        xs = x[:, s[0]:s[0] + os_[0], s[1]:s[1] + os_[1], s[2]:s[2] + os_[2]]
        dw[:, :, t[0], t[1], t[2]] = np.einsum("izyx,jzyx->ij", xs, g)
    return dw


def close(a, b, dtype):
    scale = max(float(np.abs(b).max()), 1e-30)
    err = float(np.abs(a - b).max()) / scale
    assert err <= TOL[dtype], f"relative error {err:.3g} > {TOL[dtype]}"


# ------------------------------------------------------------ the FFT pipeline

def out_shape(n, k, d):
    return tuple(n[a] - (k[a] - 1) * d[a] for a in range(3))


def fft_forward(x, w, d, streamed=False, nthreads=0):
    n, k = x.shape[1:], w.shape[2:]
    xf = F.rfft(x, n, nthreads=nthreads)
    yf = np.empty((w.shape[1],) + xf.shape[1:], xf.dtype)
    if streamed:
        F.mac_forward_streamed(xf, w, d, n, yf, nthreads=nthreads)
    else:
        F.mac_forward(xf, F.kernel_spectra(w, d, n, nthreads=nthreads), yf, nthreads=nthreads)
    span = tuple((k[a] - 1) * d[a] for a in range(3))
    return F.irfft(yf, n, span, out_shape(n, k, d), scale=1.0 / np.prod(n), nthreads=nthreads)


def fft_backward_data(g, w, d, n, streamed=False, nthreads=0):
    k = w.shape[2:]
    span = tuple((k[a] - 1) * d[a] for a in range(3))
    gf = F.rfft(g, n, span, nthreads=nthreads)
    dxf = np.empty((w.shape[0],) + gf.shape[1:], gf.dtype)
    if streamed:
        F.mac_backward_streamed(gf, w, d, n, dxf, nthreads=nthreads)
    else:
        F.mac_backward(gf, F.kernel_spectra(w, d, n, nthreads=nthreads), dxf, nthreads=nthreads)
    return F.irfft(dxf, n, (0, 0, 0), n, scale=1.0 / np.prod(n), nthreads=nthreads)


def fft_weight_grad(x, g, k, d, nthreads=0):
    n = x.shape[1:]
    span = tuple((k[a] - 1) * d[a] for a in range(3))
    xf = F.rfft(x, n, nthreads=nthreads)
    gf = F.rfft(g, n, span, nthreads=nthreads)
    return F.weight_grad(xf, gf, n, k, d, nthreads=nthreads)


# (n_in, n_out, fft size n, kernel k, dilation d): 2D (z = 1) and 3D, odd and even sizes,
# dilations 1..16.
CASES = [
    (2, 3, (7, 9, 11), (3, 3, 3), (1, 1, 1)),
    (3, 2, (8, 10, 12), (2, 3, 3), (2, 2, 3)),
    (2, 2, (10, 10, 10), (2, 2, 2), (8, 8, 8)),
    (1, 3, (9, 6, 17), (2, 1, 2), (7, 3, 16)),
    (3, 2, (1, 15, 13), (1, 3, 3), (1, 1, 1)),
    (2, 3, (1, 16, 18), (1, 3, 4), (1, 4, 5)),
    (2, 2, (1, 20, 19), (1, 2, 2), (1, 16, 16)),
    (2, 1, (1, 17, 24), (1, 2, 3), (1, 11, 6)),
    (1, 1, (5, 6, 7), (1, 1, 1), (1, 1, 1)),
    (2, 2, (1, 1, 9), (1, 1, 3), (1, 1, 2)),
    (2, 2, (3, 1, 6), (2, 1, 2), (1, 1, 1)),
    (1, 2, (1, 5, 1), (1, 2, 1), (1, 3, 1)),
]
IDS = ["3d-odd", "3d-even-d2", "3d-d8", "3d-mixed-d16", "2d-odd", "2d-even-d4", "2d-d16",
       "2d-d11", "1x1x1", "1d", "y1", "x1"]
DTYPES = [np.float32, np.float64]


def make(case, dtype, seed=0):
    ni, no, n, k, d = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((ni, *n)).astype(dtype)
    w = rng.standard_normal((ni, no, *k)).astype(dtype)
    g = rng.standard_normal((no, *out_shape(n, k, d))).astype(dtype)
    return x, w, g


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_backward_weight_grad_match_direct(case, dtype):
    ni, no, n, k, d = case
    x, w, g = make(case, dtype)
    y = fft_forward(x, w, d)
    assert y.dtype == dtype and y.shape == g.shape
    close(y, ref_forward(x, w, d), dtype)
    dx = fft_backward_data(g, w, d, n)
    assert dx.shape == x.shape
    close(dx, ref_backward_data(g, w, d, n), dtype)
    dw = fft_weight_grad(x, g, k, d)
    assert dw.shape == w.shape and dw.dtype == dtype
    close(dw, ref_weight_grad(x, g, k, d), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [CASES[1], CASES[5], CASES[7]], ids=["3d", "2d", "2d-n_out1"])
def test_streamed_equals_cached(case, dtype):
    x, w, g = make(case, dtype, seed=1)
    n, d = case[2], case[4]
    for nt in (1, 2):
        np.testing.assert_allclose(fft_forward(x, w, d, streamed=True, nthreads=nt),
                                   fft_forward(x, w, d, nthreads=nt), rtol=0, atol=1e-6)
        np.testing.assert_allclose(fft_backward_data(g, w, d, n, streamed=True, nthreads=nt),
                                   fft_backward_data(g, w, d, n, nthreads=nt), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rfft_offset_and_irfft_window_match_numpy(dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 5, 6)).astype(dtype)
    n, off = (6, 9, 11), (1, 3, 2)
    xf = F.rfft(x, n, off)
    pad = np.zeros((3, *n))
    pad[:, 1:5, 3:8, 2:8] = x
    ref = np.fft.rfftn(pad, axes=(1, 2, 3))
    assert xf.dtype == (np.complex64 if dtype == np.float32 else np.complex128)
    close(xf, ref, dtype)
    keep = xf.copy()
    back = F.irfft(xf, n, off, x.shape[1:], scale=0.5 / np.prod(n))
    assert np.array_equal(xf, keep), "irfft modified its input"
    close(back, 0.5 * x, dtype)
    full = F.irfft(xf, n, (0, 0, 0), n)
    close(full, np.prod(n) * pad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_spectra_match_numpy(dtype):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((2, 3, 2, 3, 2)).astype(dtype)
    d, n = (3, 2, 5), (7, 8, 9)
    pad = np.zeros((2, 3, *n))
    pad[:, :, ::3, ::2, ::5][:, :, :2, :3, :2] = w
    close(F.kernel_spectra(w, d, n), np.fft.rfftn(pad, axes=(2, 3, 4)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_accumulate_flags(dtype):
    ni, no, n, k, d = CASES[1]
    x, w, g = make(CASES[1], dtype, seed=4)
    rng = np.random.default_rng(5)
    xf = F.rfft(x, n)
    gf = F.rfft(g, n, tuple((k[a] - 1) * d[a] for a in range(3)))
    wf = F.kernel_spectra(w, d, n)
    cdt = xf.dtype
    for name, src, shape, cached, streamed in [
            ("fwd", xf, (no,) + xf.shape[1:], lambda s, o, a: F.mac_forward(s, wf, o, a),
             lambda s, o, a: F.mac_forward_streamed(s, w, d, n, o, a)),
            ("bwd", gf, (ni,) + xf.shape[1:], lambda s, o, a: F.mac_backward(s, wf, o, a),
             lambda s, o, a: F.mac_backward_streamed(s, w, d, n, o, a))]:
        base = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(cdt)
        fresh = cached(src, np.full(shape, np.nan, cdt), False)  # overwritten, NaNs gone
        assert np.isfinite(fresh).all(), name
        for fn in (cached, streamed):
            acc = fn(src, base.copy(), True)
            np.testing.assert_allclose(acc, base + fresh, rtol=1e-5, atol=1e-3, err_msg=name)
    out = F.irfft(xf, n, (0, 0, 0), n, scale=1.0 / np.prod(n))
    base = rng.standard_normal(out.shape).astype(dtype)
    acc = F.irfft(xf, n, (0, 0, 0), n, out=base.copy(), scale=1.0 / np.prod(n), accumulate=True)
    close(acc, base + out, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xlen", [2, 4, 6, 7, 8, 9, 14, 17])  # X//2+1: every tail length
def test_cached_mac_matches_numpy(dtype, xlen):
    """The vector MAC kernel, whole vectors and zero-padded tails, both directions, against
    numpy; a NaN-filled output is overwritten, and accumulate adds to it."""
    ni, no = 3, 2
    rng = np.random.default_rng(xlen)
    cdt = np.complex64 if dtype == np.float32 else np.complex128
    spec = (1, 3, xlen // 2 + 1)

    def cplx(*shape):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(cdt)

    xf, gf, wf = cplx(ni, *spec), cplx(no, *spec), cplx(ni, no, *spec)
    want_y = np.einsum("i...,ij...->j...", xf.astype(np.complex128), wf)
    want_dx = np.einsum("j...,ij...->i...", gf.astype(np.complex128), wf.conj())
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12}
    for fn, src, want in [(F.mac_forward, xf, want_y), (F.mac_backward, gf, want_dx)]:
        out = fn(src, wf, np.full(want.shape, np.nan, cdt))
        np.testing.assert_allclose(out, want, **tol)
        base = cplx(*want.shape)
        np.testing.assert_allclose(fn(src, wf, base.copy(), True), base + want, **tol)


def test_thread_count_does_not_change_results():
    ni, no, n, k, d = 4, 3, (6, 10, 9), (2, 3, 2), (2, 3, 4)
    x, w, g = make((ni, no, n, k, d), np.float32, seed=6)
    span = tuple((k[a] - 1) * d[a] for a in range(3))
    xf = F.rfft(x, n, nthreads=1)
    gf = F.rfft(g, n, span, nthreads=1)
    wf = F.kernel_spectra(w, d, n, nthreads=1)
    yf = np.empty((no,) + xf.shape[1:], xf.dtype)
    w1 = w[:, :1].copy()  # one map on the output side: two threads take the chunked path
    runs = {}
    for t in (1, 2):
        runs[t] = [
            F.rfft(x, n, nthreads=t),  # 4 maps: whole rounds of per-map transforms
            F.irfft(xf, n, (1, 0, 2), (4, 9, 5), scale=0.5, nthreads=t),
            F.kernel_spectra(w, d, n, nthreads=t),
            F.mac_forward(xf, wf, yf.copy(), nthreads=t),
            F.mac_backward(gf, wf, np.empty_like(xf), nthreads=t),
            F.mac_forward_streamed(xf, w, d, n, yf.copy(), nthreads=t),
            F.mac_backward_streamed(gf, w, d, n, np.empty_like(xf), nthreads=t),
            F.mac_forward_streamed(xf, w1, d, n, yf[:1].copy(), nthreads=t),
            F.mac_backward_streamed(gf[:1], w1, d, n, np.empty_like(xf), nthreads=t),
            F.mac_backward_streamed(gf, w[:1].copy(), d, n, np.empty_like(xf[:1]), nthreads=t),
            F.weight_grad(xf, gf, n, k, d, nthreads=t),
        ]
    for i, (a, b) in enumerate(zip(runs[1], runs[2])):
        assert np.array_equal(a, b), f"result {i} depends on the thread count"
    # a single map with two threads uses one MKL-threaded transform (rounding may differ)
    np.testing.assert_allclose(F.rfft(x[:1], n, nthreads=2), xf[:1], rtol=0, atol=1e-5)


def test_batched_and_per_map_strategies_agree():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 4, 7, 6)).astype(np.float64)
    n = (6, 9, 8)
    full = rng.standard_normal((3, *n))
    res = []
    try:
        for s in (0, 1, 2):  # auto (4 maps per-map + 1 MKL-threaded), per map, MKL-threaded
            F._set_strategy(s)
            xf = F.rfft(x, n, (1, 1, 2), nthreads=2)
            ff = F.rfft(full, n, nthreads=2)
            res.append((xf, F.irfft(xf, n, (1, 1, 2), x.shape[1:], nthreads=2), ff,
                        F.irfft(ff, n, (0, 0, 0), n, nthreads=2)))
    finally:
        F._set_strategy(0)
    for r in res:
        close(r[0], res[1][0], np.float64)
        close(r[1], np.prod(n) * x, np.float64)
        close(r[2], np.fft.rfftn(full, axes=(1, 2, 3)), np.float64)
        close(r[3], np.prod(n) * full, np.float64)


def test_concurrent_python_threads():
    rng = np.random.default_rng(8)
    maps = [rng.standard_normal((3, 5, 12, 10)).astype(np.float32) for _ in range(4)]
    expect = [F.rfft(m, (5, 12, 10)) for m in maps]
    got = [None] * 4

    def work(i):
        for _ in range(20):
            got[i] = F.rfft(maps[i], (5, 12, 10), nthreads=2)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(got, expect):
        assert np.array_equal(a, b)


def test_plan_cache_and_flags():
    assert F.backend() == "mkl-dfti"
    assert isinstance(F.CACHE_FFTS, bool)
    F.rfft(np.ones((1, 3, 4, 5), np.float32), (3, 4, 5))
    assert F.plan_cache_size() >= 1
    F.clear_plan_cache()
    assert F.plan_cache_size() == 0
    close(F.rfft(np.ones((1, 3, 4, 5)), (3, 4, 5))[0, 0, 0, 0:1], np.array([60.0]), np.float64)


def test_bad_arguments_name_the_parameter():
    x = np.zeros((2, 4, 5, 6), np.float32)
    xf = F.rfft(x, (4, 5, 6))
    w = np.zeros((2, 3, 2, 2, 2), np.float32)
    wf = F.kernel_spectra(w, (1, 1, 1), (4, 5, 6))
    yf = np.zeros((3, 4, 5, 4), np.complex64)
    with pytest.raises(TypeError, match="x"):
        F.rfft(x.astype(np.int32), (4, 5, 6))
    with pytest.raises(TypeError, match="x"):
        F.rfft([[1.0]], (4, 5, 6))
    with pytest.raises(ValueError, match="x"):
        F.rfft(x[0], (4, 5, 6))
    with pytest.raises(ValueError, match="offset"):
        F.rfft(x, (4, 5, 6), (0, 1, 0))
    with pytest.raises(ValueError, match="fft_shape"):
        F.rfft(x, (4, 5))
    with pytest.raises(TypeError, match="out"):
        F.rfft(x, (4, 5, 6), out=np.zeros(xf.shape, np.complex128))
    with pytest.raises(ValueError, match="out"):
        F.rfft(x, (4, 5, 6), out=np.zeros((2, 4, 5, 3), np.complex64))
    with pytest.raises(ValueError, match="out"):
        F.rfft(x, (4, 5, 6), out=np.zeros((2, 4, 5, 8), np.complex64)[..., ::2])
    with pytest.raises(ValueError, match="xf"):
        F.irfft(xf, (4, 5, 8), (0, 0, 0), (4, 5, 8))
    with pytest.raises(ValueError, match="out_shape"):
        F.irfft(xf, (4, 5, 6), (1, 0, 0), (4, 5, 6))
    with pytest.raises(ValueError, match="accumulate"):
        F.irfft(xf, (4, 5, 6), (0, 0, 0), (4, 5, 6), accumulate=True)
    with pytest.raises(TypeError, match="xf"):
        F.irfft(x, (4, 5, 6), (0, 0, 0), (4, 5, 6))
    with pytest.raises(ValueError, match="dilation"):
        F.kernel_spectra(w, (1, 5, 1), (4, 5, 6))
    with pytest.raises(ValueError, match="dilation"):
        F.kernel_spectra(w, (0, 1, 1), (4, 5, 6))
    with pytest.raises(TypeError, match="wf"):
        F.mac_forward(xf, wf.astype(np.complex128), yf)
    with pytest.raises(ValueError, match="xf"):
        F.mac_forward(xf[:1], wf, yf)
    with pytest.raises(ValueError, match="yf"):
        F.mac_forward(xf, wf, yf[:2])
    with pytest.raises(ValueError, match="yf"):
        F.mac_forward(xf, wf, xf)
    with pytest.raises(ValueError, match="dxf"):
        F.mac_backward(yf, wf, yf)
    with pytest.raises(TypeError, match="w"):
        F.mac_forward_streamed(xf, w.astype(np.float64), (1, 1, 1), (4, 5, 6), yf)
    with pytest.raises(ValueError, match="gf"):
        F.mac_backward_streamed(xf, w, (1, 1, 1), (4, 5, 6), np.zeros_like(xf))
    with pytest.raises(TypeError, match="gf"):
        F.weight_grad(xf, yf.astype(np.complex128), (4, 5, 6), (2, 2, 2), (1, 1, 1))
    with pytest.raises(ValueError, match="ksize"):
        F.weight_grad(xf, yf, (4, 5, 6), (2, 2), (1, 1, 1))


# ------------------------------------------------------------ the FFTW3-interface build

FFTW_PROBE = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from znn._core import _fft as F
    assert F.__file__.startswith(sys.argv[1]), F.__file__
    data = dict(np.load(sys.argv[2]))
    n, k, d = (6, 9, 10), (2, 3, 3), (2, 2, 3)
    span = tuple((k[a] - 1) * d[a] for a in range(3))
    out = {}
    for tag in ("s", "d"):
        x, w, g = data["x" + tag], data["w" + tag], data["g" + tag]
        xf = F.rfft(x, n)
        wf = F.kernel_spectra(w, d, n)
        yf = F.mac_forward(xf, wf, np.empty((w.shape[1],) + xf.shape[1:], xf.dtype))
        out["y" + tag] = F.irfft(yf, n, span, g.shape[1:], scale=1 / np.prod(n))
        gf = F.rfft(g, n, span)
        dxf = F.mac_backward_streamed(gf, w, d, n, np.empty_like(xf))
        keep = dxf.copy()
        out["dx" + tag] = F.irfft(dxf, n, (0, 0, 0), n, scale=1 / np.prod(n))
        assert np.array_equal(dxf, keep), "irfft modified its input"
        out["dw" + tag] = F.weight_grad(xf, gf, n, k, d)
    np.savez(sys.argv[3], backend=F.backend(), cache=F.CACHE_FFTS, **out)
""")


@pytest.mark.slow
def test_fftw3_interface_build_matches_default(tmp_path):
    """Build with ZNN_USE_MKL_NATIVE_FFT=0 ZNN_USE_MKL_FFT=1 (and ZNN_DONT_CACHE_FFTS=1)."""
    src, lib = tmp_path / "src", tmp_path / "lib"
    core = src / "znn" / "_core"
    (core / "src").mkdir(parents=True)
    shutil.copy(ROOT / "setup.py", src)
    for name in ("_fft.pyx", "_common.pxd"):
        shutil.copy(ROOT / "znn" / "_core" / name, core)
    for pat in ("common.*", "fft*.c", "fft*.h", "fft*.inc"):
        for f in (ROOT / "znn" / "_core" / "src").glob(pat):
            shutil.copy(f, core / "src")
    env = dict(os.environ, ZNN_ONLY="fft", ZNN_USE_MKL_NATIVE_FFT="0", ZNN_USE_MKL_FFT="1",
               ZNN_DONT_CACHE_FFTS="1")
    build = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib",
                            str(lib), "--build-temp", str(tmp_path / "tmp")],
                           cwd=src, env=env, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    for pkg in (lib / "znn", lib / "znn" / "_core"):
        (pkg / "__init__.py").touch()

    n, k, d = (6, 9, 10), (2, 3, 3), (2, 2, 3)
    rng = np.random.default_rng(9)
    data = {}
    for tag, dt in (("s", np.float32), ("d", np.float64)):
        data["x" + tag] = rng.standard_normal((2, *n)).astype(dt)
        data["w" + tag] = rng.standard_normal((2, 3, *k)).astype(dt)
        data["g" + tag] = rng.standard_normal((3, *out_shape(n, k, d))).astype(dt)
    np.savez(tmp_path / "in.npz", **data)
    probe = subprocess.run([sys.executable, "-c", FFTW_PROBE, str(lib), str(tmp_path / "in.npz"),
                            str(tmp_path / "out.npz")], cwd=tmp_path, capture_output=True,
                           text=True, env=dict(os.environ, PYTHONPATH=""))
    assert probe.returncode == 0, probe.stderr[-3000:]
    res = np.load(tmp_path / "out.npz")
    assert str(res["backend"]) == "mkl-fftw3"
    assert not bool(res["cache"])  # built with ZNN_DONT_CACHE_FFTS=1
    for tag, dt in (("s", np.float32), ("d", np.float64)):
        x, w, g = data["x" + tag], data["w" + tag], data["g" + tag]
        close(res["y" + tag], fft_forward(x, w, d), dt)
        close(res["dx" + tag], fft_backward_data(g, w, d, n), dt)
        close(res["dw" + tag], fft_weight_grad(x, g, k, d), dt)
        close(res["y" + tag], ref_forward(x, w, d), dt)
