"""Reading and writing image volumes: TIFF stacks and HDF5 datasets, (Z,Y,X) or (C,Z,Y,X)."""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np

from znn.errors import DataError

__all__ = ["LazyVolume", "open_volume_lazy", "read_volume", "rgb_to_ids", "split_h5_path",
           "write_h5", "write_tif"]

_H5_EXT = (".h5", ".hdf5", ".hdf")
_TIF_EXT = (".tif", ".tiff")
_H5_INNER = re.compile(r"^(.*\.(?:h5|hdf5|hdf)):(/?[^:]*)$", re.IGNORECASE)


def split_h5_path(path) -> tuple[Path, str | None]:
    """`file.h5:/inner/path` -> (file.h5, '/inner/path'); other paths -> (path, None)."""
    text = str(path)
    m = _H5_INNER.match(text)
    if m and m.group(2):
        return Path(m.group(1)), "/" + m.group(2).lstrip("/")
    return Path(text), None


def rgb_to_ids(rgb: np.ndarray) -> np.ndarray:
    """Colour label ids: (..., 3 or 4) uint8 -> R*65536 + G*256 + B as uint32 (alpha ignored)."""
    rgb = np.asarray(rgb)
    return (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) \
        | rgb[..., 2].astype(np.uint32)


def _as_volume(arr, path):
    if arr.ndim == 2:
        return arr[np.newaxis]
    if arr.ndim in (3, 4):
        return arr
    raise DataError(f"{path}: expected a 2-D, 3-D or 4-D volume, got shape {arr.shape}")


def _check_exists(path):
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")


def _read_tif(path, label):
    import tifffile
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes
            arr = series.asarray()
    except Exception as exc:  # tifffile raises many types for bad files
        raise DataError(f"{path}: cannot read TIFF: {exc}") from None
    if axes.endswith("S") and arr.shape[-1] in (3, 4):
        if label:
            return rgb_to_ids(arr)
        return np.ascontiguousarray(np.moveaxis(arr[..., :3], -1, 0))  # channels first
    if "C" in axes and arr.ndim == 4:  # e.g. ImageJ hyperstacks stored ZCYX
        return np.ascontiguousarray(np.moveaxis(arr, axes.index("C"), 0))
    return arr


def _tif_axes(path):
    import tifffile
    try:
        with tifffile.TiffFile(path) as tif:
            return tif.series[0].axes
    except Exception as exc:
        raise DataError(f"{path}: cannot read TIFF: {exc}") from None


def _read_h5(path, dataset):
    import h5py
    try:
        with h5py.File(path, "r") as f:
            name = dataset or "/main"
            if name not in f or not isinstance(f[name], h5py.Dataset):
                keys = ", ".join(sorted(f.keys())) or "none"
                raise DataError(f"{path}: no dataset '{name}' (top-level keys: {keys})")
            return f[name][()]
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot read HDF5: {exc}") from None


def read_volume(path, label: bool = False) -> np.ndarray:
    """Read a whole volume as (Z,Y,X), or (C,Z,Y,X) when the file holds channels.

    Formats: .tif/.tiff (8/16/32-bit grey or float; 2-D images become (1,Y,X)) and
    .h5/.hdf5 (dataset '/main', or `file.h5:/inner/path`).  An RGB(A) TIFF becomes label
    ids R*65536+G*256+B when `label` is true, else a (3,Z,Y,X) array.  Raises DataError
    naming the file when it is missing, unreadable or not a volume.
    """
    file, dataset = split_h5_path(path)
    _check_exists(file)
    ext = file.suffix.lower()
    if ext in _TIF_EXT:
        if dataset is not None:
            raise DataError(f"{path}: an inner dataset path only applies to HDF5 files")
        arr = _read_tif(file, label)
    elif ext in _H5_EXT:
        arr = _read_h5(file, dataset)
    else:
        raise DataError(f"{path}: unsupported volume format '{ext}' (use .tif, .tiff, .h5 or "
                        ".hdf5)")
    return _as_volume(np.asarray(arr), path)


