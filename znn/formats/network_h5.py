"""Network weight files in the original ZNN's HDF5 layout (read, atomic write)."""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field

import h5py
import numpy as np

from znn.errors import NetworkError

STDIO_PREFIX = "/processing/znn/train/network"
_ARRAYS = ("filters", "biases", "momentum_vol")
_INT_KEYS = ("size", "stride")  # stored as int64 vectors; every other option is a string


@dataclass
class LayerWeights:
    """The stored state of one layer (edge or node group) of a network file.

    `filters` is (n_in, n_out, kz, ky, kx) in true kernel order (C order, numpy z,y,x);
    `options` holds the other datasets as strings (vectors as "a,b,c").
    """

    name: str
    group_type: str
    filters: np.ndarray | None = None
    biases: np.ndarray | None = None
    momentum: np.ndarray | None = None
    fft: bool | None = None
    options: dict[str, str] = field(default_factory=dict)


def _decode_kernels(stored):
    """Per-kernel Fortran order (as written by the original) -> true C-order kernels."""
    n_in, n_out, s0, s1, s2 = stored.shape
    flat = np.ascontiguousarray(stored).reshape(n_in, n_out, s2, s1, s0)
    return np.ascontiguousarray(flat.transpose(0, 1, 4, 3, 2))


def _encode_kernels(kernels):
    """True C-order kernels -> per-kernel Fortran order, same (n_in, n_out, s0, s1, s2) shape."""
    return np.ascontiguousarray(kernels.transpose(0, 1, 4, 3, 2)).reshape(kernels.shape)


