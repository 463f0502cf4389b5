"""Tests of the cost functions (znn.losses) and the SGD update (znn.optim)."""
import numpy as np
import pytest

from znn.losses import (binomial_cross_entropy, check_output_function, get_loss, pixel_error,
                        softmax_loss, square_loss, square_square_loss)
from znn.optim import SGD

RNG = np.random.default_rng(42)


def numeric_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        g[i] = (f(xp) - f(xm)) / (2 * h)
    return g


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


@pytest.fixture
def data():
    props = RNG.random((2, 1, 3, 4))
    labels = (RNG.random((2, 1, 3, 4)) > 0.5).astype(float)
    mask = (RNG.random((2, 1, 3, 4)) > 0.3).astype(float)
    return props, labels, mask


def test_square_loss(data):
    p, l, m = data
    out, err, grad = square_loss(p, l)
    assert np.isclose(err, ((p - l) ** 2).sum()) and np.allclose(grad, 2 * (p - l))
    assert out is p or np.array_equal(out, p)
    out, err, grad = square_loss(p, l, m)
    assert np.isclose(err, (((p - l) * m) ** 2).sum()) and np.allclose(out, p * m)
    assert np.allclose(grad, numeric_grad(lambda q: square_loss(q, l, m)[1], p), atol=1e-6)


def test_square_square_loss():
    p = np.array([[[[0.1, 0.5, 0.95, 0.3]]]])
    l = np.array([[[[0.0, 0.0, 1.0, 1.0]]]])
    _, err, grad = square_square_loss(p, l)
    assert np.isclose(err, 0.5 ** 2 + 0.7 ** 2)
    assert np.allclose(grad, [[[[0, 1.0, 0, -1.4]]]])


def test_binomial_cross_entropy(data):
    _, l, m = data
    z = RNG.normal(size=l.shape)
    p = sigmoid(z)
    out, err, grad = binomial_cross_entropy(p, l, m)
    ref = (m * (-l * np.log(p) - (1 - l) * np.log(1 - p))).sum()
    assert np.isclose(err, ref) and out is p
    assert np.allclose(grad, (p - l) * m)
    # the gradient is dE/dz for the pre-sigmoid value (forward_logistics' derivative is 1)
    fd = numeric_grad(lambda q: binomial_cross_entropy(sigmoid(q), l, m)[1], z)
    assert np.allclose(grad, fd, atol=1e-6)


def test_bce_saturated_is_finite():
    p = np.array([[[[0.0, 1.0]]]], np.float32)
    l = np.array([[[[1.0, 0.0]]]], np.float32)
    _, err, grad = binomial_cross_entropy(p, l)
    assert np.isfinite(err) and err > 10 and grad.dtype == np.float32
    assert np.allclose(grad, [[[[-1, 1]]]])


def test_softmax_loss(data):
    _, _, m = data
    z = RNG.normal(size=(3, 2, 2, 3)) * 3
    l = np.zeros_like(z)
    hot = RNG.integers(0, 3, size=z.shape[1:])
    for c in range(3):
        l[c] = hot == c
    mask = (RNG.random((1,) + z.shape[1:]) > 0.3).astype(float)
    p, err, grad = softmax_loss(z, l, mask)
    ref_p = np.exp(z) / np.exp(z).sum(axis=0)
    assert np.allclose(p, ref_p) and np.allclose(p.sum(axis=0), 1)
    assert np.isclose(err, -(mask * l * np.log(ref_p)).sum())
    assert np.allclose(grad, (ref_p - l) * mask)
    fd = numeric_grad(lambda q: softmax_loss(q, l, mask)[1], z)
    assert np.allclose(grad, fd, atol=1e-6)


def test_softmax_large_inputs_stable():
    z = np.array([[[[1000.0, -1000.0]]], [[[0.0, 1000.0]]]], np.float32)
    l = np.array([[[[0.0, 1.0]]], [[[1.0, 0.0]]]], np.float32)
    p, err, grad = softmax_loss(z, l)
    assert np.all(np.isfinite(p)) and np.isfinite(err) and p.dtype == np.float32
    assert np.isclose(err, 1000 + 2000)
    assert np.allclose(p[:, 0, 0], [[1, 0], [0, 1]])


def test_pixel_error(data):
    p, l, m = data
    ref = ((p > 0.5) != (l > 0.5)).sum()
    assert pixel_error(p, l) == ref
    assert pixel_error(p, l, m) == ((p > 0.5) != (l > 0.5))[m > 0].sum()
    assert pixel_error(p, l, np.zeros_like(m)) == 0
    with pytest.raises(ValueError, match="shape"):
        pixel_error(p, l[:1])


