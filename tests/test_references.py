"""Cross-checks of the numpy and PyTorch reference evaluators against each other and hand values."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import reference_numpy as rn
import reference_torch as rt

DEFAULT_ARGS = {"linear": (1.0, 0.0), "tanh": (1.0, 1.0)}


def node(name, type, size, function=None, args=None, dense=False):
    args = DEFAULT_ARGS.get(function, ()) if args is None else args
    return SimpleNamespace(name=name, type=type, size=size, function=function, function_args=args,
                           dense=dense, line=0)


def edge(name, type, input, output, size=None, stride=(1, 1, 1), offset=None, ratio=0.5):
    return SimpleNamespace(name=name, type=type, input=input, output=output, size=size, stride=stride,
                           offset=offset, ratio=ratio, line=0)


def make_spec(nodes, edges):
    spec = SimpleNamespace(nodes={n.name: n for n in nodes}, edges={e.name: e for e in edges})
    spec.inputs = lambda: [n for n, v in spec.nodes.items() if v.type == "input"]
    spec.outputs = lambda: [n for n in spec.nodes if not any(e.input == n for e in spec.edges.values())]
    return spec


def net_3d(u2_function="forward_logistics", h2_dense=True):
    """3D net: conv, max_filter stride 2, dilated conv, dense node, crop into a two-edge sum, maxout."""
    return make_spec(
        [node("in", "input", 2), node("h1", "transfer", 3, "tanh", (1.7159, 0.6666)), node("m1", "sum", 3),
         node("h2", "transfer", 2, "rectify_linear", dense=h2_dense), node("h3", "transfer", 2, "logistics"),
         node("s", "sum", 2), node("t1", "transfer", 2, "soft_sign"),
         node("u1", "transfer", 2, "linear", (3.0, 0.5)),
         node("u2", "transfer", 2, u2_function), node("mo", "maxout", 2), node("out", "transfer", 1, "linear")],
        [edge("c1", "conv", "in", "h1", (2, 2, 2)), edge("p1", "max_filter", "h1", "m1", (2, 2, 2), (2, 2, 2)),
         edge("c2", "conv", "m1", "h2", (2, 2, 2)), edge("c3", "conv", "in", "h3", (1, 1, 1)),
         edge("k1", "crop", "h3", "s", offset=(2, 3, 3)), edge("c4", "conv", "h2", "s", (1, 3, 3)),
         edge("d1", "dummy", "s", "t1"), edge("c5", "conv", "t1", "u1", (1, 1, 1)),
         edge("r1", "dropout", "t1", "u2"), edge("x1", "maxout", "u1", "mo"), edge("x2", "maxout", "u2", "mo"),
         edge("c6", "conv", "mo", "out", (1, 2, 2))])


def net_2d():
    """2D net: conv, max_filter stride 2, strided conv, dilated max_filter, max_pool, two output nodes."""
    return make_spec(
        [node("in", "input", 1), node("h1", "transfer", 3, "rectify_linear"), node("m1", "sum", 3),
         node("h2", "transfer", 2, "soft_sign"), node("h2m", "sum", 2), node("q", "sum", 2),
         node("out", "transfer", 2, "tanh"), node("out2", "transfer", 1, "logistics")],
        [edge("c1", "conv", "in", "h1", (1, 3, 3)), edge("p1", "max_filter", "h1", "m1", (1, 2, 2), (1, 2, 2)),
         edge("c2", "conv", "m1", "h2", (1, 3, 3), (1, 2, 2)), edge("p2", "max_filter", "h2", "h2m", (1, 2, 2)),
         edge("mp", "max_pool", "h2m", "q", (1, 2, 2)),
         edge("c3", "conv", "q", "out", (1, 2, 2)), edge("c4", "conv", "q", "out2", (1, 2, 2))])


def net_n4():
    """The N4 layer chain (§1.5 worked example), geometry only."""
    layers = [("conv", 4), ("max_filter", 2), ("conv", 5), ("max_filter", 2), ("conv", 4), ("max_filter", 2),
              ("conv", 4), ("max_filter", 2), ("conv", 3), ("conv", 1)]
    nodes, edges = [node("input", "input", 1)], []
    for i, (t, k) in enumerate(layers):
        nodes.append(node(f"n{i}", "transfer" if t == "conv" else "sum", 1, "linear"))
        stride = (1, 2, 2) if t == "max_filter" else (1, 1, 1)
        edges.append(edge(f"e{i}", t, nodes[-2].name, nodes[-1].name, (1, k, k), stride))
    return make_spec(nodes, edges)


def random_inputs(spec, out_size, rng):
    sizes = rn.feature_sizes(spec, out_size)
    return {n: rng.standard_normal((spec.nodes[n].size,) + sizes[n]) for n in spec.inputs()}


def random_setup(spec, out_size, rng, bias_scale=0.1):
    """Random params and inputs; in net_3d, u1's bias is shifted so that both maxout inputs win somewhere."""
    params, inputs = rn.random_params(spec, rng, bias_scale), random_inputs(spec, out_size, rng)
    if "mo" in spec.nodes:
        v = rn.forward(spec, params, inputs, out_size)
        params["u1"] += np.median((v["u2"] - v["u1"]).reshape(2, -1), axis=1) / 3.0  # u1 = 3 * (pre + b) + 0.5
        v = rn.forward(spec, params, inputs, out_size)
        assert (v["u1"] > v["u2"]).any() and (v["u1"] < v["u2"]).any()
    return params, inputs


