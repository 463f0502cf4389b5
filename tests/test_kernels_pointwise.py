"""Tests of znn._core._pointwise (transfer functions, sums, dropout, maxout) against numpy."""
import numpy as np
import pytest

from znn._core import _pointwise as P

DTYPES = [np.float32, np.float64]
SHAPES = [(3, 17, 19), (4, 5, 33, 29)]          # 2D and 3D map sets (C, ...)
A, B = 1.7159, 0.6666


def tol(dtype):
    return dict(rtol=2e-6, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-14)


def ref_f(code, x, a, b):
    if code == P.LINEAR:
        return a * x + b
    if code == P.RECTIFY_LINEAR:
        return np.maximum(x, 0)
    if code == P.TANH:
        return a * np.tanh(b * x)
    if code in (P.LOGISTICS, P.FORWARD_LOGISTICS):
        return 0.5 * (1 + np.tanh(0.5 * x))       # algebraically equal, independent formula
    if code == P.SOFT_SIGN:
        return x / (1 + np.abs(x))
    raise AssertionError(code)


ARGS = {P.LINEAR: (1.5, -0.25), P.RECTIFY_LINEAR: (1.0, 0.0), P.TANH: (A, B),
        P.LOGISTICS: (1.0, 0.0), P.FORWARD_LOGISTICS: (1.0, 0.0), P.SOFT_SIGN: (1.0, 0.0)}


def test_constants():
    assert (P.LINEAR, P.RECTIFY_LINEAR, P.TANH, P.LOGISTICS, P.FORWARD_LOGISTICS,
            P.SOFT_SIGN) == (0, 1, 2, 3, 4, 5)
    assert P.FUNCTIONS == {"linear": 0, "rectify_linear": 1, "tanh": 2, "logistics": 3,
                           "forward_logistics": 4, "soft_sign": 5}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(P.FUNCTIONS))
def test_transfer_forward(dtype, shape, name):
    code = P.FUNCTIONS[name]
    a, b = ARGS[code]
    rng = np.random.default_rng(code)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    bias = rng.standard_normal(shape[0]).astype(dtype)
    bias64 = bias.astype(np.float64).reshape(-1, *[1] * (len(shape) - 1))
    expect = ref_f(code, x.astype(np.float64) + bias64, a, b)
    y = x.copy()
    r = P.transfer_forward(y, bias, name, a, b)
    assert r is y
    np.testing.assert_allclose(y, expect, **tol(dtype))
    z = x.copy()
    P.transfer_forward(z, None, code, a, b)          # no bias, code instead of name
    np.testing.assert_allclose(z, ref_f(code, x.astype(np.float64), a, b), **tol(dtype))


def test_linear_default_args_are_identity():
    x = np.random.default_rng(0).standard_normal((2, 7, 9))
    y = x.copy()
    P.transfer_forward(y, None, P.LINEAR)
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_logistic_is_stable_for_large_inputs(dtype):
    x = np.array([[-1e4, -700.0, -80.0, -30.0, 0.0, 30.0, 80.0, 700.0, 1e4]], dtype=dtype)
    y = x.copy()
    P.transfer_forward(y, None, "logistics")
    assert np.all(np.isfinite(y)) and np.all((y >= 0) & (y <= 1))
    assert y[0, 4] == 0.5 and y[0, -1] == 1.0 and y[0, 0] == 0.0
    # relative accuracy in the tail: sigma(-30) = e^-30 / (1 + e^-30)
    assert y[0, 3] == pytest.approx(np.exp(-30.0) / (1 + np.exp(-30.0)), rel=1e-5)
    if dtype == np.float64:
        assert y[0, 2] == pytest.approx(np.exp(-80.0), rel=1e-12)