def test_get_loss_and_output_function():
    assert get_loss("softmax_loss") is softmax_loss
    assert get_loss("binomial_cross_entropy") is binomial_cross_entropy
    with pytest.raises(ValueError, match="unknown cost"):
        get_loss("hinge")
    assert check_output_function("binomial_cross_entropy", "forward_logistics") is None
    msg = check_output_function("binomial_cross_entropy", "logistics")
    assert "forward_logistics" in msg and "p(1-p)" in msg
    assert "linear" in check_output_function("softmax_loss", "rectify_linear")
    assert check_output_function("softmax_loss", "linear") is None
    assert check_output_function("softmax_loss", None) is None
    assert check_output_function("square_loss", "tanh") is None
    assert check_output_function("binomial_cross_entropy", None) is not None


# ---------------------------------------------------------------------------- SGD

class FakeNet:
    def __init__(self, params, grads):
        self.params, self.grads = params, grads

    def parameters(self):
        return self.params

    def gradients(self):
        return self.grads


def make_net(dtype=np.float64):
    params = {"conv": RNG.normal(size=(2, 3, 1, 2, 2)).astype(dtype),
              "bias": RNG.normal(size=(3,)).astype(dtype)}
    grads = {k: RNG.normal(size=v.shape).astype(dtype) for k, v in params.items()}
    return FakeNet(params, grads)


def test_sgd_momentum_update_by_hand():
    net = make_net()
    w0 = {k: v.copy() for k, v in net.params.items()}
    g1 = {k: v.copy() for k, v in net.grads.items()}
    ids = {k: id(v) for k, v in net.params.items()}
    eta, mu, lam, ps = 0.1, 0.9, 0.01, 1 * 4 * 5
    opt = SGD(net, (1, 4, 5), eta=eta, momentum=mu, weight_decay=lam)
    opt.step()
    for k in w0:
        v1 = -(eta / ps) * g1[k] - eta * lam * w0[k]
        assert np.allclose(net.params[k], w0[k] + v1)
        assert id(net.params[k]) == ids[k]        # updated in place
    w1 = {k: v.copy() for k, v in net.params.items()}
    g2 = {k: RNG.normal(size=v.shape) for k, v in w0.items()}
    for k in g2:
        net.grads[k][...] = g2[k]
    opt.step()
    for k in w0:
        v1 = -(eta / ps) * g1[k] - eta * lam * w0[k]
        v2 = mu * v1 - (eta / ps) * g2[k] - eta * lam * w1[k]
        assert np.allclose(net.params[k], w1[k] + v2)
        assert np.allclose(opt.velocity[k], v2)
    assert opt.iteration == 2


def test_sgd_without_momentum():
    net = make_net(np.float32)
    w0 = {k: v.copy() for k, v in net.params.items()}
    opt = SGD(net, (2, 2, 2), eta=0.5, weight_decay=0.1)
    opt.step()
    for k in w0:
        ref = w0[k] * (1 - 0.05) - (0.5 / 8) * net.grads[k]
        assert np.allclose(net.params[k], ref, rtol=1e-6) and net.params[k].dtype == np.float32
        assert not opt.velocity[k].any()


def test_sgd_state_and_anneal():
    net = make_net()
    opt = SGD(net, (1, 3, 3), eta=0.2, momentum=0.5)
    opt.step()
    state = opt.state_dict()
    other = SGD(make_net(), (1, 3, 3))
    other.net.params = {k: v.copy() for k, v in net.params.items()}
    other.load_state_dict(state)
    assert other.eta == 0.2 and other.momentum == 0.5 and other.iteration == 1
    for k in state["velocity"]:
        assert np.array_equal(other.velocity[k], opt.velocity[k])
    state["velocity"]["conv"][...] = 7                   # a copy, not a view
    assert not np.any(opt.velocity["conv"] == 7)
    with pytest.raises(ValueError, match="shape"):
        other.load_state_dict({"velocity": {"bias": np.zeros(4)}})
    with pytest.raises(ValueError, match="no matching"):
        other.load_state_dict({"velocity": {"nope": np.zeros(4)}})
    etas = []
    for i in range(1, 8):
        opt.anneal(i, 3, 0.5)
        etas.append(opt.eta)
    assert etas == [0.2, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05]
    assert not opt.anneal(5, 0, 0.5)


def test_sgd_mismatched_gradients():
    net = make_net()
    net.grads = {"conv": net.grads["conv"]}
    with pytest.raises(ValueError, match="different names"):
        SGD(net, (1, 1, 1)).step()