# ---------------------------------------------------------------------------------------------- hand values


def test_conv_is_true_convolution_dilated():
    x = np.array([1.0, 2, 3, 4, 5]).reshape(1, 1, 1, 5)
    w = np.array([1.0, 10]).reshape(1, 1, 1, 1, 2)
    np.testing.assert_array_equal(rn.conv_valid(x, w), [[[[12, 23, 34, 45]]]])  # x[p+1]*1 + x[p]*10
    np.testing.assert_array_equal(rn.conv_valid(x, w, (1, 1, 2)), [[[[13, 24, 35]]]])  # x[p+2]*1 + x[p]*10
    np.testing.assert_array_equal(rt.torch_conv(torch.tensor(x), torch.tensor(w), (1, 1, 2)).numpy(),
                                  [[[[13, 24, 35]]]])


def test_max_filter_and_pool_hand_values():
    x = np.array([3.0, 1, 4, 1, 5, 9]).reshape(1, 1, 1, 6)
    np.testing.assert_array_equal(rn.max_filter(x, (1, 1, 2), (1, 1, 2)), [[[[4, 1, 5, 9]]]])
    np.testing.assert_array_equal(rn.max_filter(x, (1, 1, 3)), [[[[4, 4, 5, 9]]]])
    np.testing.assert_array_equal(rn.max_pool(x, (1, 1, 2)), [[[[3, 4, 9]]]])
    np.testing.assert_array_equal(rn.crop(x.reshape(1, 1, 2, 3), (0, 0, 1)), [[[[1], [5]]]])


@pytest.mark.parametrize("name, args, expected", [
    ("linear", (1.0, 0.0), [-2.0, 0.0, 3.0]),
    ("linear", (2.0, 1.0), [-3.0, 1.0, 7.0]),
    ("rectify_linear", (), [0.0, 0.0, 3.0]),
    ("tanh", (2.0, 0.5), 2 * np.tanh([-1.0, 0.0, 1.5])),
    ("logistics", (), 1 / (1 + np.exp([2.0, 0.0, -3.0]))),
    ("forward_logistics", (), 1 / (1 + np.exp([2.0, 0.0, -3.0]))),
    ("soft_sign", (), [-2 / 3, 0.0, 0.75]),
])
def test_transfer_functions(name, args, expected):
    x = np.array([-2.0, 0.0, 3.0])
    np.testing.assert_allclose(rn.transfer(name, x, args), expected, rtol=1e-15)
    np.testing.assert_allclose(rt.torch_transfer(name, torch.tensor(x), args).numpy(), expected, rtol=1e-15)


def test_logistics_does_not_overflow():
    np.testing.assert_array_equal(rn.transfer("logistics", np.array([-1000.0, 1000.0])), [0.0, 1.0])
    with pytest.raises(ValueError, match="unknown transfer"):
        rn.transfer("relu", np.zeros(1))


# ---------------------------------------------------------------------------------------------- geometry