@pytest.mark.parametrize("name", ["linear", "rectify_linear", "tanh", "logistics", "soft_sign"])
def test_transfer_derivative_matches_finite_differences(name):
    code = P.FUNCTIONS[name]
    a, b = ARGS[code]
    rng = np.random.default_rng(10 + code)
    x = rng.uniform(-3, 3, size=(2, 6, 7, 8))
    x[np.abs(x) < 1e-3] = 0.5                         # keep away from relu's kink
    h = 1e-6
    fp, fm, y = x + h, x - h, x.copy()
    for arr in (fp, fm, y):
        P.transfer_forward(arr, None, code, a, b)
    fd = (fp - fm) / (2 * h)
    g = np.ones_like(x)
    P.transfer_backward(g, y, code, a, b)             # f' expressed through the output
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
    # the chain rule multiplies the incoming gradient
    w = rng.standard_normal(x.shape)
    gw = w.copy()
    P.transfer_backward(gw, y, name, a, b)
    np.testing.assert_allclose(gw, w * g, rtol=1e-14, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_transfer_backward_float_types(dtype):
    rng = np.random.default_rng(1)
    y = rng.uniform(-0.9, 0.9, size=(3, 4, 10, 11)).astype(dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    y64, g64 = y.astype(np.float64), g.astype(np.float64)
    expect = {
        P.LINEAR: g64 * 1.5,
        P.RECTIFY_LINEAR: np.where(y64 > 0, g64, 0),
        P.TANH: g64 * (B / A) * (A - y64) * (A + y64),
        P.LOGISTICS: g64 * y64 * (1 - y64),
        P.FORWARD_LOGISTICS: g64,
        P.SOFT_SIGN: g64 * (1 - np.abs(y64)) ** 2,
    }
    for code, e in expect.items():
        a, b = ARGS[code]
        gg = g.copy()
        assert P.transfer_backward(gg, y, code, a, b) is gg
        np.testing.assert_allclose(gg, e, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_transfer_backward_and_bias_sum(dtype):
    rng = np.random.default_rng(11)
    y = rng.uniform(-0.9, 0.9, size=(3, 5, 30, 41)).astype(dtype)  # several 4096 blocks
    g = rng.standard_normal(y.shape).astype(dtype)
    for code in ARGS:
        a, b = ARGS[code]
        sep = g.copy()
        P.transfer_backward(sep, y, code, a, b)
        want = P.channel_sum(sep)
        for n in (1, 2, 3):
            fused = g.copy()
            got = P.transfer_backward_sum(fused, y, code, a, b, nthreads=n)
            np.testing.assert_array_equal(fused, sep)   # the same gradient, bit for bit
            np.testing.assert_array_equal(got, want)    # and the same sums
        ref = sep.astype(np.float64).reshape(3, -1).sum(axis=1)
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-9)
    with pytest.raises(ValueError, match="non-zero"):
        P.transfer_backward_sum(g.copy(), y, "tanh", 0.0, 1.0)
    with pytest.raises(ValueError, match="y"):
        P.transfer_backward_sum(g.copy(), y[:1], "linear")


def test_transfer_independent_of_threads():
    x = np.random.default_rng(2).standard_normal((3, 70, 90)).astype(np.float32)
    bias = np.arange(3, dtype=np.float32)
    outs = []
    for n in (1, 2, 3):
        y = x.copy()
        P.transfer_forward(y, bias, "tanh", A, B, nthreads=n)
        outs.append(y)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(5,), (1, 3, 100, 100)])
def test_channel_sum(dtype, shape):
    g = np.random.default_rng(3).standard_normal(shape).astype(dtype)
    s = P.channel_sum(g)
    assert s.dtype == np.float64 and s.shape == (shape[0],)
    ref = g.astype(np.float64).reshape(shape[0], -1).sum(axis=1)
    np.testing.assert_allclose(s, ref, rtol=1e-12, atol=1e-10)
    np.testing.assert_array_equal(P.channel_sum(g, nthreads=1), P.channel_sum(g, nthreads=2))


def test_channel_sum_accumulates_in_double():
    g = np.full((1, 4_000_000), 0.1, dtype=np.float32)
    assert P.channel_sum(g)[0] == pytest.approx(4e5 * float(np.float32(0.1)) * 10, rel=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("keep", [0.3, 0.5, 0.9])
def test_dropout_forward_backward(dtype, keep):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 8, 40, 40)).astype(dtype)
    y, m = P.dropout_forward(x, keep, seed=1234)
    assert m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1}
    np.testing.assert_allclose(y, x * m / keep, **tol(dtype))
    n = m.size
    assert abs(m.mean() - keep) < 5 * np.sqrt(keep * (1 - keep) / n)
    g = rng.standard_normal(x.shape).astype(dtype)
    np.testing.assert_allclose(P.dropout_backward(g, m, keep), g * m / keep, **tol(dtype))


def test_dropout_mask_depends_only_on_seed():
    x = np.random.default_rng(5).standard_normal((3, 50, 60)).astype(np.float32)
    y1, m1 = P.dropout_forward(x, 0.5, seed=7, nthreads=1)
    y2, m2 = P.dropout_forward(x, 0.5, seed=7, nthreads=2)
    _, m3 = P.dropout_forward(x * 2, 0.5, seed=7, nthreads=3)
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_array_equal(m1, m3)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(P.dropout_mask(x.shape, 0.5, 7), m1)
    _, m4 = P.dropout_forward(x, 0.5, seed=8)
    assert 0.3 < np.mean(m1 != m4) < 0.7                   # other seed, independent mask
    # neighbouring elements are uncorrelated
    f = m1.reshape(-1).astype(float)
    assert abs(np.corrcoef(f[:-1], f[1:])[0, 1]) < 0.05


