"""The `znn` command group: --version, info, and one-line errors."""
from click.testing import CliRunner

from conftest import NETWORKS
from znn.cli.main import cli


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_version_prints_the_build_flags():
    res = invoke("--version")
    assert res.exit_code == 0
    assert res.output.startswith("znn ")
    for flag in ("ZNN_USE_FLOATS=1", "ZNN_USE_MKL_NATIVE_FFT=1", "ZNN_USE_MKL_FFT=0",
                 "ZNN_USE_MKL_DIRECT_CONV=1", "ZNN_DONT_CACHE_FFTS=0", "ZNN_XEON_PHI=0"):
        assert flag in res.output
    assert "mkl-dfti" in res.output


def test_info_n4():
    res = invoke("info", NETWORKS / "N4.znn", "--outsz", "1,100,100")
    assert res.exit_code == 0, res.output
    out = res.output
    assert "FOV 1x95x95" in out and "patch 1x194x194" in out
    assert "conv5" in out and "1x16x16" in out  # dilation of conv5
    assert "parameters" in out and "memory estimate" in out
    assert "fft" in out and "direct" in out


def test_info_float64_and_3d_default_size():
    res = invoke("info", NETWORKS / "zinet.znn", "--dtype", "float64")
    assert res.exit_code == 0, res.output
    assert "float64" in res.output and "FOV 37x37x37" in res.output


def test_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.znn"
    bad.write_text("nodes input\ntype input\nsize 1\n\nedges c\ntype convv\n")
    res = invoke("info", bad)
    assert res.exit_code == 1
    assert len(res.output.strip().splitlines()) == 1
    assert "bad.znn:6" in res.output and "convv" in res.output
    res = invoke("info", tmp_path / "missing.znn")
    assert res.exit_code == 1 and "missing.znn" in res.output
    res = invoke("info", NETWORKS / "N4.znn", "--outsz", "1,x,3")
    assert res.exit_code == 2