def test_geometry_3d():
    spec = net_3d()
    assert rn.topological_order(spec)[0] == "in" and rn.topological_order(spec)[-1] == "out"
    s = rn.sparsity(spec)
    assert s == {n: (2, 2, 2) if n == "m1" else (1, 1, 1) for n in spec.nodes}  # h2 is dense
    f = rn.feature_sizes(spec, (2, 2, 2))
    assert f["in"] == f["h3"] == (6, 9, 9) and f["h1"] == (5, 8, 8) and f["m1"] == (4, 7, 7)
    assert f["h2"] == (2, 5, 5) and f["s"] == f["t1"] == f["u2"] == f["mo"] == (2, 3, 3) and f["out"] == (2, 2, 2)
    fv = rn.fov(spec)  # the original's formula: (f-1)*stride+size, blind to `dense`
    assert fv["out"] == (1, 1, 1) and fv["mo"] == fv["s"] == (1, 2, 2) and fv["h2"] == (1, 4, 4)
    assert fv["m1"] == (2, 5, 5) and fv["h1"] == (4, 10, 10) and fv["in"] == (5, 11, 11)


def test_sparse_paths_that_disagree_are_rejected():
    spec = net_3d(h2_dense=False)
    assert rn.sparsity(spec)["h2"] == (2, 2, 2) and rn.sparsity(spec)["s"] == (2, 2, 2)  # first path wins
    with pytest.raises(ValueError, match="different sizes"):
        rn.feature_sizes(spec, (2, 2, 2))


def test_geometry_2d():
    spec = net_2d()
    assert rn.sparsity(spec) == {"in": (1, 1, 1), "h1": (1, 1, 1), "m1": (1, 2, 2), "h2": (1, 4, 4),
                                 "h2m": (1, 4, 4), "q": (1, 4, 4), "out": (1, 4, 4), "out2": (1, 4, 4)}
    assert rn.feature_sizes(spec, (1, 3, 3)) == {"in": (1, 25, 25), "h1": (1, 23, 23), "m1": (1, 22, 22),
                                                 "h2": (1, 18, 18), "h2m": (1, 14, 14), "q": (1, 7, 7),
                                                 "out": (1, 3, 3), "out2": (1, 3, 3)}
    fv = rn.fov(spec)
    assert fv["in"] == (1, 24, 24) and fv["h2"] == (1, 5, 5) and fv["h2m"] == (1, 4, 4) and fv["q"] == (1, 2, 2)


def test_geometry_n4_worked_example():
    spec = net_n4()
    assert rn.network_input(spec) == "input"
    assert rn.fov(spec)["input"] == (1, 95, 95)
    assert rn.feature_sizes(spec, (1, 100, 100))["input"] == (1, 194, 194)
    assert rn.sparsity(spec)["n9"] == (1, 16, 16)


# ---------------------------------------------------------------------------------------------- numpy vs torch


@pytest.mark.parametrize("make, out_size", [(net_3d, (2, 2, 2)), (net_3d, (3, 1, 2)), (net_2d, (1, 3, 3)),
                                            (net_2d, (1, 2, 4))])
def test_forward_numpy_equals_torch(make, out_size):
    spec, rng = make(), np.random.default_rng(1)
    params, inputs = random_setup(spec, out_size, rng)
    ref = rn.forward(spec, params, inputs, out_size)
    grads = {n: rng.standard_normal(ref[n].shape) for n in spec.outputs()}
    values, pg, ig = rt.torch_forward_backward(spec, params, inputs, out_size, grads)
    assert set(values) == set(ref) == set(spec.nodes)
    for n in spec.nodes:
        assert ref[n].dtype == values[n].dtype == np.float64
        np.testing.assert_allclose(values[n], ref[n], rtol=1e-12, atol=1e-12, err_msg=n)
    assert {k: v.shape for k, v in pg.items()} == {k: v.shape for k, v in params.items()}
    assert {k: v.shape for k, v in ig.items()} == {k: v.shape for k, v in inputs.items()}
    assert all(np.any(v != 0) for v in pg.values())


