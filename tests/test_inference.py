"""`znn forward`: exact tiling, mirroring, output files, memory refusal, bad weights."""
import h5py
import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from conftest import NETWORKS, synthetic_stack, write_run
from znn.cli.main import cli
from znn.errors import DataError, NetworkError
from znn.inference import VolumeForward, reflect, tile_starts
from znn.net.graph import Network
from znn.formats.network_file import parse_network, read_network


def saved_net(tmp_path, name, seed=0):
    net = Network(read_network(NETWORKS / name), (1, 1, 1), seed=seed)
    for p in net.parameters().values():  # non-trivial biases too
        p += np.float32(0.05)
    path = tmp_path / f"{name}.h5"
    net.save(path)
    return path


def run(tmp_path, name, volume, *, outsz, mirror, weights, threads=0, mode="fft", tag="a",
        dtype="float64", folder=NETWORKS, **kw):
    tif = tmp_path / f"vol_{tag}.tif"
    tifffile.imwrite(tif, volume, photometric="minisblack")
    vf = VolumeForward(folder / name, weights, dtype=dtype, conv_mode=mode,
                       num_threads=threads, mirror=mirror, outsz=outsz, log=lambda s: None, **kw)
    paths = vf.run({"input": [(tif, "standard3D")]}, tmp_path / f"out_{tag}")
    with h5py.File(paths[0]) as f:
        return f["/main"][()], paths


def test_reflect_is_symmetric_padding():
    n = 5
    idx = np.arange(-7, 12)
    want = np.pad(np.arange(n), (7, 7), mode="symmetric")[: len(idx)]
    np.testing.assert_array_equal(reflect(idx, n), want)


def test_tile_starts_cover_and_align_to_the_end():
    assert tile_starts(10, 4) == [0, 4, 6]
    assert tile_starts(8, 4) == [0, 4]
    assert tile_starts(3, 4) == [0]


@pytest.mark.parametrize("name,shape", [("tiny2d.znn", (3, 37, 29)), ("tiny3d.znn", (11, 19, 17))])
def test_result_does_not_depend_on_tiling_or_threads(tmp_path, name, shape):
    vol = np.random.default_rng(0).integers(0, 255, shape).astype(np.uint8)
    w = saved_net(tmp_path, name)
    ref, _ = run(tmp_path, name, vol, outsz=(64, 64, 64), mirror=True, weights=w, tag="big")
    assert ref.shape[1:] == shape
    for k, outsz in enumerate([(1, 7, 5), (2, 9, 13), (3, 4, 4)]):
        got, _ = run(tmp_path, name, vol, outsz=outsz, mirror=True, weights=w, tag=f"t{k}",
                     threads=1 + k % 2, mode="direct" if k == 1 else "fft")
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-10)


def test_mirror_and_valid_output_shapes(tmp_path):
    w = saved_net(tmp_path, "tiny2d.znn")
    vol = synthetic_stack((2, 30, 25))[0]
    full, _ = run(tmp_path, "tiny2d.znn", vol, outsz=(1, 16, 16), mirror=True, weights=w)
    valid, _ = run(tmp_path, "tiny2d.znn", vol, outsz=(1, 16, 16), mirror=False, weights=w,
                   tag="v")
    assert full.shape == (2, 2, 30, 25)
    assert valid.shape == (2, 2, 30 - 7, 25 - 7)
    # away from the border the two agree (same input windows)
    np.testing.assert_allclose(full[:, :, 3:-4, 3:-4], valid, rtol=1e-9, atol=1e-10)


