"""Tests of znn._core._pool (max filter / max pool) against independent numpy references."""
import itertools

import numpy as np
import pytest

from znn._core import _pool
from znn.errors import KernelError

DTYPES = [np.float32, np.float64]


def windows(x, size, dilation, stride=None):
    """Stack every window tap: returns (taps (T, nd) offsets, values (T, C, *out))."""
    nd = x.ndim - 1
    stride = stride or [1] * nd
    out = [(x.shape[1 + a] - (size[a] - 1) * dilation[a] - 1) // stride[a] + 1
           for a in range(nd)]
    taps, vals = [], []
    for off in itertools.product(*[range(s) for s in size]):
        sl = tuple(slice(off[a] * dilation[a], off[a] * dilation[a] + (out[a] - 1) * stride[a] + 1,
                         stride[a]) for a in range(nd))
        taps.append(off)
        vals.append(x[(slice(None),) + sl])
    return np.array(taps), np.stack(vals), out


def ref_max_filter(x, size, dilation, stride=None):
    """Values and arg-max with the separable tie rule: smallest x, then y, then z offset."""
    nd = x.ndim - 1
    stride = stride or [1] * nd
    taps, vals, out = windows(x, size, dilation, stride)
    # order taps by (x, y, z) offset so that argmax's first hit follows the rule
    order = sorted(range(len(taps)), key=lambda t: tuple(taps[t][::-1]))
    vals_o = vals[order]
    best = vals_o.argmax(axis=0)          # first occurrence among equal maxima
    y = vals.max(axis=0)
    chosen = taps[order][best]            # (C, *out, nd)
    grids = np.meshgrid(*[np.arange(o) * s for o, s in zip(out, stride)], indexing="ij")
    flat = np.zeros(y.shape, dtype=np.int64)
    for a in range(nd):
        pos = grids[a][None] + chosen[..., a] * dilation[a]
        flat = flat * x.shape[1 + a] + pos
    return y, flat


CASES = [
    # (spatial shape, size, dilation)
    ((9, 10, 11), (2, 2, 2), (1, 1, 1)),
    ((9, 12, 13), (1, 2, 2), (1, 2, 2)),
    ((8, 19, 21), (3, 2, 4), (2, 3, 1)),
    ((5, 40, 41), (1, 3, 2), (1, 8, 16)),
    ((6, 20, 35), (2, 7, 9), (1, 2, 3)),       # > naive threshold: window doubling
    ((9, 17, 20), (8, 16, 5), (1, 1, 4)),
    ((4, 5, 6), (1, 1, 1), (1, 1, 1)),
    ((33, 34), (2, 2), (16, 16)),
    ((30, 31), (5, 12), (4, 1)),
    ((12, 13), (3, 1), (2, 5)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,size,dilation", CASES)
def test_max_filter_forward_matches_reference_with_ties(dtype, shape, size, dilation):
    rng = np.random.default_rng(hash((shape, size)) % 2**32)
    x = rng.integers(0, 4, size=(3, *shape)).astype(dtype)   # many ties
    y, am = _pool.max_filter_forward(x, size, dilation)
    ry, ram = ref_max_filter(x, size, dilation)
    assert y.dtype == dtype and am.dtype == np.int64
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(am, ram)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 2, 3, 5, 8, 16])
def test_max_filter_random_values_all_dilations(dtype, d):
    rng = np.random.default_rng(d)
    x = rng.standard_normal((2, 3, 2 * d + 7, 3 * d + 5)).astype(dtype)
    size = (2, 3, 4)
    dil = (1, d, d)
    y, am = _pool.max_filter_forward(x, size, dil)
    ry, ram = ref_max_filter(x, size, dil)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(am, ram)
    flat = x.reshape(2, -1)
    np.testing.assert_array_equal(np.take_along_axis(flat, am.reshape(2, -1), 1), y.reshape(2, -1))


@pytest.mark.parametrize("size,dilation", [((2, 2, 2), (1, 1, 1)), ((3, 9, 2), (2, 1, 3))])
def test_max_filter_constant_input_picks_window_origin(size, dilation):
    x = np.full((2, 12, 14, 15), 1.5, dtype=np.float32)
    y, am = _pool.max_filter_forward(x, size, dilation)
    out = y.shape[1:]
    z, yy, xx = np.meshgrid(*[np.arange(o) for o in out], indexing="ij")
    origin = (z * 14 + yy) * 15 + xx
    assert np.all(y == 1.5)
    np.testing.assert_array_equal(am, np.broadcast_to(origin, am.shape))


