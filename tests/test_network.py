"""The Network engine against the independent numpy and PyTorch references."""
from pathlib import Path

import numpy as np
import pytest

import reference_numpy as ref
import znn
from znn.formats.network_file import parse_network, read_network
from znn.net.graph import Network

NETWORKS = Path(__file__).resolve().parent.parent / "networks"


def build(text_or_name, out, **kw):
    spec = read_network(NETWORKS / text_or_name) if text_or_name.endswith(".znn") else \
        parse_network(text_or_name, "<test>")
    kw.setdefault("seed", 0)
    return Network(spec, out, **kw)


def set_params(net, params):
    for name, p in net.parameters().items():
        p[...] = params[name]


def random_inputs(net, rng):
    return {name: rng.standard_normal((net.nodes[name].n,) + net.nodes[name].size)
            for name in net.inputs}


def reference_outputs(net, params, inputs):
    values = ref.forward(net.spec, params, inputs, net.output_size)
    return {name: values[name] for name in net.outputs}


# A 3D network touching every edge type and transfer function (one-to-one edges included).
ALL_TYPES = """
nodes input
type input
size 2

edges c1
type conv
init uniform
size 2,2,2
input input
output n1

nodes n1
type transfer
function tanh
function_args 1.5,0.7
size 3

edges mf
type max_filter
size 2,2,2
stride 2,1,2
input n1
output p1

nodes p1
type sum
size 3

edges c2
type conv
init uniform
size 2,3,2
input p1
output n2

edges c2b
type conv
init uniform
size 1,1,1
input p1
output n2b

nodes n2b
type transfer
function soft_sign
size 2

edges crop
type crop
offset 1,1,1
input n2b
output n3

nodes n2
type transfer
function logistics
size 2

edges d1
type dummy
input n2
output n3

nodes n3
type sum
size 2

edges mo1
type maxout
input n3
output m

edges drop
type dropout
ratio 0.5
input n3
output nd

nodes nd
type transfer
function rectify_linear
size 2

edges mo2
type maxout
input nd
output m

nodes m
type maxout
size 2

edges c3
type conv
init uniform
size 1,2,1
input m
output output

nodes output
type transfer
function linear
function_args 0.9,0.1
size 2
"""


def test_geometry_of_bundled_networks():
    net = build("N4.znn", (1, 100, 100))
    assert net.fov == (1, 95, 95)
    assert net.input_size == (1, 194, 194)
    assert net.nodes["nconv5"].sparsity == (1, 16, 16)
    vd = build("VD2D3D.znn", (1, 20, 20))
    assert vd.fovs == {"input": (5, 85, 85), "input-r": (5, 85, 85)}
    assert vd.input_sizes["input"] == (5, 104, 104)
    assert build("zinet.znn", (2, 2, 2)).input_size == (38, 38, 38)


@pytest.mark.parametrize("mode", ["fft", "direct"])
@pytest.mark.parametrize("name,out", [("tiny2d.znn", (1, 9, 8)), ("tiny3d.znn", (3, 4, 5)),
                                      ("<all>", (2, 3, 4))])
def test_forward_matches_numpy_reference(name, out, mode):
    rng = np.random.default_rng(1)
    net = build(ALL_TYPES if name == "<all>" else name, out, dtype="float64", conv_mode=mode)
    params = ref.random_params(net.spec, rng)
    set_params(net, params)
    inputs = random_inputs(net, rng)
    got = net.forward(inputs)
    want = reference_outputs(net, params, inputs)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-11, atol=1e-12)
    # float32: the same to ~1e-5
    net32 = build(ALL_TYPES if name == "<all>" else name, out, dtype="float32", conv_mode=mode)
    set_params(net32, params)
    got32 = net32.forward(inputs)
    for k in want:
        np.testing.assert_allclose(got32[k], want[k], rtol=1e-4, atol=2e-5)