def test_output_files_and_softmax(tmp_path):
    w = saved_net(tmp_path, "tiny2d.znn")
    vol = synthetic_stack((2, 20, 20))[0]
    out, paths = run(tmp_path, "tiny2d.znn", vol, outsz=(1, 8, 8), mirror=True, weights=w,
                     dtype="float32", softmax=True)
    assert [p.name for p in paths] == ["out_a_output.h5", "out_a_output_0.tif",
                                       "out_a_output_1.tif"]
    assert out.dtype == np.float32 and out.shape == (2, 2, 20, 20)
    np.testing.assert_allclose(out.sum(axis=0), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(tifffile.imread(paths[1]), out[0])
    assert not list(tmp_path.glob(".*tmp*"))


def test_memory_budget_refusal_suggests_a_size(tmp_path):
    w = saved_net(tmp_path, "tiny2d.znn")
    vol = synthetic_stack((2, 200, 200))[0]
    with pytest.raises(DataError, match=r"needs about .* memory budget .* try forward_outsz"):
        run(tmp_path, "tiny2d.znn", vol, outsz=(1, 200, 200), mirror=True, weights=w,
            max_memory=3 * 2**20)
    got, _ = run(tmp_path, "tiny2d.znn", vol, outsz=None, mirror=True, weights=w,
                 max_memory=3 * 2**20, tag="auto")
    assert got.shape == (2, 2, 200, 200)


def test_missing_or_mismatched_weights_are_errors(tmp_path):
    vol = synthetic_stack((2, 20, 20))[0]
    with pytest.raises(NetworkError, match="does not exist"):
        run(tmp_path, "tiny2d.znn", vol, outsz=(1, 8, 8), mirror=True,
            weights=tmp_path / "nope.h5")
    other = saved_net(tmp_path, "tiny3d.znn")
    with pytest.raises(NetworkError):
        run(tmp_path, "tiny2d.znn", vol, outsz=(1, 8, 8), mirror=True, weights=other)


def test_multi_input_network(tmp_path):
    text = """
nodes input
type input
size 1
nodes input-r
type input
size 1
edges ca
type conv
init uniform
size 1,3,3
input input
output h
edges cb
type conv
init uniform
size 1,3,3
input input-r
output h
nodes h
type transfer
function tanh
size 2
edges c2
type conv
init uniform
size 1,2,2
input h
output output
nodes output
type transfer
function linear
size 2
"""
    znn_path = tmp_path / "two.znn"
    znn_path.write_text(text)
    net = Network(parse_network(text, str(znn_path)), (1, 1, 1), seed=1, dtype="float64")
    net.save(tmp_path / "two.h5")
    a = synthetic_stack((2, 15, 16), seed=1)[0]
    b = synthetic_stack((2, 15, 16), seed=2)[0]
    tifffile.imwrite(tmp_path / "a.tif", a, photometric="minisblack")
    tifffile.imwrite(tmp_path / "b.tif", b, photometric="minisblack")
    vf = VolumeForward(znn_path, tmp_path / "two.h5", dtype="float64", conv_mode="fft",
                       num_threads=0, mirror=False, outsz=(1, 5, 4), log=lambda s: None)
    paths = vf.run({"input": [(tmp_path / "a.tif", "none")],
                    "input-r": [(tmp_path / "b.tif", "none")]}, tmp_path / "o")
    with h5py.File(paths[0]) as f:
        got = f["/main"][()]
    whole = Network(parse_network(text, str(znn_path)), (2, 12, 13), seed=1, dtype="float64")
    whole.load_weights(tmp_path / "two.h5")
    want = whole.forward({"input": a[None].astype(float), "input-r": b[None].astype(float)})
    np.testing.assert_allclose(got, want["output"], rtol=1e-10, atol=1e-10)


def test_cli_forward_after_train_and_missing_net(tmp_path):
    cfg = write_run(tmp_path)
    runner = CliRunner()
    res = runner.invoke(cli, ["forward", "-c", str(cfg)])
    assert res.exit_code == 1 and "forward_net" in res.output and "Traceback" not in res.output
    assert runner.invoke(cli, ["train", "-c", str(cfg), "--set", "Max_iter=3"]).exit_code == 0
    res = runner.invoke(cli, ["forward", "-c", str(cfg), "-r", "1"])
    assert res.exit_code == 0, res.output
    with h5py.File(tmp_path / "out" / "pred_sample1_output.h5") as f:
        assert f["/main"].shape == (2, 4, 41, 41)  # valid: 48 - FOV + 1


def test_tta_averages_flips_and_refuses_affinity(tmp_path):
    """With an odd FOV (symmetric windows) TTA equals averaging whole-volume flips exactly."""
    odd = tmp_path / "odd.znn"
    odd.write_text((NETWORKS / "tiny2d.znn").read_text().replace("size 1,3,3\nstride 1,1,1\n"
                                                                 "input input", "size 1,2,2\n"
                                                                 "stride 1,1,1\ninput input"))
    net = Network(read_network(odd), (1, 1, 1), seed=0)
    assert net.fov == (1, 7, 7)
    net.save(tmp_path / "odd.h5")
    w = tmp_path / "odd.h5"
    vol = synthetic_stack((2, 20, 20))[0]
    plain, _ = run(tmp_path, "odd.znn", vol, outsz=(1, 10, 10), mirror=True, weights=w,
                   folder=tmp_path)
    tta, _ = run(tmp_path, "odd.znn", vol, outsz=(1, 10, 10), mirror=True, weights=w,
                 tag="tta", tta=True, folder=tmp_path)
    # reference: average of the 8 in-plane flips/transposes of the whole volume
    from znn.data.augment import all_transforms, apply_transform, invert_transform

    acc = 0
    ts = [t for t in all_transforms() if not t.flip_z]
    for k, t in enumerate(ts):
        v = apply_transform([vol[None]], t)[0][0]
        out, _ = run(tmp_path, "odd.znn", v, outsz=(1, 10, 10), mirror=True, weights=w,
                     tag=f"r{k}", folder=tmp_path)
        acc = acc + invert_transform([out], t)[0]
    np.testing.assert_allclose(tta, acc / len(ts), rtol=1e-9, atol=1e-10)
    assert not np.allclose(tta, plain)
    with pytest.raises(DataError, match="affinity"):
        VolumeForward(NETWORKS / "tiny2d.znn", w, dtype="float32", conv_mode="fft",
                      num_threads=0, mirror=True, tta=True, out_type="affinity")
