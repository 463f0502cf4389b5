"""Tests of volume reading/writing (znn.formats.volumes)."""
import os

import h5py
import numpy as np
import pytest
import tifffile

from znn.errors import DataError
from znn.formats.volumes import (open_volume_lazy, read_volume, rgb_to_ids, split_h5_path,
                                 write_h5, write_tif)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.float32])
def test_tif_round_trip(tmp_path, dtype):
    arr = (np.arange(3 * 5 * 7) % 200).reshape(3, 5, 7).astype(dtype)
    write_tif(tmp_path / "v.tif", arr)
    got = read_volume(tmp_path / "v.tif")
    assert got.dtype == dtype and np.array_equal(got, arr)
    assert os.listdir(tmp_path) == ["v.tif"]  # the temp file is gone


def test_2d_images_become_one_slice(tmp_path):
    img = np.arange(12, dtype=np.uint8).reshape(3, 4)
    tifffile.imwrite(tmp_path / "a.tiff", img)
    assert read_volume(tmp_path / "a.tiff").shape == (1, 3, 4)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["main"] = img
    assert np.array_equal(read_volume(tmp_path / "a.h5"), img[None])


def test_rgb_label_tif(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(2, 4, 5, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "lbl.tif", rgb, photometric="rgb")
    ids = read_volume(tmp_path / "lbl.tif", label=True)
    expect = rgb[..., 0].astype(np.int64) * 65536 + rgb[..., 1].astype(np.int64) * 256 \
        + rgb[..., 2]
    assert ids.shape == (2, 4, 5) and np.array_equal(ids, expect)
    chans = read_volume(tmp_path / "lbl.tif")
    assert chans.shape == (3, 2, 4, 5) and np.array_equal(chans[1], rgb[..., 1])
    rgba = np.concatenate([rgb, np.full((2, 4, 5, 1), 255, np.uint8)], axis=-1)
    assert np.array_equal(rgb_to_ids(rgba), expect)


def test_h5_round_trip_and_inner_path(tmp_path):
    arr = np.random.default_rng(1).random((2, 3, 4, 5))
    write_h5(tmp_path / "o.h5", arr)
    assert np.array_equal(read_volume(tmp_path / "o.h5"), arr)
    with h5py.File(tmp_path / "o.h5") as f:
        assert f["main"].compression == "gzip"
    write_h5(tmp_path / "p.hdf5", arr[0], dataset="/grp/raw", compression=None)
    assert np.array_equal(read_volume(f"{tmp_path}/p.hdf5:/grp/raw"), arr[0])
    assert np.array_equal(read_volume(f"{tmp_path}/p.hdf5:grp/raw"), arr[0])
    assert split_h5_path("x/a.h5:/b/c") == (split_h5_path("x/a.h5")[0], "/b/c")
    assert split_h5_path("x/a.tif") == (split_h5_path("x/a.tif")[0], None)


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    write_h5(tmp_path / "o.h5", np.zeros(3))
    with pytest.raises(TypeError):
        write_h5(tmp_path / "o.h5", np.array([object()]))
    with h5py.File(tmp_path / "o.h5") as f:
        assert np.array_equal(f["main"][()], np.zeros(3))
    assert sorted(os.listdir(tmp_path)) == ["o.h5"]


def test_lazy_h5_slicing(tmp_path):
    arr = np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8)
    write_h5(tmp_path / "v.h5", arr)
    with open_volume_lazy(tmp_path / "v.h5") as vol:
        assert vol.shape == (4, 6, 8) and vol.dtype == np.float32 and vol.ndim == 3
        assert isinstance(vol._source, h5py.Dataset)
        assert np.array_equal(vol[1:3, 2, ::2], arr[1:3, 2, ::2])
        assert np.array_equal(np.asarray(vol), arr)
    write_h5(tmp_path / "w.h5", arr[0])
    with open_volume_lazy(tmp_path / "w.h5") as vol:
        assert vol.shape == (1, 6, 8)
        assert np.array_equal(vol[0, 1:3], arr[0, 1:3])
        assert np.array_equal(vol[:, 2], arr[:1, 2])
        assert np.array_equal(vol[..., 3], arr[:1, :, 3])
        assert np.array_equal(np.asarray(vol), arr[:1])


def test_lazy_tif_memmap_and_fallback(tmp_path):
    arr = np.arange(3 * 10 * 12, dtype=np.uint16).reshape(3, 10, 12)
    tifffile.imwrite(tmp_path / "plain.tif", arr, photometric="minisblack")
    vol = open_volume_lazy(tmp_path / "plain.tif")
    assert isinstance(vol._source, np.memmap)
    assert vol.shape == arr.shape and np.array_equal(vol[2, 3:5, 4:9], arr[2, 3:5, 4:9])
    tifffile.imwrite(tmp_path / "zip.tif", arr, photometric="minisblack", compression="zlib")
    vol = open_volume_lazy(tmp_path / "zip.tif")
    assert not isinstance(vol._source, np.memmap)
    assert np.array_equal(vol[1], arr[1]) and vol.dtype == np.uint16


@pytest.mark.parametrize("name, content, match", [
    ("missing.tif", None, "file not found"),
    ("missing.h5", None, "file not found"),
    ("bad.tif", b"not a tiff", "cannot read TIFF"),
    ("bad.h5", b"not hdf5", "cannot read HDF5"),
    ("vol.raw", b"", "unsupported"),
])
def test_read_errors(tmp_path, name, content, match):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=match) as info:
        read_volume(path)
    assert str(path) in str(info.value)
    with pytest.raises(DataError, match=match):
        open_volume_lazy(path)


def test_missing_dataset_and_bad_rank(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["raw"] = np.zeros((2, 2, 2))
        f["flat"] = np.zeros(4)
    with pytest.raises(DataError, match="no dataset '/main'.*raw"):
        read_volume(tmp_path / "a.h5")
    with pytest.raises(DataError, match="no dataset '/main'"):
        open_volume_lazy(tmp_path / "a.h5")
    with pytest.raises(DataError, match="shape"):
        read_volume(f"{tmp_path}/a.h5:/flat")
    with pytest.raises(DataError, match="does not exist"):
        write_tif(tmp_path / "no" / "x.tif", np.zeros((2, 2)))


def test_imagej_channels_first(tmp_path):
    arr = np.arange(2 * 3 * 4 * 5, dtype=np.uint8).reshape(2, 3, 4, 5)   # Z, C, Y, X
    tifffile.imwrite(tmp_path / "hyper.tif", arr, imagej=True, metadata={"axes": "ZCYX"})
    got = read_volume(tmp_path / "hyper.tif")
    assert got.shape == (3, 2, 4, 5) and np.array_equal(got[1], arr[:, 1])
    lazy = open_volume_lazy(tmp_path / "hyper.tif")
    assert lazy.shape == (3, 2, 4, 5) and np.array_equal(lazy[2, 1], arr[1, 2])


def test_lazy_rgb_label(tmp_path):
    rgb = np.zeros((2, 3, 4, 3), np.uint8)
    rgb[0, 1, 2] = (1, 2, 3)
    tifffile.imwrite(tmp_path / "c.tif", rgb, photometric="rgb")
    vol = open_volume_lazy(tmp_path / "c.tif", label=True)
    assert vol.shape == (2, 3, 4) and vol[0, 1, 2] == 65536 + 2 * 256 + 3
