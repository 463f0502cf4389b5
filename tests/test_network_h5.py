"""Tests of HDF5 network files: the original ZNN layout, round trips, atomic writes, bad files."""
import os

import h5py
import numpy as np
import pytest

from znn.errors import NetworkError
from znn.formats import LayerWeights, read_network_h5, write_network_h5
from znn.formats.network_h5 import read_extra

PREFIX = "/processing/znn/train/network"


def fortran_slabs(kernels):
    """What the original stores: each (i, j) kernel's values in Fortran order, same shape."""
    out = np.empty_like(kernels)
    for i in range(kernels.shape[0]):
        for j in range(kernels.shape[1]):
            k = kernels[i, j]
            out[i, j] = k.ravel(order="F").reshape(k.shape)
    return out


def sample_layers(dtype=np.float32):
    rng = np.random.default_rng(5)
    return {
        "conv1": LayerWeights(
            name="conv1", group_type="edge",
            filters=rng.standard_normal((2, 3, 1, 2, 3)).astype(dtype),
            momentum=rng.standard_normal((2, 3, 1, 2, 3)).astype(dtype), fft=True,
            options={"type": "conv", "input": "input", "output": "nconv1", "init": "xavier",
                     "stride": "1,1,1", "eta": "0.00999999978"}),
        "nconv1": LayerWeights(
            name="nconv1", group_type="node", biases=rng.standard_normal(3).astype(dtype),
            momentum=rng.standard_normal(3).astype(dtype),
            options={"type": "transfer", "function": "rectify_linear"}),
        "pool1": LayerWeights(name="pool1", group_type="edge",
                              options={"type": "max_filter", "size": "1,2,2", "stride": "1,2,2"}),
        "npool1": LayerWeights(name="npool1", group_type="node",
                               options={"type": "sum", "size": "3"}),
    }


