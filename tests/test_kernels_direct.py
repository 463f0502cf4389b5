"""Tests of znn._core._direct (direct dilated convolution) against a numpy tap-loop reference."""
import glob
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from znn._core import _build
from znn._core import _direct as D

ROOT = Path(__file__).resolve().parents[1]
TOL = {np.float32: 2e-5, np.float64: 1e-12}


# ---------------------------------------------------------------- numpy reference (float64)

def _taps(k, d):
    """Yield (kernel index (a, b, c), input offset (k-1-w)*d) for every tap."""
    for a in range(k[0]):
        for b in range(k[1]):
            for c in range(k[2]):
                yield (a, b, c), ((k[0] - 1 - a) * d[0], (k[1] - 1 - b) * d[1],
                                  (k[2] - 1 - c) * d[2])


def _window(o, out):
    return tuple(slice(oo, oo + n) for oo, n in zip(o, out))


def ref_forward(x, w, d):
    k = w.shape[2:]
    out = tuple(n - (kk - 1) * dd for n, kk, dd in zip(x.shape[1:], k, d))
    y = np.zeros((w.shape[1],) + out)
    for t, o in _taps(k, d):
        xs = x[(slice(None),) + _window(o, out)].astype(np.float64)
        y += np.tensordot(w[(slice(None), slice(None)) + t].astype(np.float64), xs, axes=(0, 0))
    return y


def ref_backward_data(g, w, d, in_shape):
    k = w.shape[2:]
    out = g.shape[1:]
    dx = np.zeros((w.shape[0],) + tuple(in_shape))
    for t, o in _taps(k, d):
        wt = w[(slice(None), slice(None)) + t].astype(np.float64)
        dx[(slice(None),) + _window(o, out)] += np.tensordot(wt, g.astype(np.float64), axes=(1, 0))
    return dx


def ref_backward_weight(x, g, d, k):
    out = g.shape[1:]
    dw = np.zeros((x.shape[0], g.shape[0]) + tuple(k))
    for t, o in _taps(k, d):
        xs = x[(slice(None),) + _window(o, out)].astype(np.float64)
        dw[(slice(None), slice(None)) + t] = np.tensordot(xs, g.astype(np.float64),
                                                          axes=([1, 2, 3], [1, 2, 3]))
    return dw


def assert_close(got, ref, dtype):
    assert got.dtype == dtype
    assert got.shape == ref.shape
    scale = max(np.abs(ref).max(), 1e-30)
    err = np.abs(got.astype(np.float64) - ref).max() / scale
    assert err <= TOL[dtype], f"relative error {err:.3g} > {TOL[dtype]}"