def _as_text(value):
    """A dataset value (bytes, str, number or small vector) as the option string."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    arr = np.asarray(value)
    if arr.dtype.kind in "SO" and arr.size == 1:
        return _as_text(arr.reshape(()).item())
    if arr.dtype.kind == "U" and arr.size == 1:
        return str(arr.reshape(()).item())
    if arr.ndim == 0:
        return str(arr.item())
    return ",".join(_as_text(v) for v in arr.ravel())


def _layers_root(f):
    node = f.get(STDIO_PREFIX)
    return node if isinstance(node, h5py.Group) else f


def _is_layer(group):
    return isinstance(group, h5py.Group) and any(
        k in group for k in ("filters", "biases", "group_type"))


def _read_layer(path, name, g):
    def fail(message):
        raise NetworkError(f"{path}: layer '{name}': {message}")

    arrays = {}
    for key in _ARRAYS:
        if key in g:
            if not isinstance(g[key], h5py.Dataset) or g[key].dtype.kind != "f":
                fail(f"'{key}' must be a floating-point dataset")
            arrays[key] = g[key][()]
    options = {k: _as_text(g[k][()]) for k in g
               if k not in _ARRAYS and isinstance(g[k], h5py.Dataset)}
    group_type = options.pop("group_type", None)
    if group_type is None:
        group_type = "edge" if "filters" in arrays else "node"
    if group_type not in ("edge", "node"):
        fail(f"group_type must be 'edge' or 'node', got '{group_type}'")
    fft = options.pop("fft", None)
    if fft is not None:
        if fft.strip().lower() not in ("0", "1", "true", "false"):
            fail(f"fft must be 0 or 1, got '{fft}'")
        fft = fft.strip().lower() in ("1", "true")
    if options.get("name") == name:
        del options["name"]
    filters = biases = momentum = None
    if "filters" in arrays:
        stored = arrays["filters"]
        if stored.ndim != 5:
            fail(f"filters must be 5-D (n_in, n_out, kz, ky, kx), got shape {stored.shape}")
        size = options.pop("size", None)
        if size is not None and size != ",".join(map(str, stored.shape[2:])):
            fail(f"size dataset ({size}) disagrees with the filter shape {stored.shape}")
        filters = _decode_kernels(stored)
    if "biases" in arrays:
        biases = arrays["biases"]
        if biases.ndim != 1:
            fail(f"biases must be 1-D, got shape {biases.shape}")
        if filters is None:
            size = options.pop("size", None)
            if size is not None and size != str(biases.shape[0]):
                fail(f"size dataset ({size}) disagrees with the {biases.shape[0]} biases")
    if "momentum_vol" in arrays:
        momentum = arrays["momentum_vol"]
        like = arrays.get("filters", arrays.get("biases"))
        if like is None or momentum.shape != like.shape:
            want = "no filters or biases" if like is None else f"shape {like.shape}"
            fail(f"momentum_vol has shape {momentum.shape}, but the layer has {want}")
        if filters is not None:
            momentum = _decode_kernels(momentum)
    return LayerWeights(name=name, group_type=group_type, filters=filters, biases=biases,
                        momentum=momentum, fft=fft, options=options)


def _open(path, mode="r"):
    try:
        return h5py.File(path, mode)
    except (OSError, ValueError) as exc:
        raise NetworkError(f"{path}: cannot open as an HDF5 network file: {exc}") from exc


def read_network_h5(path) -> dict[str, LayerWeights]:
    """Read every layer of a network file written by znn or by the original ZNN.

    Layers are looked up under /processing/znn/train/network (stdio layout) or else at the
    file root; a group is a layer if it holds `filters`, `biases` or `group_type`.

    Raises
    ------
    NetworkError
        Not HDF5, no layers, or inconsistent datasets (names the file and the layer).
    """
    path = os.fspath(path)
    with _open(path) as f:
        root = _layers_root(f)
        names = [k for k in root if _is_layer(root[k])]
        if not names:
            raise NetworkError(f"{path}: no network layers found (neither under "
                               f"{STDIO_PREFIX} nor at the file root)")
        return {name: _read_layer(path, name, root[name]) for name in names}


def _check_layer(layer):
    def fail(message):
        raise NetworkError(f"layer '{layer.name}': {message}")

    if layer.group_type not in ("edge", "node"):
        fail(f"group_type must be 'edge' or 'node', got '{layer.group_type}'")
    if layer.filters is not None and np.ndim(layer.filters) != 5:
        fail(f"filters must be 5-D (n_in, n_out, kz, ky, kx), got shape "
             f"{np.shape(layer.filters)}")
    if layer.biases is not None and np.ndim(layer.biases) != 1:
        fail(f"biases must be 1-D, got shape {np.shape(layer.biases)}")
    if layer.momentum is not None:
        like = layer.filters if layer.filters is not None else layer.biases
        if like is None or np.shape(layer.momentum) != np.shape(like):
            fail(f"momentum shape {np.shape(layer.momentum)} does not match the "
                 f"{'filters' if layer.filters is not None else 'biases'}")


def _write_layer(g, layer):
    size = layer.options.get("size")
    if layer.filters is not None:
        g.create_dataset("filters", data=_encode_kernels(np.asarray(layer.filters)))
        size = ",".join(map(str, np.shape(layer.filters)[2:]))
        if layer.momentum is not None:
            g.create_dataset("momentum_vol", data=_encode_kernels(np.asarray(layer.momentum)))
    elif layer.biases is not None:
        size = str(len(layer.biases))
    if layer.biases is not None:
        g.create_dataset("biases", data=np.asarray(layer.biases))
        if layer.momentum is not None and layer.filters is None:
            g.create_dataset("momentum_vol", data=np.asarray(layer.momentum))
    options = dict(layer.options)
    options.setdefault("name", layer.name)
    options["group_type"] = layer.group_type
    if size is not None:
        options["size"] = size
    if layer.fft is not None:
        options["fft"] = "1" if layer.fft else "0"
    for key, value in options.items():
        if key in _INT_KEYS:
            try:
                data = np.array([int(v) for v in str(value).split(",")], dtype=np.int64)
            except ValueError as exc:
                raise NetworkError(f"layer '{layer.name}': option {key}={value!r} is not a "
                                   f"comma-separated list of integers") from exc
        else:
            data = np.bytes_(str(value).encode("utf-8"))
        g.create_dataset(key, data=data)


def write_network_h5(path, layers: dict[str, LayerWeights],
                     extra: dict[str, np.ndarray] | None = None, stdio: bool = True):
    """Write a network file the original ZNN can load, atomically (temp file + os.replace).

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    layers : dict of str to LayerWeights
        One group per layer, named by the dict key.
    extra : dict of str to array, optional
        More datasets, by absolute path (e.g. "/processing/znn/train/iteration").
    stdio : bool
        Put the layers under /processing/znn/train/network (True) or at the root (False).
    """
    path = os.fspath(path)
    for layer in layers.values():
        _check_layer(layer)
    directory = os.path.dirname(os.path.abspath(path))
    # A fresh name in the same directory (so os.replace is atomic); h5py creates it with the
    # usual umask permissions, unlike tempfile.mkstemp's 0600.
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}."
                                  f"{secrets.token_hex(4)}.tmp")
    try:
        # track_order keeps the layers in the caller's order when read back.
        with h5py.File(tmp, "x", track_order=True) as f:
            root = f.create_group(STDIO_PREFIX, track_order=True) if stdio else f
            for name, layer in layers.items():
                _write_layer(root.create_group(name, track_order=True), layer)
            for name, value in (extra or {}).items():
                f.create_dataset(name, data=value)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_extra(path, name):
    """The dataset at absolute path `name` in an HDF5 file (strings decoded), or None."""
    path = os.fspath(path)
    with _open(path) as f:
        obj = f.get(name)
        if not isinstance(obj, h5py.Dataset):
            return None
        value = obj[()]
        if isinstance(value, bytes) or (isinstance(value, np.ndarray) and value.dtype.kind in "SO"):
            return _as_text(value) if np.ndim(value) == 0 else np.array(
                [_as_text(v) for v in np.ravel(value)], dtype=object).reshape(np.shape(value))
        return value