class LazyVolume:
    """A read-only array-like over a volume on disk: `.shape`, `.dtype`, `.ndim`, slicing.

    Slicing reads only the requested part when the file allows it (HDF5, uncompressed
    contiguous TIFF); `np.asarray(vol)` loads everything.  Close it (or use `with`) to
    release an HDF5 file.
    """

    def __init__(self, source, shape, dtype, closer=None, add_axis=False):
        self._source, self._closer, self._add_axis = source, closer, add_axis
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key):
        if not self._add_axis:
            return np.asarray(self._source[key])
        # a 2-D source seen as (1, Y, X): index the virtual leading axis ourselves
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (4 - len(key)) + key[i + 1:]
        key = key + (slice(None),) * (3 - len(key))
        arr = np.asarray(self._source[key[1:]])
        return arr[np.newaxis][(key[0],) + (slice(None),) * arr.ndim]

    def __array__(self, dtype=None, copy=None):
        arr = self[...]
        return arr.astype(dtype, copy=False) if dtype is not None else arr

    def __len__(self):
        return self.shape[0]

    def close(self):
        if self._closer is not None:
            self._closer()
            self._closer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_volume_lazy(path, label: bool = False) -> LazyVolume:
    """Open a volume without loading it when possible (HDF5 dataset, memory-mapped TIFF).

    Compressed or tiled TIFFs and RGB label TIFFs are loaded whole.  The shape follows
    `read_volume` (2-D images appear as (1,Y,X)).  Raises DataError like `read_volume`.
    """
    file, dataset = split_h5_path(path)
    _check_exists(file)
    ext = file.suffix.lower()
    if ext in _H5_EXT:
        import h5py
        try:
            f = h5py.File(file, "r")
        except Exception as exc:
            raise DataError(f"{path}: cannot read HDF5: {exc}") from None
        name = dataset or "/main"
        if name not in f or not isinstance(f[name], h5py.Dataset):
            keys = ", ".join(sorted(f.keys())) or "none"
            f.close()
            raise DataError(f"{path}: no dataset '{name}' (top-level keys: {keys})")
        ds = f[name]
        if ds.ndim not in (2, 3, 4):
            f.close()
            raise DataError(f"{path}: expected a 2-D, 3-D or 4-D volume, got shape {ds.shape}")
        shape = (1,) + ds.shape if ds.ndim == 2 else ds.shape
        return LazyVolume(ds, shape, ds.dtype, closer=f.close, add_axis=ds.ndim == 2)
    if ext in _TIF_EXT:
        import tifffile
        mm = None
        axes = _tif_axes(file)
        if "S" not in axes and "C" not in axes:
            try:
                mm = tifffile.memmap(file, mode="r")
            except Exception:  # compressed, tiled, or otherwise not mappable: load it
                mm = None
        if mm is not None and mm.ndim in (2, 3):
            return LazyVolume(mm, ((1,) + mm.shape) if mm.ndim == 2 else mm.shape, mm.dtype,
                              add_axis=mm.ndim == 2)
        arr = read_volume(path, label=label)
        return LazyVolume(arr, arr.shape, arr.dtype)
    raise DataError(f"{path}: unsupported volume format '{ext}' (use .tif, .tiff, .h5 or .hdf5)")


def _atomic(path, write):
    """Run write(tmp_path) on a temp file in the target folder, then rename it into place."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise DataError(f"{path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_h5(path, array, dataset: str = "/main", compression: str | None = "gzip") -> None:
    """Write `array` as `dataset` of a new HDF5 file, atomically (temp file + rename)."""
    import h5py
    array = np.ascontiguousarray(array)

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            f.create_dataset(dataset, data=array, compression=compression)
    _atomic(path, write)


def write_tif(path, array) -> None:
    """Write `array` (2-D, 3-D (Z,Y,X) or 4-D) as a TIFF, atomically (temp file + rename)."""
    import tifffile
    array = np.ascontiguousarray(array)
    _atomic(path, lambda tmp: tifffile.imwrite(tmp, array, photometric="minisblack"))