@pytest.mark.parametrize("d", [(1, 1, 1), (2, 1, 3)])
def test_conv_backward_matches_torch_autograd(d):
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 7, 8, 9)), rng.standard_normal((2, 3, 2, 3, 2))
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    y = rt.torch_conv(xt, wt, d)
    np.testing.assert_allclose(rn.conv_valid(x, w, d), y.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(y.shape)
    (y * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(rn.conv_backward_data(g, w, d, x.shape[1:]), xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rn.conv_backward_weight(x, g, d), wt.grad.numpy(), rtol=1e-12, atol=1e-12)
    assert rn.conv_backward_data(g, w, d, x.shape).shape == x.shape


def test_max_filter_matches_torch():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 7, 9))
    e = edge("p", "max_filter", "a", "b", (2, 3, 2), (1, 1, 1))
    got = rt.torch_edge(e, torch.tensor(x), {}, (2, 1, 3)).numpy()
    np.testing.assert_array_equal(got, rn.max_filter(x, (2, 3, 2), (2, 1, 3)))
    assert got.shape == (2, 4, 5, 6)


# ---------------------------------------------------------------------------------------------- gradients


def finite_difference(f, a, eps=1e-6, index=None):
    """Central differences of the scalar f() w.r.t. entries of a (all, or the flat indices given)."""
    g, flat = np.zeros(a.size), a.reshape(-1)
    for i in range(a.size) if index is None else index:
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        g[i] = (up - f()) / (2 * eps)
        flat[i] = old
    return g.reshape(a.shape)


def net_3d_smooth():
    """net_3d with a logistics node where forward_logistics (whose backward is not a derivative) was."""
    return net_3d("logistics")


@pytest.mark.parametrize("make, out_size", [(net_3d_smooth, (1, 1, 2)), (net_2d, (1, 1, 1))])
def test_torch_gradients_equal_finite_differences(make, out_size):
    spec, rng = make(), np.random.default_rng(4)
    params, inputs = random_setup(spec, out_size, rng, bias_scale=0.5)
    outs = rn.forward(spec, params, inputs, out_size)
    grads = {n: rng.standard_normal(outs[n].shape) for n in spec.outputs()}

    def loss():
        v = rn.forward(spec, params, inputs, out_size)
        return sum(np.sum(v[n] * g) for n, g in grads.items())

    _, pg, ig = rt.torch_forward_backward(spec, params, inputs, out_size, grads)
    for k, p in params.items():
        np.testing.assert_allclose(pg[k], finite_difference(loss, p), rtol=1e-6, atol=1e-8, err_msg=k)
    for k, x in inputs.items():
        idx = rng.choice(x.size, 40, replace=False)
        np.testing.assert_allclose(ig[k].reshape(-1)[idx], finite_difference(loss, x, index=idx).reshape(-1)[idx],
                                   rtol=1e-6, atol=1e-8, err_msg=k)


@pytest.mark.parametrize("function", ["forward_logistics", "logistics"])
def test_forward_logistics_passes_gradient_unchanged(function):
    spec = make_spec([node("in", "input", 2), node("out", "transfer", 3, function)],
                     [edge("c", "conv", "in", "out", (2, 1, 3))])
    rng = np.random.default_rng(5)
    params, inputs = rn.random_params(spec, rng), random_inputs(spec, (2, 3, 4), rng)
    g = rng.standard_normal((3, 2, 3, 4))
    values, pg, ig = rt.torch_forward_backward(spec, params, inputs, (2, 3, 4), {"out": g})
    f = values["out"]
    pre = g if function == "forward_logistics" else g * f * (1 - f)  # gradient at the pre-activation
    np.testing.assert_allclose(pg["out"], pre.sum(axis=(1, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(pg["c"], rn.conv_backward_weight(inputs["in"], pre, (1, 1, 1)), rtol=1e-12)
    np.testing.assert_allclose(ig["in"], rn.conv_backward_data(pre, params["c"], (1, 1, 1), (3, 3, 6)), rtol=1e-12)


def test_unused_parameters_get_zero_gradient_and_bad_grads_are_rejected():
    spec = net_2d()
    rng = np.random.default_rng(6)
    params, inputs = rn.random_params(spec, rng), random_inputs(spec, (1, 1, 1), rng)
    _, pg, _ = rt.torch_forward_backward(spec, params, inputs, (1, 1, 1), {"out2": np.ones((1, 1, 1, 1))})
    assert not pg["c3"].any() and not pg["out"].any() and pg["c4"].any()
    with pytest.raises(ValueError, match="output_grads"):
        rt.torch_forward_backward(spec, params, inputs, (1, 1, 1), {"out2": np.ones((2, 1, 1, 1))})
    with pytest.raises(ValueError, match="expected"):
        rn.forward(spec, params, {"in": np.zeros((1, 1, 20, 20))}, (1, 1, 1))
