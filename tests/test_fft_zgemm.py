"""Z-factored FFT kernels (kernel_spectra_yx, zmac_*, weight_grad_z) vs numpy and the old path."""
import numpy as np
import pytest

from znn._core import _fft as F

TOL = {np.float32: 2e-5, np.float64: 1e-10}

# (n_in, n_out, fft size n, kernel k, dilation d)
CASES = [
    (2, 3, (7, 9, 11), (3, 3, 3), (1, 1, 1)),     # odd sizes
    (3, 2, (8, 10, 12), (2, 3, 3), (2, 2, 3)),    # even sizes, dilation
    (2, 3, (9, 6, 17), (2, 1, 2), (7, 3, 16)),    # large dilations
    (3, 4, (5, 16, 18), (1, 3, 4), (1, 4, 5)),    # kz == 1 on a stack of 5 slices
    (3, 2, (1, 15, 13), (1, 3, 3), (1, 1, 1)),    # Z == 1
    (2, 3, (1, 16, 18), (1, 3, 4), (1, 4, 5)),    # Z == 1, even, dilated
    (2, 2, (4, 5, 6), (4, 5, 6), (1, 1, 1)),      # kernel as large as the FFT
    (2, 2, (3, 1, 6), (2, 1, 2), (1, 1, 1)),      # Y == 1
    (1, 2, (4, 5, 1), (2, 2, 1), (2, 3, 1)),      # X == 1
    (1, 1, (5, 6, 7), (1, 1, 1), (1, 1, 1)),
]
IDS = ["odd", "even-d", "d16", "kz1-stack", "z1", "z1-even-d", "full-kernel", "y1", "x1",
       "1x1x1"]
DTYPES = [np.float32, np.float64]
CDT = {np.float32: np.complex64, np.float64: np.complex128}


def close(a, b, dtype):
    scale = max(float(np.abs(b).max()), 1e-30)
    err = float(np.abs(a - b).max()) / scale
    assert err <= TOL[dtype], f"relative error {err:.3g} > {TOL[dtype]}"


def padded(w, d, shape):
    """w (.., kz, ky, kx) with tap t at t*d in zeros of `shape` (last three axes)."""
    k = w.shape[-3:]
    out = np.zeros(w.shape[:-3] + tuple(shape))
    out[..., :(k[0] - 1) * d[0] + 1:d[0], :(k[1] - 1) * d[1] + 1:d[1],
        :(k[2] - 1) * d[2] + 1:d[2]] = w
    return out


def ref_spectra(w, d, n):
    """Full spectra (n_in, n_out, Z, Y, X//2+1) with numpy's FFT."""
    return np.fft.rfftn(padded(w, d, n), axes=(2, 3, 4))


def ref_spectra_yx(w, d, n):
    """(Y*(X//2+1), kz*n_in, n_out), row a*n_in + i: 2D FFTs of each z tap of each kernel."""
    ni, no, kz = w.shape[:3]
    p = np.fft.rfftn(padded(w, (1,) + tuple(d[1:]), (kz,) + tuple(n[1:])), axes=(3, 4))
    return p.transpose(3, 4, 2, 0, 1).reshape(-1, kz * ni, no)  # (fy, fx, a, i, j)


def make(case, dtype, seed=0):
    ni, no, n, k, d = case
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((ni, no, *k)).astype(dtype)
    x = rng.standard_normal((ni, *n))
    g = rng.standard_normal((no, *n))
    xf = np.fft.rfftn(x, axes=(1, 2, 3)).astype(CDT[dtype])
    gf = np.fft.rfftn(g, axes=(1, 2, 3)).astype(CDT[dtype])
    return w, xf, gf