def make(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# (n_in, n_out, in_shape, kernel, dilation)
CASES = [
    (3, 4, (1, 17, 20), (1, 3, 3), (1, 1, 1)),        # 2D, odd/even
    (2, 3, (1, 16, 16), (1, 4, 4), (1, 1, 1)),        # 2D even kernel
    (2, 2, (1, 40, 37), (1, 3, 3), (1, 16, 16)),      # 2D, dilation 16
    (3, 2, (1, 31, 30), (1, 2, 3), (1, 7, 4)),        # 2D, mixed dilation
    (2, 3, (9, 10, 11), (3, 2, 3), (1, 2, 1)),        # 3D
    (2, 2, (20, 21, 22), (3, 3, 3), (4, 3, 5)),       # 3D dilated
    (2, 3, (6, 6, 6), (2, 2, 2), (5, 5, 5)),          # 3D, output 1x1x1
    (4, 5, (5, 6, 7), (1, 1, 1), (1, 1, 1)),          # 1x1x1 kernel
    (2, 2, (34, 5, 6), (3, 1, 1), (16, 1, 1)),        # no gap columns, dilation 16 on z
    (1, 1, (7, 8, 9), (7, 8, 9), (1, 1, 1)),          # kernel = input, output 1x1x1
    (5, 1, (4, 12, 13), (2, 3, 2), (2, 2, 3)),
    (12, 3, (3, 11, 10), (2, 3, 3), (1, 2, 1)),       # > 8 input maps, small weight panel
    (1, 6, (1, 17, 20), (1, 4, 4), (1, 2, 2)),        # few inputs, more outputs: panel forward
    (2, 5, (9, 10, 11), (3, 3, 3), (1, 2, 1)),        # the same in 3D
    (12, 4, (4, 12, 13), (2, 5, 6), (1, 1, 2)),       # taps x inputs > 640: per-tap weight GEMMs
    (9, 12, (3, 8, 8), (1, 1, 1), (1, 1, 1)),         # weight panel narrower than the outputs
]


def operands(case, seed, dtype):
    """x, w and an output gradient g of a case, random."""
    n_in, n_out, ins, k, d = case
    rng = np.random.default_rng(seed)
    x = make(rng, (n_in,) + ins, dtype)
    w = make(rng, (n_in, n_out) + k, dtype)
    g = make(rng, (n_out,) + tuple(n - (kk - 1) * dd for n, kk, dd in zip(ins, k, d)), dtype)
    return rng, x, w, g


def case_id(c):
    return "in{}k{}d{}_{}to{}".format("x".join(map(str, c[2])), "x".join(map(str, c[3])),
                                       "x".join(map(str, c[4])), c[0], c[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_against_reference(case, dtype):
    n_in, n_out, ins, k, d = case
    rng = np.random.default_rng(hash(case) % 2**32)
    x = make(rng, (n_in,) + ins, dtype)
    w = make(rng, (n_in, n_out) + k, dtype)
    y = D.conv_forward(x, w, d)
    assert_close(y, ref_forward(x, w, d), dtype)
    g = make(rng, y.shape, dtype)
    assert_close(D.conv_backward_data(g, w, d, ins), ref_backward_data(g, w, d, ins), dtype)
    assert_close(D.conv_backward_weight(x, g, d), ref_backward_weight(x, g, d, k), dtype)


@pytest.mark.parametrize("chunk", ["1", "7", "64"])
@pytest.mark.parametrize("case", [CASES[i] for i in (3, 5, 8, 11, 13, 14, 15)], ids=case_id)
def test_small_chunks(case, chunk, monkeypatch):
    """Many column chunks and every tap grouping of the GEMM path (a no-op for the loops)."""
    monkeypatch.setenv("ZNN_DIRECT_CHUNK", chunk)
    _, _, ins, k, d = case
    _, x, w, g = operands(case, 7, np.float64)
    for nt in (1, 2):
        assert_close(D.conv_forward(x, w, d, nthreads=nt), ref_forward(x, w, d), np.float64)
        assert_close(D.conv_backward_data(g, w, d, ins, nthreads=nt),
                     ref_backward_data(g, w, d, ins), np.float64)
        assert_close(D.conv_backward_weight(x, g, d, nthreads=nt),
                     ref_backward_weight(x, g, d, k), np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", [CASES[i] for i in (0, 5, 7, 12, 14, 15)], ids=case_id)
def test_accumulate_and_out(case, dtype):
    _, _, ins, k, d = case
    rng, x, w, g = operands(case, 3, dtype)
    calls = [
        (lambda out, acc: D.conv_forward(x, w, d, out=out, accumulate=acc),
         ref_forward(x, w, d)),
        (lambda out, acc: D.conv_backward_data(g, w, d, ins, out=out, accumulate=acc),
         ref_backward_data(g, w, d, ins)),
        (lambda out, acc: D.conv_backward_weight(x, g, d, out=out, accumulate=acc),
         ref_backward_weight(x, g, d, k)),
    ]
    for call, ref in calls:
        base = make(rng, ref.shape, dtype)
        out = base.copy()
        assert call(out, True) is out
        assert_close(out, ref + base, dtype)
        out = base.copy()
        assert call(out, False) is out
        assert_close(out, ref, dtype)
        assert_close(call(None, True), ref, dtype)


@pytest.mark.parametrize("chunk", [None, "97"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_thread_count_does_not_change_results(dtype, chunk, monkeypatch):
    if chunk:
        monkeypatch.setenv("ZNN_DIRECT_CHUNK", chunk)
    rng = np.random.default_rng(11)
    ins, k, d = (12, 30, 33), (3, 3, 2), (2, 1, 3)
    x = make(rng, (6,) + ins, dtype)
    w = make(rng, (6, 5) + k, dtype)
    y1 = D.conv_forward(x, w, d, nthreads=1)
    g = make(rng, y1.shape, dtype)
    pairs = [(y1, D.conv_forward(x, w, d, nthreads=2)),
             (D.conv_backward_data(g, w, d, ins, nthreads=1),
              D.conv_backward_data(g, w, d, ins, nthreads=2)),
             (D.conv_backward_weight(x, g, d, nthreads=1),
              D.conv_backward_weight(x, g, d, nthreads=2))]
    for a, b in pairs:
        np.testing.assert_allclose(a, b, rtol=0, atol=8 * np.finfo(dtype).eps * np.abs(a).max())


def test_zero_maps():
    x = np.ones((0, 4, 5, 6))
    w = np.ones((0, 3, 2, 2, 2))
    y = D.conv_forward(x, w, 1)
    assert y.shape == (3, 3, 4, 5) and not y.any()
    dx = D.conv_backward_data(np.ones((3, 3, 4, 5)), w, 1, (4, 5, 6))
    assert dx.shape == (0, 4, 5, 6)
    dw = D.conv_backward_weight(x, np.ones((3, 3, 4, 5)), 1)
    assert dw.shape == (0, 3, 2, 2, 2)
    dx = D.conv_backward_data(np.ones((0, 3, 4, 5)), np.ones((2, 0, 2, 2, 2)), 1, (4, 5, 6))
    assert dx.shape == (2, 4, 5, 6) and not dx.any()


def test_flag_matches_build_flags():
    assert D.MKL_DIRECT is _build.build_flags()["ZNN_USE_MKL_DIRECT_CONV"]


# ---------------------------------------------------------------- argument errors

def _arrays(dtype=np.float32):
    x = np.zeros((2, 5, 6, 7), dtype)
    w = np.zeros((2, 3, 2, 2, 2), dtype)
    g = np.zeros((3, 4, 5, 6), dtype)
    return x, w, g


@pytest.mark.parametrize("call, exc, word", [
    (lambda x, w, g: D.conv_forward(x.astype(np.int32), w, 1), TypeError, "x"),
    (lambda x, w, g: D.conv_forward(x, w.astype(np.float64), 1), TypeError, "w"),
    (lambda x, w, g: D.conv_forward(x.tolist(), w, 1), TypeError, "x"),
    (lambda x, w, g: D.conv_forward(x[:1], w, 1), ValueError, "n_in"),
    (lambda x, w, g: D.conv_forward(x[0], w, 1), ValueError, "x"),
    (lambda x, w, g: D.conv_forward(x[:, :, :, ::2], w, 1), ValueError, "contiguous"),
    (lambda x, w, g: D.conv_forward(x, w, 7), ValueError, "larger than x"),
    (lambda x, w, g: D.conv_forward(x, w, 0), ValueError, "dilation"),
    (lambda x, w, g: D.conv_forward(x, w, (1, 2)), ValueError, "dilation"),
    (lambda x, w, g: D.conv_forward(x, w, "1"), ValueError, "dilation"),
    (lambda x, w, g: D.conv_forward(x, w, 1, out=g[:2]), ValueError, "out"),
    (lambda x, w, g: D.conv_forward(x, w, 1, out=g.astype(np.float64)), TypeError, "out"),
    (lambda x, w, g: D.conv_forward(x, w, 1, out=np.asfortranarray(g)), ValueError, "out"),
    (lambda x, w, g: D.conv_backward_data(g.astype(np.float64), w, 1, (5, 6, 7)),
     TypeError, "g"),
    (lambda x, w, g: D.conv_backward_data(g[:2], w, 1, (5, 6, 7)), ValueError, "n_out"),
    (lambda x, w, g: D.conv_backward_data(g, w, 1, (5, 6, 8)), ValueError, "in_shape"),
    (lambda x, w, g: D.conv_backward_data(g, w, 1, (5, 6)), ValueError, "in_shape"),
    (lambda x, w, g: D.conv_backward_data(g, w, 7, (5, 6, 7)), ValueError, "larger than"),
    (lambda x, w, g: D.conv_backward_data(g.transpose(0, 2, 1, 3), w, 1, (5, 6, 7)),
     ValueError, "g must be C-contiguous"),
    (lambda x, w, g: D.conv_backward_data(g, w, 1, (5, 6, 7), out=x[:, :4]), ValueError, "out"),
    (lambda x, w, g: D.conv_backward_weight(x, g.astype(np.float64), 1), TypeError, "g"),
    (lambda x, w, g: D.conv_backward_weight(x, g, 2), ValueError, "dilation"),
    (lambda x, w, g: D.conv_backward_weight(g, x, 1), ValueError, "g spatial shape"),
    (lambda x, w, g: D.conv_backward_weight(x, g, 1, out=w[:, :2]), ValueError, "out"),
])
def test_bad_arguments(call, exc, word):
    x, w, g = _arrays()
    with pytest.raises(exc, match=word):
        call(x, w, g)


def test_out_must_not_overlap_inputs():
    buf = np.zeros(2 * 5 * 6 * 7 + 3 * 4 * 5 * 6, np.float32)
    x = buf[:2 * 5 * 6 * 7].reshape(2, 5, 6, 7)
    w = np.zeros((2, 2, 2, 2, 2), np.float32)
    with pytest.raises(ValueError, match="overlap x"):
        D.conv_forward(x, w, 1, out=buf[:240].reshape(2, 4, 5, 6))
    y = buf[-240:].reshape(2, 4, 5, 6)
    assert D.conv_forward(x, w, 1, out=y) is y  # adjacent, not overlapping


# ---------------------------------------------------------------- plain-loop build

SUBPROCESS = textwrap.dedent("""
    import importlib.util, sys
    import numpy as np
    import znn._core  # sets MKL's threading layer like every znn import
    so = sys.argv[1]
    spec = importlib.util.spec_from_file_location("znn._core._direct", so)
    D = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(D)
    data = np.load(sys.argv[2])
    res = {"flag": np.array(D.MKL_DIRECT)}
    for dt in ("f4", "f8"):
        x, w, g = (data[n].astype(dt) for n in "xwg")
        d, ins = tuple(data["d"]), x.shape[1:]
        for nt in (1, 2):
            res[f"y{dt}{nt}"] = D.conv_forward(x, w, d, nthreads=nt)
            res[f"dx{dt}{nt}"] = D.conv_backward_data(g, w, d, ins, nthreads=nt)
            res[f"dw{dt}{nt}"] = D.conv_backward_weight(x, g, d, nthreads=nt)
            # Winograd tiles: the batched GEMMs are plain loops in this build too
            res[f"wy{dt}{nt}"] = D.conv_forward(x, w, d, nthreads=nt, winograd=6)
            res[f"wdx{dt}{nt}"] = D.conv_backward_data(g, w, d, ins, nthreads=nt, winograd=8)
            res[f"wdw{dt}{nt}"] = D.conv_backward_weight(x, g, d, nthreads=nt, winograd=6)
        base = data["y"].astype(dt)
        res[f"acc{dt}"] = D.conv_forward(x, w, d, out=base.copy(), accumulate=True)
    np.savez(sys.argv[3], **res)
""")


@pytest.mark.skipif(not D.MKL_DIRECT, reason="the default build is already the plain-loop one")
def test_plain_loop_build_matches(tmp_path):
    env = dict(os.environ, ZNN_ONLY="direct", ZNN_USE_MKL_DIRECT_CONV="0")
    t0 = time.perf_counter()
    build = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(tmp_path / "lib"),
         "--build-temp", str(tmp_path / "tmp"), "--force"],
        cwd=ROOT, env=env, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    so = glob.glob(str(tmp_path / "lib" / "znn" / "_core" / "_direct*.so"))
    assert len(so) == 1
    rng = np.random.default_rng(5)
    ins, k, d = (7, 18, 17), (2, 3, 3), (3, 2, 4)
    x = rng.standard_normal((3,) + ins)
    w = rng.standard_normal((3, 4) + k)
    out = tuple(n - (kk - 1) * dd for n, kk, dd in zip(ins, k, d))
    g = rng.standard_normal((4,) + out)
    y0 = rng.standard_normal((4,) + out)
    np.savez(tmp_path / "in.npz", x=x, w=w, g=g, d=np.array(d), y=y0)
    run = subprocess.run(
        [sys.executable, "-c", SUBPROCESS, so[0], str(tmp_path / "in.npz"),
         str(tmp_path / "out.npz")],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "lib"), str(ROOT)])),
        capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    res = np.load(tmp_path / "out.npz")
    assert not bool(res["flag"])
    for dt, dtype in (("f4", np.float32), ("f8", np.float64)):
        xs, ws, gs = (a.astype(dtype) for a in (x, w, g))
        ref = {"y": D.conv_forward(xs, ws, d), "dx": D.conv_backward_data(gs, ws, d, ins),
               "dw": D.conv_backward_weight(xs, gs, d)}
        for name, expected in ref.items():
            for nt in (1, 2):
                assert_close(res[f"{name}{dt}{nt}"], expected.astype(np.float64), dtype)
                np.testing.assert_allclose(res[f"w{name}{dt}{nt}"], expected,
                                           rtol=1e-10 if dt == "f8" else 2e-4,
                                           atol=1e-10 if dt == "f8" else 2e-4)
        assert_close(res[f"acc{dt}"], ref["y"].astype(np.float64) + y0.astype(dtype), dtype)
    assert time.perf_counter() - t0 < 120


@pytest.mark.parametrize("form", ["gather", "scatter"])
@pytest.mark.parametrize("chunk", [None, "7"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_backward_data_forms(case, chunk, form, monkeypatch):
    """Both forms of the GEMM path's backward data (the gather over the input grid and the
    scatter of compact products, chosen by shape), forced, with tiny chunks, both thread
    counts, overwriting and accumulating (the loops build ignores the variable)."""
    monkeypatch.setenv("ZNN_DIRECT_BACKWARD_DATA", form)
    if chunk:
        monkeypatch.setenv("ZNN_DIRECT_CHUNK", chunk)
    _, _, ins, k, d = case
    rng, _, w, g = operands(case, 5, np.float64)
    ref = ref_backward_data(g, w, d, ins)
    base = make(rng, ref.shape, np.float64)
    for nt in (1, 2):
        assert_close(D.conv_backward_data(g, w, d, ins, nthreads=nt), ref, np.float64)
        out = base.copy()
        D.conv_backward_data(g, w, d, ins, out=out, accumulate=True, nthreads=nt)
        assert_close(out, ref + base, np.float64)


COMPACT_CASES = CASES + [
    (64, 3, (10, 14, 14), (3, 3, 3), (2, 2, 2)),  # 3 chunks of 256 points, 4-8 taps a panel
]


@pytest.mark.parametrize("form", ["0", "1"], ids=["wide", "compact"])
@pytest.mark.parametrize("chunk", [None, "7"])
@pytest.mark.parametrize("case", COMPACT_CASES, ids=case_id)
def test_forward_and_weight_forms(case, chunk, form, monkeypatch):
    """Both forms of the GEMM path's forward and weight gradient (wide runs of the input
    grid, and compact output columns gathered into tap panels, chosen by shape), forced, with
    tiny chunks (chunks that start and end inside output rows), both thread counts (the same
    result, to MKL's rounding), overwriting and accumulating (the loops build ignores the variable)."""
    monkeypatch.setenv("ZNN_DIRECT_COMPACT", form)
    if chunk:
        monkeypatch.setenv("ZNN_DIRECT_CHUNK", chunk)
    _, _, ins, k, d = case
    rng, x, w, g = operands(case, 9, np.float64)
    refs = {"y": ref_forward(x, w, d), "dw": ref_backward_weight(x, g, d, k)}
    runs = {"y": lambda **kw: D.conv_forward(x, w, d, **kw),
            "dw": lambda **kw: D.conv_backward_weight(x, g, d, **kw)}
    for name, run in runs.items():
        one = run(nthreads=1)
        assert_close(one, refs[name], np.float64)
        np.testing.assert_allclose(run(nthreads=2), one, rtol=0,
                                   atol=8 * np.finfo(np.float64).eps * np.abs(one).max())
        base = make(rng, one.shape, np.float64)
        out = base.copy()
        run(out=out, accumulate=True, nthreads=2)
        assert_close(out, refs[name] + base, np.float64)


NARROW_CASES = [  # (n_in, n_out, input shape, kernel, dilation): rows of 16 points or more
    (3, 2, (1, 9, 70), (1, 3, 3), (1, 1, 1)),      # 2 maps: one block of 64, the end by 16
    (4, 6, (2, 5, 21), (1, 2, 3), (1, 1, 2)),      # rows of 17 points: two blocks of 16
    (2, 7, (3, 6, 83), (2, 2, 5), (1, 2, 3)),      # 7 maps: blocks of 3 and 4, dilated, 3D
    (10, 10, (1, 12, 150), (1, 7, 7), (1, 1, 1)),  # srini2d's layer: blocks of 5 (48 points)
    (1, 13, (2, 5, 99), (2, 1, 4), (1, 1, 2)),     # 13 maps: 4+4+5, tail block shifted back
    (17, 1, (1, 4, 80), (1, 2, 2), (1, 3, 1)),     # one output map, many inputs
    (2, 5, (2, 7, 40), (2, 3, 3), (1, 2, 1)),      # 18 taps: weight blocks of 4/8 + 2 left
]


@pytest.mark.parametrize("narrow", ["0", "1-w16", "1-w8", "1-w4"])
@pytest.mark.parametrize("case", NARROW_CASES, ids=case_id)
def test_narrow_kernel(case, narrow, monkeypatch):
    """The register-blocked few-map kernels (float forward, backward data and weight
    gradient of the GEMM build) against the reference: off, and on with each vector width
    (16 and 8 fall back to the widest the CPU runs), overwriting and accumulating."""
    monkeypatch.setenv("ZNN_DIRECT_NARROW", narrow[0])
    if narrow != "0":
        monkeypatch.setenv("ZNN_NARROW_WIDTH", narrow.split("-w")[1])
    _, _, ins, k, d = case
    rng, x, w, g = operands(case, 9, np.float32)
    refs = [ref_forward(x, w, d), ref_backward_data(g, w, d, ins),
            ref_backward_weight(x, g, d, k)]
    for nt in (1, 2):
        got = [D.conv_forward(x, w, d, nthreads=nt),
               D.conv_backward_data(g, w, d, ins, nthreads=nt),
               D.conv_backward_weight(x, g, d, nthreads=nt)]
        for a, r in zip(got, refs):
            assert_close(a, r, np.float32)
    base = [make(rng, r.shape, np.float32) for r in refs]
    outs = [b.copy() for b in base]
    D.conv_forward(x, w, d, out=outs[0], accumulate=True)
    D.conv_backward_data(g, w, d, ins, out=outs[1], accumulate=True)
    D.conv_backward_weight(x, g, d, out=outs[2], accumulate=True)
    for o, b, r in zip(outs, base, refs):
        assert_close(o, r + b, np.float32)