def test_n4_forward_with_fixed_weights_matches_numpy_reference():
    rng = np.random.default_rng(2)
    net = build("N4.znn", (1, 3, 4), dtype="float32", conv_mode="fft")
    params = ref.random_params(net.spec, rng)
    set_params(net, params)
    inputs = random_inputs(net, rng)
    want = reference_outputs(net, params, inputs)["output"]
    got = net.forward(inputs)["output"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    net.set_conv_mode("direct")
    np.testing.assert_allclose(net.forward(inputs)["output"], want, rtol=1e-4,
                               atol=1e-4 * np.abs(want).max())


def loss_and_grad(outputs, targets):
    """E = sum(c * y^2)/2 style quadratic with a known gradient per output node."""
    e = sum(0.5 * float(np.sum((outputs[k] - targets[k]) ** 2)) for k in outputs)
    return e, {k: outputs[k] - targets[k] for k in outputs}


@pytest.mark.parametrize("mode", ["fft", "direct"])
@pytest.mark.parametrize("name,out", [("<all>", (2, 2, 3)), ("<all, 9-tap filter>", (2, 2, 3)),
                                      ("tiny3d.znn", (2, 2, 2))])
def test_gradients_match_finite_differences(name, out, mode):
    """2x2x2 max filters train without an arg-max (recomputed), 3x3x1 ones with it."""
    rng = np.random.default_rng(3)
    text = ALL_TYPES if name.startswith("<all") else (NETWORKS / name).read_text()
    if "9-tap" in name:
        text = text.replace("size 2,2,2\nstride 2,1,2", "size 3,3,1\nstride 2,1,2")
        assert "size 3,3,1" in text
    # forward_logistics passes dE/dy through unchanged (tested separately): use logistics here
    text = text.replace("function forward_logistics", "function logistics")
    net = build(text, out, dtype="float64", conv_mode=mode)
    params = ref.random_params(net.spec, rng, bias_scale=0.3)
    set_params(net, params)
    inputs = random_inputs(net, rng)
    targets = {k: rng.standard_normal((net.nodes[k].n,) + net.output_size) for k in net.outputs}
    e0, g = loss_and_grad(net.forward(inputs), targets)
    in_grads = net.backward(g, input_grads=True)
    grads = {k: v.copy() for k, v in net.gradients().items()}
    eps = 1e-6
    for name_, p in net.parameters().items():
        flat = p.reshape(-1)
        for idx in rng.choice(flat.size, size=min(4, flat.size), replace=False):
            old = flat[idx]
            flat[idx] = old + eps
            ep = loss_and_grad(net.forward(inputs), targets)[0]
            flat[idx] = old - eps
            em = loss_and_grad(net.forward(inputs), targets)[0]
            flat[idx] = old
            fd = (ep - em) / (2 * eps)
            assert grads[name_].reshape(-1)[idx] == pytest.approx(fd, rel=1e-5, abs=1e-7), name_
    x = inputs["input"].reshape(-1)
    for idx in rng.choice(x.size, size=5, replace=False):
        old = x[idx]
        x[idx] = old + eps
        ep = loss_and_grad(net.forward(inputs), targets)[0]
        x[idx] = old - eps
        em = loss_and_grad(net.forward(inputs), targets)[0]
        x[idx] = old
        assert in_grads["input"].reshape(-1)[idx] == pytest.approx((ep - em) / (2 * eps),
                                                                   rel=1e-5, abs=1e-7)


def test_forward_logistics_passes_the_gradient_through():
    """With BCE, dE/d(pre-activation) = p - l: the network must not multiply by p(1-p)."""
    text = ALL_TYPES.replace("function linear\nfunction_args 0.9,0.1", "function forward_logistics")
    rng = np.random.default_rng(4)
    net = build(text, (1, 2, 2), dtype="float64", conv_mode="fft")
    set_params(net, ref.random_params(net.spec, rng))
    inputs = random_inputs(net, rng)
    labels = (rng.random((2, 1, 2, 2)) > 0.5).astype(float)

    def bce():
        p = net.forward(inputs)["output"]
        return -np.sum(labels * np.log(p) + (1 - labels) * np.log(1 - p)), p

    e0, p = bce()
    net.backward({"output": p - labels})
    w = net.parameters()["c3"].reshape(-1)
    g = net.gradients()["c3"].reshape(-1)[0]
    old, eps = w[0], 1e-6
    w[0] = old + eps
    ep = bce()[0]
    w[0] = old - eps
    em = bce()[0]
    w[0] = old
    assert g == pytest.approx((ep - em) / (2 * eps), rel=1e-5)


@pytest.mark.parametrize("name,out", [("N4.znn", (1, 3, 3)), ("net3d_5.znn", (2, 2, 2)),
                                      ("VD2D3D.znn", (1, 2, 2))])
def test_forward_and_gradients_match_pytorch(name, out):
    ref_torch = pytest.importorskip("reference_torch")
    rng = np.random.default_rng(5)
    net = build(name, out, dtype="float64", conv_mode="fft")
    params = ref.random_params(net.spec, rng)
    set_params(net, params)
    inputs = random_inputs(net, rng)
    got = net.forward(inputs)
    g = {k: rng.standard_normal(v.shape) for k, v in got.items()}
    values, pgrads, _ = ref_torch.torch_forward_backward(net.spec, params, inputs,
                                                          net.output_size, g)
    for k in got:
        np.testing.assert_allclose(got[k], values[k], rtol=1e-9, atol=1e-10)
    net.backward(g)
    for k, v in net.gradients().items():
        np.testing.assert_allclose(v, pgrads[k], rtol=1e-8, atol=1e-9 * max(1, np.abs(v).max()),
                                   err_msg=k)


def test_thread_count_does_not_change_results():
    rng = np.random.default_rng(6)
    outs = []
    for threads in (1, 2):
        net = build("tiny3d.znn", (3, 5, 5), dtype="float32", num_threads=threads, seed=7)
        inputs = random_inputs(net, np.random.default_rng(8))
        y = net.forward(inputs)["output"]
        net.backward({"output": np.ones_like(y)})
        outs.append((y, {k: v.copy() for k, v in net.gradients().items()}))
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-6)
    for k in outs[0][1]:
        np.testing.assert_allclose(outs[0][1][k], outs[1][1][k], rtol=1e-4, atol=1e-5)
    assert rng is not None


