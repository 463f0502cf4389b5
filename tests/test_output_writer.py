"""The `znn forward` output writer: chunks assembled from tiles, compressed in threads."""
import itertools
import zlib

import h5py
import numpy as np
import pytest
import tifffile

from znn.formats import output_writer as ow
from znn.inference import tile_starts


def _write_tiles(w, vol, tile):
    starts = itertools.product(*(tile_starts(n, t) for n, t in zip(vol.shape[1:], tile)))
    for s in starts:
        w.write(s, vol[(slice(None),) + tuple(slice(a, a + t) for a, t in zip(s, tile))])


def _check_outputs(paths, vol):
    with h5py.File(paths[0], "r") as f:
        ds = f["/main"]
        assert ds.compression == "gzip" and ds.compression_opts == ow.LEVEL
        np.testing.assert_array_equal(ds[...], vol)
    for c, tif in enumerate(paths[1:]):
        np.testing.assert_array_equal(tifffile.imread(tif).reshape(vol.shape[1:]), vol[c])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,tile", [((2, 5, 13, 11), (2, 5, 4)),   # overlapping last tiles
                                        ((1, 3, 8, 8), (3, 4, 4)),     # tiles = chunks
                                        ((3, 1, 9, 20), (1, 9, 20))])  # one tile
@pytest.mark.parametrize("threads", [1, 2])
def test_tiles_make_the_whole_volume(tmp_path, monkeypatch, dtype, shape, tile, threads):
    monkeypatch.setattr(ow, "CHUNK_YX", 4)
    vol = np.random.default_rng(0).random(shape).astype(dtype)
    w = ow.H5Writer(tmp_path / "out.h5", shape, dtype, tile, threads)
    _write_tiles(w, vol, tile)
    paths = w.finish(tmp_path / "out")
    assert [p.name for p in paths] == ["out.h5"] + [f"out_{c}.tif" for c in range(shape[0])]
    assert not list(tmp_path.glob(".*tmp*"))
    _check_outputs(paths, vol)
    assert not w.spilled and not w.pending
    nchunks = int(np.prod([-(-n // c) for n, c in zip(shape[1:], w.chunk)]))
    assert len(w.stored) == nchunks  # every chunk compressed by the writer's threads


def test_stored_chunks_are_zlib_streams_of_whole_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(ow, "CHUNK_YX", 4)
    vol = np.arange(2 * 6 * 6, dtype=np.float32).reshape(1, 2, 6, 6)
    w = ow.H5Writer(tmp_path / "o.h5", vol.shape, np.float32, (2, 6, 6))
    _write_tiles(w, vol, (2, 6, 6))
    paths = w.finish(tmp_path / "o")
    with h5py.File(paths[0], "r") as f:
        ds = f["/main"]
        assert ds.chunks == (1, 2, 4, 4)
        mask, raw = ds.id.read_direct_chunk((0, 0, 4, 4))  # an edge chunk, zero-padded
        assert mask == 0
        chunk = np.frombuffer(zlib.decompress(raw), np.float32).reshape(2, 4, 4)
        np.testing.assert_array_equal(chunk[:, :2, :2], vol[0, :, 4:, 4:])
        assert not chunk[:, 2:, :].any() and not chunk[:, :, 2:].any()


def test_over_the_memory_cap_chunks_go_through_hdf5(tmp_path, monkeypatch):
    monkeypatch.setattr(ow, "CHUNK_YX", 4)
    monkeypatch.setattr(ow, "PENDING_BYTES", 1)  # nothing may wait: every partial chunk spills
    shape, tile = (2, 3, 14, 10), (3, 3, 3)
    vol = np.random.default_rng(1).random(shape).astype(np.float32)
    w = ow.H5Writer(tmp_path / "s.h5", shape, np.float32, tile)
    _write_tiles(w, vol, tile)
    assert w.spilled and not w.pending
    _check_outputs(w.finish(tmp_path / "s"), vol)


def test_voxels_no_tile_covers_stay_zero(tmp_path, monkeypatch):
    monkeypatch.setattr(ow, "CHUNK_YX", 4)
    vol = np.random.default_rng(2).random((1, 1, 8, 8)).astype(np.float32)
    w = ow.H5Writer(tmp_path / "p.h5", vol.shape, np.float32, (1, 5, 8))
    w.write((0, 0, 0), vol[:, :, :5])  # rows 5..7 never written
    paths = w.finish(tmp_path / "p")
    want = vol.copy()
    want[:, :, 5:] = 0
    _check_outputs(paths, want)


def test_abort_leaves_no_files(tmp_path):
    w = ow.H5Writer(tmp_path / "a.h5", (1, 2, 8, 8), np.float32, (2, 8, 8))
    w.write((0, 0, 0), np.ones((1, 2, 8, 4), np.float32))
    w.abort()
    assert not list(tmp_path.iterdir())