def test_dropout_keep_one_and_in_place():
    x = np.random.default_rng(6).standard_normal((2, 10, 10))
    y, m = P.dropout_forward(x, 1.0, seed=0)
    assert m.all()
    np.testing.assert_array_equal(y, x)
    z = x.copy()
    mask = np.empty(x.shape, np.uint8)
    r, rm = P.dropout_forward(z, 0.25, seed=3, out=z, mask=mask)
    assert r is z and rm is mask
    np.testing.assert_allclose(z, x * mask / 0.25, rtol=1e-15)


@pytest.mark.parametrize("keep", [0.0, -0.5, 1.5, float("nan")])
def test_dropout_bad_keep(keep):
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="keep"):
        P.dropout_forward(x, keep, 0)
    with pytest.raises(ValueError, match="keep"):
        P.dropout_backward(x, np.ones((2, 3), np.uint8), keep)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 2, 5])
def test_maxout_forward_backward(dtype, k):
    rng = np.random.default_rng(k)
    xs = [rng.integers(0, 3, size=(3, 6, 9, 10)).astype(dtype) for _ in range(k)]   # ties
    y, idx = P.maxout_forward(xs)
    stack = np.stack(xs)
    np.testing.assert_array_equal(y, stack.max(axis=0))
    # later array wins ties: last occurrence of the maximum
    ref_idx = k - 1 - np.argmax(stack[::-1], axis=0)
    assert idx.dtype == np.uint8
    np.testing.assert_array_equal(idx, ref_idx)
    g = rng.standard_normal(y.shape).astype(dtype)
    gs = P.maxout_backward(g, idx, k)
    assert len(gs) == k
    for j in range(k):
        np.testing.assert_array_equal(gs[j], np.where(ref_idx == j, g, 0))


def test_maxout_constant_inputs_pick_last():
    xs = [np.ones((2, 4, 4), np.float32) for _ in range(3)]
    y, idx = P.maxout_forward(xs, nthreads=2)
    assert np.all(idx == 2) and np.all(y == 1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_and_scale(dtype):
    rng = np.random.default_rng(8)
    a = rng.standard_normal((3, 7, 11)).astype(dtype)
    b = rng.standard_normal((3, 7, 11)).astype(dtype)
    d = a.copy()
    assert P.add_into(d, b) is d
    np.testing.assert_array_equal(d, a + b)
    assert P.scale_into(d, 0.5) is d
    np.testing.assert_allclose(d, (a + b) * 0.5, **tol(dtype))


def test_bad_arguments_name_the_parameter():
    x = np.zeros((2, 4, 5), np.float32)
    with pytest.raises(ValueError, match="func"):
        P.transfer_forward(x, None, "relu")
    with pytest.raises(ValueError, match="func"):
        P.transfer_forward(x, None, 6)
    with pytest.raises(ValueError, match="bias"):
        P.transfer_forward(x, np.zeros(3), "tanh")
    with pytest.raises(ValueError, match="x"):
        P.transfer_forward(np.zeros((2, 4, 10), np.float32)[:, :, ::2], None, "tanh")
    with pytest.raises(TypeError, match="x"):
        P.transfer_forward(x.astype(np.int64), None, "tanh")
    with pytest.raises(ValueError, match="a "):
        P.transfer_forward(x, None, "tanh", 0.0, 1.0)
    with pytest.raises(TypeError, match="y"):
        P.transfer_backward(x, x.astype(np.float64), "tanh")
    with pytest.raises(ValueError, match="y"):
        P.transfer_backward(x, x[:1], "tanh")
    with pytest.raises(ValueError, match="g"):
        P.transfer_backward(np.zeros((2, 4, 10), np.float32)[:, :, ::2], x, "tanh")
    with pytest.raises(TypeError, match="seed"):
        P.dropout_forward(x, 0.5, 1.5)
    with pytest.raises(TypeError, match="mask"):
        P.dropout_backward(x, np.ones(x.shape, bool), 0.5)
    with pytest.raises(ValueError, match="xs"):
        P.maxout_forward([])
    with pytest.raises(ValueError, match=r"xs\[1\]"):
        P.maxout_forward([x, x[:1]])
    with pytest.raises(TypeError, match="argidx"):
        P.maxout_backward(x, np.zeros(x.shape, np.int64), 2)
    with pytest.raises(ValueError, match="k"):
        P.maxout_backward(x, np.zeros(x.shape, np.uint8), 0)
    with pytest.raises(ValueError, match="src"):
        P.add_into(x, np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match="dst"):
        P.scale_into([1.0], 2.0)