def assert_layers_equal(got, want):
    assert list(got) == list(want)
    for name, w in want.items():
        g = got[name]
        assert (g.name, g.group_type, g.fft, g.options) == (w.name, w.group_type, w.fft,
                                                            w.options), name
        for attr in ("filters", "biases", "momentum"):
            a, b = getattr(g, attr), getattr(w, attr)
            assert (a is None) == (b is None), (name, attr)
            if a is not None:
                assert a.dtype == b.dtype and a.shape == b.shape
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("stdio", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip(tmp_path, stdio, dtype):
    path = tmp_path / "net.h5"
    layers = sample_layers(dtype)
    extra = {"/processing/znn/train/iteration": np.int64(1234),
             "/processing/znn/train/statistics/train/err": np.array([0.5, 0.25])}
    write_network_h5(path, layers, extra=extra, stdio=stdio)
    assert_layers_equal(read_network_h5(path), layers)
    assert read_extra(path, "/processing/znn/train/iteration") == 1234
    np.testing.assert_array_equal(
        read_extra(path, "/processing/znn/train/statistics/train/err"), [0.5, 0.25])
    assert read_extra(path, "/processing/znn/train/nothing") is None
    assert read_extra(path, "/processing") is None  # a group, not a dataset
    with h5py.File(path, "r") as f:
        assert (PREFIX in f) == stdio
        assert ("conv1" in f) != stdio


def test_written_layout_is_the_original_one(tmp_path):
    path = tmp_path / "net.h5"
    layers = sample_layers()
    write_network_h5(path, layers)
    with h5py.File(path, "r") as f:
        g = f[PREFIX]["conv1"]
        assert g["filters"].shape == (2, 3, 1, 2, 3) and g["filters"].dtype == np.float32
        np.testing.assert_array_equal(g["filters"][()], fortran_slabs(layers["conv1"].filters))
        np.testing.assert_array_equal(g["momentum_vol"][()],
                                      fortran_slabs(layers["conv1"].momentum))
        assert g["size"].dtype == np.int64 and list(g["size"][()]) == [1, 2, 3]
        assert g["stride"].dtype == np.int64 and list(g["stride"][()]) == [1, 1, 1]
        assert g["group_type"][()] == b"edge" and g["name"][()] == b"conv1"
        assert g["type"][()] == b"conv" and g["fft"][()] == b"1"
        assert g["eta"][()] == b"0.00999999978"
        n = f[PREFIX]["nconv1"]
        assert n["size"].dtype == np.int64 and list(n["size"][()]) == [3]
        np.testing.assert_array_equal(n["momentum_vol"][()], layers["nconv1"].momentum)
        assert len(f.attrs) == 0 and len(g.attrs) == 0


def write_original(path, stdio, dtype, kernels_a, kernels_b, vlen_strings=False):
    """A file laid out like the original's save (no znn code involved)."""
    def text(s):
        return s if vlen_strings else np.bytes_(s.encode())

    with h5py.File(path, "w") as f:
        root = f.require_group(PREFIX) if stdio else f
        if stdio:
            f.create_dataset("/processing/znn/train/statistics/train/it", data=np.arange(3))
        for name, k, src, dst in (("conv1", kernels_a, "input", "nconv1"),
                                  ("conv2", kernels_b, "nconv1", "output")):
            g = root.create_group(name)
            g["filters"] = fortran_slabs(k).astype(dtype)
            g["momentum_vol"] = fortran_slabs(2 * k).astype(dtype)
            g["size"] = np.array(k.shape[2:], dtype=np.int64)
            g["stride"] = np.array([1, 1, 1], dtype=np.int64)
            for key, value in (("group_type", "edge"), ("name", name), ("type", "conv"),
                               ("input", src), ("output", dst), ("init", "xavier"),
                               ("fft", "0")):
                g[key] = text(value)
        g = root.create_group("nconv1")
        g["biases"] = np.array([0.5, -1.0], dtype=dtype)
        g["momentum_vol"] = np.array([0.25, 0.0], dtype=dtype)
        g["size"] = np.array([2], dtype=np.int64)
        for key, value in (("group_type", "node"), ("name", "nconv1"), ("type", "transfer"),
                           ("function", "rectify_linear")):
            g[key] = text(value)
        g = root.create_group("input")
        g["size"] = np.array([1], dtype=np.int64)
        g["group_type"] = text("node")
        g["type"] = text("input")


@pytest.mark.parametrize("stdio", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("vlen", [False, True])
def test_reads_original_layout(tmp_path, stdio, dtype, vlen):
    rng = np.random.default_rng(1)
    ka = rng.standard_normal((1, 2, 1, 2, 3))  # non-cubic 2D-style kernels
    kb = rng.standard_normal((2, 1, 2, 3, 4))  # non-cubic 3D kernels
    path = tmp_path / "orig.h5"
    write_original(path, stdio, dtype, ka, kb, vlen_strings=vlen)
    layers = read_network_h5(path)
    assert sorted(layers) == ["conv1", "conv2", "input", "nconv1"]
    c1, c2 = layers["conv1"], layers["conv2"]
    for layer, k in ((c1, ka), (c2, kb)):
        assert layer.group_type == "edge" and layer.fft is False
        assert layer.filters.dtype == dtype and layer.filters.flags.c_contiguous
        np.testing.assert_array_equal(layer.filters, k.astype(dtype))
        np.testing.assert_array_equal(layer.momentum, (2 * k).astype(dtype))
        assert layer.biases is None
    # a true kernel element, checked by hand: original bytes of kernel (0,1) are x fastest
    flat = fortran_slabs(ka)[0, 1].ravel()
    assert c1.filters[0, 1, 0, 1, 2] == pytest.approx(flat[0 + 1 * 1 + 2 * 1 * 2])
    assert c1.options == {"stride": "1,1,1", "type": "conv", "input": "input",
                          "output": "nconv1", "init": "xavier"}
    n = layers["nconv1"]
    assert n.group_type == "node" and n.filters is None and n.fft is None
    np.testing.assert_array_equal(n.biases, np.array([0.5, -1.0], dtype=dtype))
    np.testing.assert_array_equal(n.momentum, np.array([0.25, 0.0], dtype=dtype))
    assert n.options == {"type": "transfer", "function": "rectify_linear"}
    assert layers["input"].options == {"size": "1", "type": "input"}


def test_layers_without_group_type_are_detected(tmp_path):
    path = tmp_path / "bare.h5"
    with h5py.File(path, "w") as f:
        f["conv/filters"] = np.zeros((1, 1, 1, 1, 2), dtype=np.float32)
        f["node/biases"] = np.zeros(4)
        f["other/data"] = np.zeros(3)
    layers = read_network_h5(path)
    assert sorted(layers) == ["conv", "node"]
    assert layers["conv"].group_type == "edge" and layers["node"].group_type == "node"


def test_overwrite_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "net.h5"
    write_network_h5(path, sample_layers())
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_network_h5(path, sample_layers(np.float64), extra={"/bad": object()})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["net.h5"]
    write_network_h5(path, sample_layers(np.float64))
    assert os.listdir(tmp_path) == ["net.h5"]
    assert read_network_h5(path)["conv1"].filters.dtype == np.float64


@pytest.mark.parametrize("bad, fragment", [
    (LayerWeights("c", "edge", filters=np.zeros((1, 2, 3))), "5-D"),
    (LayerWeights("c", "node", biases=np.zeros((2, 2))), "1-D"),
    (LayerWeights("c", "edge", filters=np.zeros((1, 1, 1, 1, 2)), momentum=np.zeros(2)),
     "momentum"),
    (LayerWeights("c", "kernel"), "group_type"),
])
def test_write_rejects_bad_layers(tmp_path, bad, fragment):
    with pytest.raises(NetworkError, match=fragment) as info:
        write_network_h5(tmp_path / "x.h5", {"c": bad})
    assert "'c'" in str(info.value)
    assert os.listdir(tmp_path) == []


def corrupt(path, layer, action):
    write_network_h5(path, sample_layers(), stdio=False)
    with h5py.File(path, "a") as f:
        action(f[layer])


@pytest.mark.parametrize("case, layer, fragment", [
    ("filters_4d", "conv1", "5-D"),
    ("size_mismatch", "conv1", "disagrees with the filter shape"),
    ("bias_size_mismatch", "nconv1", "disagrees with the 3 biases"),
    ("momentum_shape", "conv1", "momentum_vol"),
    ("group_type", "nconv1", "group_type"),
    ("int_filters", "conv1", "floating-point"),
    ("fft", "conv1", "fft"),
])
def test_bad_files(tmp_path, case, layer, fragment):
    path = tmp_path / "bad.h5"

    def action(g):
        if case == "filters_4d":
            del g["filters"]
            g["filters"] = np.zeros((2, 3, 2, 3), dtype=np.float32)
        elif case == "size_mismatch":
            g["size"][...] = [1, 3, 2]
        elif case == "bias_size_mismatch":
            del g["size"]
            g["size"] = np.array([4], dtype=np.int64)
        elif case == "momentum_shape":
            del g["momentum_vol"]
            g["momentum_vol"] = np.zeros((2, 3, 1, 1, 3), dtype=np.float32)
        elif case == "group_type":
            del g["group_type"]
            g["group_type"] = np.bytes_(b"layer")
        elif case == "int_filters":
            del g["filters"]
            g["filters"] = np.zeros((2, 3, 1, 2, 3), dtype=np.int32)
        elif case == "fft":
            del g["fft"]
            g["fft"] = np.bytes_(b"maybe")

    corrupt(path, layer, action)
    with pytest.raises(NetworkError, match=fragment) as info:
        read_network_h5(path)
    assert str(path) in str(info.value) and f"'{layer}'" in str(info.value)


def test_not_hdf5(tmp_path):
    path = tmp_path / "net.h5"
    path.write_text("nodes input\n")
    with pytest.raises(NetworkError, match="net.h5"):
        read_network_h5(path)
    with pytest.raises(NetworkError, match="missing.h5"):
        read_network_h5(tmp_path / "missing.h5")


def test_no_layers(tmp_path):
    path = tmp_path / "empty.h5"
    with h5py.File(path, "w") as f:
        f["/processing/znn/train/statistics/train/err"] = np.zeros(2)
    with pytest.raises(NetworkError, match="empty.h5: no network layers"):
        read_network_h5(path)
