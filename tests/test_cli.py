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


def test_bad_sample_ids_and_bindings_name_the_cfg_or_spec_line(tmp_path):
    from conftest import write_run

    import znn

    cfg = write_run(tmp_path)  # and a network for forward_net to name
    znn.load_network(NETWORKS / "tiny2d.znn", output_size=(1, 4, 4), seed=0).save(
        tmp_path / "out" / "net_current.h5")
    lines = cfg.read_text().splitlines()
    at = {key: 1 + next(i for i, line in enumerate(lines) if line.startswith(key + " "))
          for key in ("test_range", "forward_range")}
    cfg.write_text(cfg.read_text().replace("test_range = 1\n", "test_range = 1,3\n")
                   .replace("forward_range = 1\n", "forward_range = 4\n"))
    for args, key, sid in ((["train"], "test_range", 3), (["forward"], "forward_range", 4),
                           (["optimize-conv", "--mode", "forward"], "forward_range", 4)):
        res = invoke(*args, "-c", cfg)
        assert res.exit_code == 1, res.output
        assert res.output.strip().splitlines()[-1] == (
            f"znn: error: {cfg}:{at[key]}: {key} names sample {sid}, but "
            f"{tmp_path / 'data.spec'} has no [sample{sid}] (it has [1])")
    res = invoke("forward", "-c", cfg, "--set", "forward_range=2")
    assert res.exit_code == 1 and res.output.strip().endswith("(from an override)")
    # a [sample1] without the input node's image: the .spec's line of [sample1]
    spec = tmp_path / "data.spec"
    spec.write_text(spec.read_text().replace("[sample1]\ninput = 1\n", "[sample1]\n"))
    res = invoke("forward", "-c", cfg, "--set", "forward_range=1")
    assert res.exit_code == 1, res.output
    line = 1 + spec.read_text().splitlines().index("[sample1]")
    assert res.output.strip().splitlines()[-1] == (
        f"znn: error: {spec}:{line}: [sample1] binds no [imageN] to the network's input node "
        f"'input' (add 'input = N')")