def test_inference_mode_frees_maps_and_matches():
    rng = np.random.default_rng(9)
    net = build("tiny2d.znn", (1, 6, 6), dtype="float64")
    inputs = random_inputs(net, rng)
    a = net.forward(inputs)["output"].copy()
    b = net.forward(inputs, keep_state=False)["output"]
    np.testing.assert_array_equal(a, b)
    assert net.nodes["nconv1"].value is None
    with pytest.raises(RuntimeError, match="forward"):
        net.backward({"output": np.zeros_like(b)})


def test_seed_makes_weights_reproducible_and_dtype_default():
    a = build("tiny2d.znn", (1, 4, 4), seed=11).parameters()
    b = build("tiny2d.znn", (1, 4, 4), seed=11).parameters()
    c = build("tiny2d.znn", (1, 4, 4), seed=12).parameters()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)
    assert a["conv1"].dtype == np.dtype(znn.kernels.default_dtype())


def test_bad_inputs_name_the_problem():
    net = build("tiny2d.znn", (1, 4, 4))
    with pytest.raises(ValueError, match=r"inputs\['input'\] has shape"):
        net.forward({"input": np.zeros((1, 1, 5, 5))})
    with pytest.raises(ValueError, match="missing"):
        net.forward({"other": np.zeros((1, 1, 11, 11))})
    with pytest.raises(ValueError, match="conv_mode"):
        net.set_conv_mode("fastest")
    with pytest.raises(ValueError, match="output_size"):
        build("tiny2d.znn", (0, 4, 4))


def test_save_and_load_round_trip(tmp_path):
    rng = np.random.default_rng(10)
    net = build("tiny3d.znn", (2, 3, 3), dtype="float64", seed=1)
    inputs = random_inputs(net, rng)
    want = net.forward(inputs)["output"]
    net.save(tmp_path / "net.h5")
    other = znn.load_network(NETWORKS / "tiny3d.znn", tmp_path / "net.h5", output_size=(2, 3, 3),
                             dtype="float64", seed=99)
    np.testing.assert_array_equal(other.forward(inputs)["output"], want)


def test_missing_layer_in_weights_is_an_error(tmp_path):
    import h5py

    net = build("tiny2d.znn", (1, 4, 4))
    net.save(tmp_path / "net.h5")
    with h5py.File(tmp_path / "net.h5", "a") as f:
        root = "/processing/znn/train/network" if "processing" in f else "/"
        del f[root.rstrip("/") + "/conv2"]
    with pytest.raises(znn.NetworkError, match="conv2"):
        znn.load_network(NETWORKS / "tiny2d.znn", tmp_path / "net.h5", output_size=(1, 4, 4))
    net2 = znn.load_network(NETWORKS / "tiny2d.znn", tmp_path / "net.h5", output_size=(1, 4, 4),
                            strict=False)
    assert net2 is not None