def test_max_filter_tie_rule_prefers_smallest_x_then_y_then_z():
    # window 2x2x2 with the max at (1,0,0), (0,1,0), (0,0,1): the x-pass runs last, so the
    # smallest x offset wins, then the smallest y, then z
    x = np.zeros((1, 2, 2, 2), dtype=np.float64)
    x[0, 1, 0, 0] = x[0, 0, 1, 0] = x[0, 0, 0, 1] = 5.0
    _, am = _pool.max_filter_forward(x, 2, 1)
    assert am.item() == 1 * 4 + 0 * 2 + 0        # (z=1, y=0, x=0)
    x[0, 1, 0, 0] = 0
    _, am = _pool.max_filter_forward(x, 2, 1)
    assert am.item() == 0 * 4 + 1 * 2 + 0        # (z=0, y=1, x=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels", [1, 3, 8])
def test_max_filter_independent_of_threads(dtype, channels):
    rng = np.random.default_rng(channels)
    x = rng.integers(0, 3, size=(channels, 4, 37, 29)).astype(dtype)
    results = [_pool.max_filter_forward(x, (2, 3, 9), (1, 2, 1), nthreads=n) for n in (1, 2, 3)]
    for y, am in results[1:]:
        np.testing.assert_array_equal(y, results[0][0])
        np.testing.assert_array_equal(am, results[0][1])


def test_max_filter_reuses_out_buffers_and_accepts_int_size():
    x = np.random.default_rng(1).standard_normal((2, 6, 7, 8)).astype(np.float32)
    out = np.empty((2, 5, 6, 7), np.float32)
    am = np.empty((2, 5, 6, 7), np.int64)
    y, a = _pool.max_filter_forward(x, 2, 1, out=out, argmax=am)
    assert y is out and a is am
    np.testing.assert_array_equal(y, ref_max_filter(x, (2, 2, 2), (1, 1, 1))[0])


def test_max_filter_non_contiguous_input():
    x = np.random.default_rng(2).standard_normal((3, 8, 10, 12))[:, :, :, ::2]
    y, am = _pool.max_filter_forward(x, (2, 2, 2), (1, 2, 1))
    ry, ram = ref_max_filter(np.ascontiguousarray(x), (2, 2, 2), (1, 2, 1))
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(am, ram)


def scatter_ref(g, am, in_shape):
    dx = np.zeros((in_shape[0], int(np.prod(in_shape[1:]))))
    for c in range(in_shape[0]):
        np.add.at(dx[c], am[c].ravel(), g[c].ravel())
    return dx.reshape(in_shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,size,dilation", CASES[:6])
def test_max_filter_backward_matches_scatter(dtype, shape, size, dilation):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, *shape)).astype(dtype)
    y, am = _pool.max_filter_forward(x, size, dilation)
    g = rng.standard_normal(y.shape).astype(dtype)
    dx = _pool.max_filter_backward(g, am, x.shape)
    assert dx.dtype == dtype and dx.shape == x.shape
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(dx, scatter_ref(g, am, x.shape), rtol=tol, atol=tol)
    # accumulate into an existing buffer
    base = rng.standard_normal(x.shape).astype(dtype)
    acc = base.copy()
    r = _pool.max_filter_backward(g, am, x.shape, out=acc, accumulate=True)
    assert r is acc
    np.testing.assert_allclose(acc, base + dx, rtol=tol, atol=tol)
    over = base.copy()
    _pool.max_filter_backward(g, am, x.shape, out=over, accumulate=False)
    np.testing.assert_allclose(over, dx, rtol=tol, atol=tol)


@pytest.mark.parametrize("shape,size,dilation", [((5, 9, 10), (2, 3, 2), (2, 1, 3)),
                                                 ((11, 12), (3, 2), (2, 4)),
                                                 ((4, 9, 30), (1, 2, 9), (1, 3, 1))])
def test_max_filter_backward_finite_differences(shape, size, dilation):
    rng = np.random.default_rng(3)
    x = rng.permutation(np.prod((2, *shape))).reshape((2, *shape)).astype(np.float64) * 0.1
    y, am = _pool.max_filter_forward(x, size, dilation)
    w = rng.standard_normal(y.shape)
    dx = _pool.max_filter_backward(w, am, x.shape)
    eps = 1e-3   # smaller than half the gap between distinct values: no switching
    flat = x.reshape(-1)
    for i in rng.choice(flat.size, 40, replace=False):
        xp, xm = flat.copy(), flat.copy()
        xp[i] += eps
        xm[i] -= eps
        lp = (w * _pool.max_filter_forward(xp.reshape(x.shape), size, dilation)[0]).sum()
        lm = (w * _pool.max_filter_forward(xm.reshape(x.shape), size, dilation)[0]).sum()
        assert dx.reshape(-1)[i] == pytest.approx((lp - lm) / (2 * eps), abs=1e-8)