def geometry(n, k, d):
    """Planes (Z == 1) are computed with y in the role of z: (Y, 1, X), (ky, 1, kx), .."""
    if n[0] == 1:
        return (n[1], 1, n[2]), (k[1], 1, k[2]), (d[1], 1, d[2])
    return tuple(n), tuple(k), tuple(d)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_partial_spectra(case, dtype):
    ni, no, n, k, d = case
    w, _, _ = make(case, dtype)
    wyx = F.kernel_spectra_yx(w, d, n)
    n2, k2, d2 = geometry(n, k, d)
    C = n2[1] * (n2[2] // 2 + 1)
    assert wyx.shape == (C, k2[0] * ni, no) and wyx.dtype == CDT[dtype]
    w2 = w.astype(np.float64).reshape(ni, no, *k2)
    close(wyx, ref_spectra_yx(w2, d2, n2), dtype)
    # Wf[i, j, fz, c] = sum_a exp(-2 pi i fz a dz / Z) Wyx[c][a*n_in + i][j]
    tz = np.exp(-2j * np.pi * np.outer(np.arange(n2[0]), np.arange(k2[0]) * d2[0]) / n2[0])
    full = np.einsum("fa,caij->ijfc", tz, wyx.reshape(C, k2[0], ni, no).astype(np.complex128))
    wf = F.kernel_spectra(w, d, n)
    close(full.reshape(wf.shape), wf, dtype)
    close(full.reshape(wf.shape), ref_spectra(w.astype(np.float64), d, n), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_mac_and_weight_grad(case, dtype):
    ni, no, n, k, d = case
    w, xf, gf = make(case, dtype, seed=1)
    wyx = F.kernel_spectra_yx(w, d, n)
    wf_ref = ref_spectra(w.astype(np.float64), d, n)
    wf = F.kernel_spectra(w, d, n)
    yf = F.zmac_forward(xf, wyx, k, d, n, np.empty((no,) + xf.shape[1:], xf.dtype))
    close(yf, np.einsum("izyx,ijzyx->jzyx", xf, wf_ref), dtype)
    close(yf, F.mac_forward(xf, wf, np.empty_like(yf)), dtype)
    dxf = F.zmac_backward(gf, wyx, k, d, n, np.empty_like(xf))
    close(dxf, np.einsum("jzyx,ijzyx->izyx", gf, wf_ref.conj()), dtype)
    close(dxf, F.mac_backward(gf, wf, np.empty_like(dxf)), dtype)
    dw = F.weight_grad_z(xf, gf, n, k, d)
    assert dw.shape == w.shape and dw.dtype == dtype
    full = np.fft.irfftn(gf[None].astype(np.complex128) * xf[:, None].conj(), s=n,
                         axes=(2, 3, 4))
    ref = full[:, :, :(k[0] - 1) * d[0] + 1:d[0], :(k[1] - 1) * d[1] + 1:d[1],
               :(k[2] - 1) * d[2] + 1:d[2]]
    close(dw, ref, dtype)
    close(dw, F.weight_grad(xf, gf, n, k, d), dtype)


def direct_conv(x, w, d):
    """Valid dilated true convolution: y[j, p] = sum_{i,t} x[i, p + (K-1-t)*d] w[i, j, t]."""
    k = w.shape[2:]
    os_ = [x.shape[1 + a] - (k[a] - 1) * d[a] for a in range(3)]
    y = np.zeros((w.shape[1], *os_))
    for t in np.ndindex(*k):
        s = [(k[a] - 1 - t[a]) * d[a] for a in range(3)]
        xs = x[:, s[0]:s[0] + os_[0], s[1]:s[1] + os_[1], s[2]:s[2] + os_[2]]
        y += np.einsum("izyx,ij->jzyx", xs, w[(slice(None), slice(None)) + t])
    return y


def test_pipeline_matches_direct_convolution():
    ni, no, n, k, d = 3, 2, (6, 9, 8), (2, 3, 2), (3, 2, 5)
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((ni, *n)), rng.standard_normal((ni, no, *k))
    span = tuple((k[a] - 1) * d[a] for a in range(3))
    out = tuple(n[a] - span[a] for a in range(3))
    yf = F.zmac_forward(F.rfft(x, n), F.kernel_spectra_yx(w, d, n), k, d, n,
                        np.empty((no, n[0], n[1], n[2] // 2 + 1), np.complex128))
    y = F.irfft(yf, n, span, out, scale=1.0 / np.prod(n))
    close(y, direct_conv(x, w, d), np.float64)


def test_planes_use_y_as_z():
    """Z == 1: the cache is (X//2+1, ky*n_in, n_out), identical to passing (Y, 1, X) shapes."""
    ni, no, n, k, d = 3, 2, (1, 16, 18), (1, 3, 4), (1, 4, 5)
    w, xf, gf = make((ni, no, n, k, d), np.float32, seed=3)
    n2, k2, d2 = geometry(n, k, d)
    wyx = F.kernel_spectra_yx(w, d, n)
    assert wyx.shape == (n[2] // 2 + 1, k[1] * ni, no)
    assert np.array_equal(wyx, F.kernel_spectra_yx(w.reshape(ni, no, *k2), d2, n2))
    yf = F.zmac_forward(xf, wyx, k, d, n, np.empty((no,) + xf.shape[1:], xf.dtype))
    yf2 = F.zmac_forward(xf.reshape(ni, 16, 1, 10), wyx, k2, d2, n2,
                         np.empty((no, 16, 1, 10), xf.dtype))
    assert np.array_equal(yf2.reshape(yf.shape), yf)
    dw = F.weight_grad_z(xf, gf, n, k, d)
    dw2 = F.weight_grad_z(xf.reshape(ni, 16, 1, 10), gf.reshape(no, 16, 1, 10), n2, k2, d2)
    assert np.array_equal(dw2.reshape(dw.shape), dw)
    with pytest.raises(ValueError, match="wyx"):
        F.zmac_forward(xf, F.kernel_spectra_yx(w, d, (2, 16, 18)), k, d, n, yf)


@pytest.mark.parametrize("dtype", DTYPES)
def test_accumulate(dtype):
    ni, no, n, k, d = CASES[1]
    w, xf, gf = make(CASES[1], dtype, seed=4)
    wyx = F.kernel_spectra_yx(w, d, n)
    rng = np.random.default_rng(5)
    for name, fn, src, nd in [("fwd", F.zmac_forward, xf, no), ("bwd", F.zmac_backward, gf, ni)]:
        shape = (nd,) + xf.shape[1:]
        base = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(xf.dtype)
        fresh = fn(src, wyx, k, d, n, np.full(shape, np.nan, xf.dtype))
        assert np.isfinite(fresh).all(), name
        acc = fn(src, wyx, k, d, n, base.copy(), accumulate=True)
        close(acc, base + fresh, dtype)


@pytest.mark.parametrize("chunk", ["", "1", "3"])
def test_thread_count_and_work_split(monkeypatch, chunk):
    """Bit-identical for 1 and 2 threads; small work splits (many blocks / fy chunks) agree."""
    if chunk:
        monkeypatch.setenv("ZNN_ZGEMM_CHUNK", chunk)
    else:
        monkeypatch.delenv("ZNN_ZGEMM_CHUNK", raising=False)
    for case in (CASES[1], CASES[3], CASES[4]):
        ni, no, n, k, d = case
        w, xf, gf = make(case, np.float32, seed=6)
        runs = []
        for t in (1, 2):
            wyx = F.kernel_spectra_yx(w, d, n, nthreads=t)
            runs.append([
                wyx,
                F.zmac_forward(xf, wyx, k, d, n, np.empty((no,) + xf.shape[1:], xf.dtype),
                               nthreads=t),
                F.zmac_backward(gf, wyx, k, d, n, np.empty_like(xf), nthreads=t),
                F.weight_grad_z(xf, gf, n, k, d, nthreads=t)])
        for i, (a, b) in enumerate(zip(*runs)):
            assert np.array_equal(a, b), f"result {i} depends on the thread count"
        monkeypatch.delenv("ZNN_ZGEMM_CHUNK", raising=False)
        wf = F.kernel_spectra(w, d, n)
        close(runs[0][1], F.mac_forward(xf, wf, np.empty_like(runs[0][1])), np.float32)
        close(runs[0][2], F.mac_backward(gf, wf, np.empty_like(xf)), np.float32)
        close(runs[0][3], F.weight_grad(xf, gf, n, k, d), np.float32)
        if chunk:
            monkeypatch.setenv("ZNN_ZGEMM_CHUNK", chunk)


def test_empty_map_counts():
    n, k, d = (4, 5, 6), (2, 2, 2), (1, 1, 1)
    w = np.zeros((0, 3, *k), np.float32)
    wyx = F.kernel_spectra_yx(w, d, n)
    assert wyx.shape == (5 * 4, 0, 3)
    xf = np.zeros((0, 4, 5, 4), np.complex64)
    yf = F.zmac_forward(xf, wyx, k, d, n, np.full((3, 4, 5, 4), np.nan, np.complex64))
    assert not yf.any()
    assert F.weight_grad_z(xf, np.ones((3, 4, 5, 4), np.complex64), n, k, d).shape == (0, 3, *k)


def test_bad_arguments_name_the_parameter():
    n, k, d = (4, 5, 6), (2, 2, 2), (1, 1, 1)
    w = np.zeros((2, 3, *k), np.float32)
    wyx = F.kernel_spectra_yx(w, d, n)
    xf = np.zeros((2, 4, 5, 4), np.complex64)
    yf = np.zeros((3, 4, 5, 4), np.complex64)
    with pytest.raises(TypeError, match="w"):
        F.kernel_spectra_yx(w.astype(np.int32), d, n)
    with pytest.raises(ValueError, match="dilation"):
        F.kernel_spectra_yx(w, (1, 5, 1), n)
    with pytest.raises(ValueError, match="out"):
        F.kernel_spectra_yx(w, d, n, out=np.zeros((20, 4, 2), np.complex64))
    with pytest.raises(TypeError, match="wyx"):
        F.zmac_forward(xf, wyx.astype(np.complex128), k, d, n, yf)
    with pytest.raises(ValueError, match="wyx"):
        F.zmac_forward(xf, wyx, (3, 2, 2), d, n, yf)
    with pytest.raises(ValueError, match="xf"):
        F.zmac_forward(xf[:1], wyx, k, d, n, yf)
    with pytest.raises(ValueError, match="yf"):
        F.zmac_forward(xf, wyx, k, d, n, yf[:2])
    with pytest.raises(TypeError, match="yf"):
        F.zmac_forward(xf, wyx, k, d, n, None)
    with pytest.raises(ValueError, match="dxf"):
        F.zmac_backward(yf, wyx, k, d, n, np.zeros((2, 4, 5, 8), np.complex64)[..., ::2])
    with pytest.raises(ValueError, match="gf"):
        F.zmac_backward(xf, wyx, k, d, n, xf.copy())
    with pytest.raises(ValueError, match="ksize"):
        F.zmac_backward(yf, wyx, (2, 6, 2), d, n, xf.copy())
    with pytest.raises(ValueError, match="fft_shape"):
        F.zmac_forward(xf, wyx, k, d, (4, 5), yf)
    with pytest.raises(TypeError, match="gf"):
        F.weight_grad_z(xf, yf.astype(np.complex128), n, k, d)
    with pytest.raises(ValueError, match="xf"):
        F.weight_grad_z(xf, yf, (4, 6, 6), k, d)
    with pytest.raises(ValueError, match="out"):
        F.weight_grad_z(xf, yf, n, k, d, out=np.zeros((2, 3, 2, 2, 1), np.float32))


def test_concurrent_calls_and_kept_scratch():
    """Python threads at once (the kept scratch block is busy for all but one of them)."""
    import threading
    ni, no, n, k, d = CASES[1]
    w, xf, gf = make(CASES[1], np.float64, seed=7)
    wyx = F.kernel_spectra_yx(w, d, n)
    expect = (F.weight_grad_z(xf, gf, n, k, d),
              F.zmac_forward(xf, wyx, k, d, n, np.empty((no,) + xf.shape[1:], xf.dtype)))
    assert F.zgemm_scratch_bytes() > 0
    got = [None] * 4

    def work(t):
        for _ in range(10):
            got[t] = (F.weight_grad_z(xf, gf, n, k, d, nthreads=1 + t % 2),
                      F.zmac_forward(xf, wyx, k, d, n, np.empty_like(expect[1]),
                                     nthreads=1 + t % 2))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g in got:
        assert np.array_equal(g[0], expect[0]) and np.array_equal(g[1], expect[1])
    assert F.release_zgemm_scratch() > 0
    assert F.zgemm_scratch_bytes() == 0 and F.release_zgemm_scratch() == 0
    assert np.array_equal(F.weight_grad_z(xf, gf, n, k, d), expect[0])


@pytest.mark.parametrize("n,k,d", [((9, 10, 11), (3, 2, 4), (2, 3, 1)),
                                   ((1, 12, 10), (1, 3, 3), (1, 2, 1)),
                                   ((6, 8, 8), (1, 3, 3), (1, 1, 2)),
                                   ((7, 9, 9), (7, 9, 3), (1, 1, 2))])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("chunk", ["", "1", "3"])
def test_compact_spectra_give_the_same_macs(n, k, d, dtype, chunk, monkeypatch):
    """compact=True keeps only the x stage; the MACs apply the y stage per block in cache."""
    monkeypatch.setenv("ZNN_ZGEMM_CHUNK", chunk)
    rng = np.random.default_rng(7)
    ni, no = 3, 4
    w = rng.standard_normal((ni, no) + k).astype(dtype)
    xf = F.rfft(rng.standard_normal((ni,) + n).astype(dtype), n)
    gf = F.rfft(rng.standard_normal((no,) + n).astype(dtype), n)
    full = F.kernel_spectra_yx(w, d, n)
    comp = F.kernel_spectra_yx(w, d, n, compact=True)
    xh = n[2] // 2 + 1
    assert comp.shape == ((xh, k[1] * ni, no) if n[0] == 1 else (k[1] * xh, k[0] * ni, no))
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)
    for nt in (1, 2):
        y1 = F.zmac_forward(xf, full, k, d, n, np.empty((no,) + xf.shape[1:], xf.dtype))
        y2 = F.zmac_forward(xf, comp, k, d, n, np.ones((no,) + xf.shape[1:], xf.dtype),
                            compact=True, nthreads=nt)
        scale = np.abs(y1).max()
        np.testing.assert_allclose(y2 / scale, y1 / scale, **tol)
        b1 = F.zmac_backward(gf, full, k, d, n, np.empty_like(xf))
        b2 = F.zmac_backward(gf, comp, k, d, n, np.full_like(xf, 2), accumulate=True,
                             compact=True, nthreads=nt)
        np.testing.assert_allclose((b2 - 2) / np.abs(b1).max(), b1 / np.abs(b1).max(), **tol)
    if comp.shape != full.shape:  # a compact cache passed as a full one is refused
        with pytest.raises(ValueError, match="wyx has shape"):
            F.zmac_forward(xf, comp, k, d, n, np.empty((no,) + xf.shape[1:], xf.dtype))