def test_load_0_layers_are_loaded_for_forward_and_resume_and_skipped_only_when_seeding(
        tmp_path):
    # VD2D3D marks its 3D layers `load 0`: a seed (VD2D) does not supply them, but a network
    # trained from it saves them, and `znn forward` / resuming must read them back
    text = (NETWORKS / "tiny2d.znn").read_text().replace(
        "input npool1\noutput nconv2\n", "input npool1\noutput nconv2\nload 0\n")
    net = build(text, (1, 4, 4), dtype="float64", seed=1)
    assert not net.spec.edges["conv2"].seeding
    rng = np.random.default_rng(3)
    inputs = random_inputs(net, rng)
    want = net.forward(inputs)["output"]
    net.save(tmp_path / "net.h5")
    full = build(text, (1, 4, 4), dtype="float64", seed=2)
    copied, missing, _ = full.load_weights(tmp_path / "net.h5", strict=True)
    assert "conv2" in copied and missing == []
    np.testing.assert_array_equal(full.forward(inputs)["output"], want)
    seeded = build(text, (1, 4, 4), dtype="float64", seed=2)
    own = seeded.parameters()["conv2"].copy()
    copied, missing, _ = seeded.load_weights(tmp_path / "net.h5", strict=False)
    assert missing == ["conv2"] and "conv1" in copied
    np.testing.assert_array_equal(seeded.parameters()["conv2"], own)
    np.testing.assert_array_equal(seeded.parameters()["conv1"], net.parameters()["conv1"])


@pytest.mark.parametrize("stdio,dtype", [(True, np.float32), (False, np.float64)])
def test_loads_a_network_file_written_like_the_original(tmp_path, stdio, dtype):
    """Original layout: one group per layer, kernels in Fortran order, strings, no attrs."""
    import h5py

    spec = read_network(NETWORKS / "tiny3d.znn")
    rng = np.random.default_rng(12)
    params = ref.random_params(spec, rng)
    path = tmp_path / "orig.h5"
    with h5py.File(path, "w") as f:
        root = f.create_group("/processing/znn/train/network") if stdio else f["/"]
        for e in spec.edges.values():
            g = root.create_group(e.name)
            g["group_type"] = np.bytes_(b"edge")
            g["type"] = np.bytes_(e.type.encode())
            g["size"] = np.array(e.size or (1, 1, 1), np.int64)
            if e.type == "conv":
                w = params[e.name].astype(dtype)
                stored = np.empty(w.shape, dtype)
                for i in range(w.shape[0]):
                    for j in range(w.shape[1]):
                        stored[i, j] = w[i, j].ravel(order="F").reshape(w.shape[2:])
                g["filters"] = stored
                g["momentum_vol"] = np.zeros_like(stored)
                g["fft"] = np.bytes_(b"1")
                g["eta"] = np.bytes_(b"0.00999999978")
        for n in spec.nodes.values():
            g = root.create_group(n.name)
            g["group_type"] = np.bytes_(b"node")
            g["size"] = np.array([n.size], np.int64)
            if n.type == "transfer":
                g["biases"] = params[n.name].astype(dtype)
    inputs = {"input": rng.standard_normal((1, 8, 11, 10))}
    want = ref.forward(spec, {k: v.astype(dtype).astype(float) for k, v in params.items()},
                       inputs, (2, 4, 3))["output"]
    for mode in ("fft", "direct", "file"):
        net = znn.load_network(NETWORKS / "tiny3d.znn", path, output_size=(2, 4, 3),
                               dtype="float64", conv_mode=mode)
        if mode == "file":
            assert set(net.conv_modes().values()) == {"fft", "direct"}  # conv3 is 1x1x1
        np.testing.assert_allclose(net.forward(inputs)["output"], want, rtol=1e-9, atol=1e-10)


def test_conv_without_init_or_weights_is_an_error(tmp_path):
    text = ("nodes input\ntype input\nsize 1\nedges c\ntype conv\nsize 1,3,3\ninput input\n"
            "output output\nnodes output\ntype transfer\nfunction linear\nsize 1\n")
    net = build(text, (1, 2, 2))
    with pytest.raises(znn.NetworkError, match=r"<test>:4: conv layer 'c' has no `init`"):
        net.forward({"input": np.zeros((1, 1, 4, 4))})
    other = build(text.replace("size 1,3,3", "size 1,3,3\ninit zero"), (1, 2, 2))
    other.save(tmp_path / "w.h5")
    net.load_weights(tmp_path / "w.h5")
    assert net.forward({"input": np.ones((1, 1, 4, 4))})["output"].shape == (1, 1, 2, 2)