def test_max_filter_backward_independent_of_threads():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 6, 20, 20)).astype(np.float32)
    y, am = _pool.max_filter_forward(x, (2, 3, 3), (1, 2, 2))
    g = rng.standard_normal(y.shape).astype(np.float32)
    a = _pool.max_filter_backward(g, am, x.shape, nthreads=1)
    b = _pool.max_filter_backward(g, am, x.shape, nthreads=2)
    np.testing.assert_array_equal(a, b)


RECOMPUTE_CASES = [
    # (spatial shape, size, dilation): rows of >= 256 outputs run row by row, shorter rows
    # are joined into runs of up to 2048 plane positions (several runs for the larger planes)
    ((9, 10, 11), (2, 2, 2), (1, 1, 1)),
    ((9, 12, 13), (1, 2, 2), (1, 2, 2)),
    ((6, 20, 25), (2, 1, 4), (2, 3, 1)),
    ((1, 50, 60), (1, 2, 2), (1, 1, 3)),       # 2 runs of the joined rows
    ((3, 40, 70), (2, 2, 2), (1, 4, 2)),       # 2 runs per slab, windows across slabs
    ((1, 7, 300), (1, 2, 2), (1, 2, 8)),       # rows of 284 outputs
    ((33, 34), (2, 2), (16, 16)),
    ((12, 13), (3, 1), (2, 5)),
    ((4, 5, 6), (1, 1, 1), (1, 1, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,size,dilation", RECOMPUTE_CASES)
def test_max_filter_backward_recompute_routes_like_the_tie_rule(dtype, shape, size, dilation):
    """Without an arg-max: the same dx as the numpy reference's arg-max scatter, exactly
    (inputs with many ties; integer gradients, so the order of additions cannot matter)."""
    rng = np.random.default_rng(11)
    x = rng.integers(0, 3, (3, *shape)).astype(dtype)
    y, ref_am = ref_max_filter(x.astype(np.float64), size, dilation)
    g = rng.integers(-3, 4, y.shape).astype(dtype)
    want = scatter_ref(g, ref_am, x.shape)
    assert _pool.max_filter_recomputes(size)
    for threads in (1, 2):
        dx = _pool.max_filter_backward_recompute(x, g, size, dilation, nthreads=threads)
        assert dx.dtype == dtype and dx.shape == x.shape
        np.testing.assert_array_equal(dx, want)
    base = rng.integers(-5, 5, x.shape).astype(dtype)
    acc = base.copy()
    r = _pool.max_filter_backward_recompute(x, g, size, dilation, out=acc, accumulate=True)
    assert r is acc
    np.testing.assert_array_equal(acc, base + want)
    over = base.copy()
    _pool.max_filter_backward_recompute(x, g, size, dilation, out=over)
    np.testing.assert_array_equal(over, want)


def test_max_filter_backward_recompute_random_values_match_the_argmax_path():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((4, 3, 70, 90)).astype(np.float32)
    y, am = _pool.max_filter_forward(x, (2, 2, 2), (1, 2, 3))
    g = rng.standard_normal(y.shape).astype(np.float32)
    a = _pool.max_filter_backward(g, am, x.shape)
    b = _pool.max_filter_backward_recompute(x, g, (2, 2, 2), (1, 2, 3), nthreads=2)
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(b, _pool.max_filter_backward_recompute(
        x, g, (2, 2, 2), (1, 2, 3), nthreads=1))


def test_max_filter_backward_recompute_nan_maximum_passes_no_gradient():
    x = np.array([[[[np.nan, 1.0, 2.0], [0.0, 3.0, 1.0]]]], np.float32)  # (1, 1, 2, 3)
    g = np.ones((1, 1, 1, 2), np.float32)
    dx = _pool.max_filter_backward_recompute(x, g, (1, 2, 2), 1)
    # window 0 starts at the NaN: its maximum is NaN, no tap holds it; window 1's max is 3.0
    np.testing.assert_array_equal(dx, [[[[0, 0, 0], [0, 1, 0]]]])


def test_max_filter_backward_recompute_bad_arguments():
    x = np.zeros((2, 6, 7, 8), np.float32)
    g = np.zeros((2, 5, 6, 7), np.float32)
    assert not _pool.max_filter_recomputes((3, 3, 1)) and _pool.max_filter_recomputes((2, 2, 2))
    with pytest.raises(ValueError, match="size .* 9 taps"):
        _pool.max_filter_backward_recompute(x, np.zeros((2, 4, 5, 8), np.float32), (3, 3, 1))
    with pytest.raises(ValueError, match="g must have the output shape"):
        _pool.max_filter_backward_recompute(x, g[:, :-1], 2)
    with pytest.raises(TypeError, match="g must have x's dtype"):
        _pool.max_filter_backward_recompute(x, g.astype(np.float64), 2)
    with pytest.raises(ValueError, match="out"):
        _pool.max_filter_backward_recompute(x, g, 2, out=x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,size", [((8, 12, 10), (2, 2, 2)), ((6, 12, 10), (1, 3, 5)),
                                        ((12, 10), (4, 2)), ((3, 4, 5), (3, 4, 5))])
def test_max_pool_forward_backward(dtype, shape, size):
    rng = np.random.default_rng(5)
    x = rng.integers(0, 3, size=(3, *shape)).astype(dtype)
    y, am = _pool.max_pool_forward(x, size)
    ry, ram = ref_max_filter(x, size, [1] * len(size), stride=list(size))
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(am, ram)
    # reshape-based value reference
    nd = len(shape)
    split = [v for s, k in zip(shape, size) for v in (s // k, k)]
    r = x.reshape(3, *split).max(axis=tuple(2 + 2 * a for a in range(nd)))
    np.testing.assert_array_equal(y, r)
    g = rng.standard_normal(y.shape).astype(dtype)
    dx = _pool.max_pool_backward(g, am, x.shape)
    np.testing.assert_array_equal(dx, scatter_ref(g, am, x.shape).astype(dtype))
    # non-overlapping: every input voxel receives at most one gradient
    assert np.count_nonzero(dx) <= y.size


def test_max_pool_equals_subsampled_max_filter():
    x = np.random.default_rng(6).integers(0, 2, size=(2, 6, 8, 9)).astype(np.float32)
    y, am = _pool.max_pool_forward(x, (2, 4, 3))
    fy, fam = _pool.max_filter_forward(x, (2, 4, 3), 1)
    np.testing.assert_array_equal(y, fy[:, ::2, ::4, ::3])
    np.testing.assert_array_equal(am, fam[:, ::2, ::4, ::3])


def test_bad_arguments_name_the_parameter():
    x = np.zeros((2, 6, 7, 8), np.float32)
    with pytest.raises(ValueError, match="size"):
        _pool.max_filter_forward(x, (0, 2, 2), 1)
    with pytest.raises(ValueError, match="size"):
        _pool.max_filter_forward(x, (2, 2), 1)
    with pytest.raises(ValueError, match="dilation"):
        _pool.max_filter_forward(x, 2, (1, 0, 1))
    with pytest.raises(ValueError, match="size/dilation"):
        _pool.max_filter_forward(x, 2, (1, 1, 8))
    with pytest.raises(TypeError, match="x"):
        _pool.max_filter_forward(x.astype(np.int32), 2, 1)
    with pytest.raises(ValueError, match="x"):
        _pool.max_filter_forward(np.zeros((5, 5), np.float32), 2, 1)
    with pytest.raises(ValueError, match="out"):
        _pool.max_filter_forward(x, 2, 1, out=np.empty((2, 5, 6, 6), np.float32))
    with pytest.raises(TypeError, match="out"):
        _pool.max_filter_forward(x, 2, 1, out=np.empty((2, 5, 6, 7), np.float64))
    with pytest.raises(TypeError, match="argmax"):
        _pool.max_filter_forward(x, 2, 1, argmax=np.empty((2, 5, 6, 7), np.int32))
    with pytest.raises(ValueError, match="out"):
        _pool.max_filter_forward(x, 1, 1, out=x)    # aliasing the input
    with pytest.raises(ValueError, match="size"):
        _pool.max_pool_forward(x, (2, 2, 2))           # 7 is not a multiple of 2
    y, am = _pool.max_filter_forward(x, 2, 1)
    with pytest.raises(ValueError, match="in_shape"):
        _pool.max_filter_backward(y, am, (3, 6, 7, 8))
    with pytest.raises(ValueError, match="argmax"):
        _pool.max_filter_backward(y, am[:, :-1], x.shape)
    with pytest.raises(TypeError, match="argmax"):
        _pool.max_filter_backward(y, am.astype(np.int32), x.shape)
    bad = am.copy()
    bad[0, 0, 0, 0] = 6 * 7 * 8
    with pytest.raises(KernelError, match="argmax"):
        _pool.max_filter_backward(y, bad, x.shape)