def test_fft_sizes_are_padded_to_fast_lengths_and_stay_exact(monkeypatch):
    from znn.net.shapes import fast_fft_length

    assert [fast_fft_length(n) for n in (1, 7, 11, 13, 47, 97, 291)] == \
        [1, 7, 12, 14, 48, 98, 294]
    rng = np.random.default_rng(5)
    net = build("tiny3d.znn", (3, 5, 4), dtype="float64", conv_mode="fft")
    padded = [e for e in net.conv_edges() if e.fft_shape != tuple(e.src.size)]
    assert padded, "this case must exercise padded FFT sizes"
    params = ref.random_params(net.spec, rng)
    set_params(net, params)
    inputs = random_inputs(net, rng)
    g = {k: rng.standard_normal((net.nodes[k].n,) + net.output_size) for k in net.outputs}
    y = net.forward(inputs)
    dx = net.backward(g, input_grads=True)
    grads = {k: v.copy() for k, v in net.gradients().items()}
    monkeypatch.setenv("ZNN_FFT_EXACT_SIZES", "1")
    assert all(e.fft_shape == tuple(e.src.size) for e in net.conv_edges())
    for e in net.conv_edges():
        e.invalidate_spectra()
    y2 = net.forward(inputs)
    dx2 = net.backward(g, input_grads=True)
    for k in y:
        np.testing.assert_allclose(y[k], y2[k], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx["input"], dx2["input"], rtol=1e-10, atol=1e-12)
    for k, v in net.gradients().items():
        np.testing.assert_allclose(grads[k], v, rtol=1e-10, atol=1e-12)
    want = reference_outputs(net, params, inputs)
    for k in want:
        np.testing.assert_allclose(y[k], want[k], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("compact", ["0", "1"])
def test_fft_modes_with_full_or_compact_kernel_spectra_match_the_reference(monkeypatch, compact):
    monkeypatch.setenv("ZNN_FFT_COMPACT", compact)
    rng = np.random.default_rng(9)
    net = build("tiny3d.znn", (3, 4, 5), dtype="float64", conv_mode="fft")
    assert all(e.compact == (compact == "1") for e in net.conv_edges())
    params = ref.random_params(net.spec, rng)
    set_params(net, params)
    inputs = random_inputs(net, rng)
    want = reference_outputs(net, params, inputs)
    got = net.forward(inputs)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-12)
    g = {k: rng.standard_normal(v.shape) for k, v in got.items()}
    net.backward(g)
    grads = {k: v.copy() for k, v in net.gradients().items()}
    net.set_conv_mode("direct")
    net.forward(inputs)
    net.backward(g)
    for k, v in net.gradients().items():
        np.testing.assert_allclose(grads[k], v, rtol=1e-9, atol=1e-11)


def numpy_max_filter(x, k, d):
    out = [n - (kk - 1) * dd for n, kk, dd in zip(x.shape[1:], k, d)]
    y = np.full((x.shape[0], *out), -np.inf)
    for a in range(k[0]):
        for b in range(k[1]):
            for c in range(k[2]):
                y = np.maximum(y, x[:, a * d[0]:a * d[0] + out[0], b * d[1]:b * d[1] + out[1],
                                    c * d[2]:c * d[2] + out[2]])
    return y


def test_inference_pass_max_filter_skips_the_argmax_with_the_same_values():
    rng = np.random.default_rng(4)
    for shape, k, d in [((3, 5, 9, 10), (2, 2, 2), (1, 2, 3)), ((2, 1, 20, 21), (1, 3, 2), (1, 4, 1)),
                        ((3, 4, 9, 9), (3, 1, 1), (1, 1, 1)), ((2, 4, 6, 7), (1, 1, 1), (1, 1, 1))]:
        x = rng.standard_normal(shape).astype(np.float32)
        want = znn.kernels.max_filter_forward(x, k, d)[0]
        np.testing.assert_array_equal(want, numpy_max_filter(x, k, d))
        for threads in (1, 2, 3):
            got = znn.kernels.max_filter_values(x, k, d, nthreads=threads)
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(
                znn.kernels.max_filter_values(x.astype(np.float64), k, d, nthreads=threads),
                want.astype(np.float64))
    with pytest.raises(ValueError, match="window extent 5 exceeds"):
        znn.kernels.max_filter_values(np.zeros((1, 4, 4, 4), np.float32), 3, 2)
    net = build("net3d_5.znn", (2, 2, 2), dtype="float64", conv_mode="direct")
    inputs = random_inputs(net, rng)
    kept = net.forward(inputs)["output"]  # training: 2x2x2 windows keep the input, no arg-max
    assert net.edges["pool1"]._argmax is None and net.edges["pool1"]._x is not None
    lean = net.forward(inputs, keep_state=False)["output"]
    assert net.edges["pool1"]._argmax is None and net.edges["pool1"]._x is None
    np.testing.assert_array_equal(kept, lean)
