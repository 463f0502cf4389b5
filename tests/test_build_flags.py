"""Build flags really change the compiled code: rebuild with them flipped and compare."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import znn
from znn import kernels

ROOT = Path(__file__).resolve().parent.parent

PROBE = r"""
import json, sys, numpy as np
sys.path.insert(0, sys.argv[1])
import znn
from znn._core import _build
from znn import kernels
from znn.net.graph import Network
from znn.formats.network_file import read_network
net = Network(read_network(sys.argv[2]), (2, 3, 3), seed=5, dtype="float64", conv_mode="fft")
x = np.random.default_rng(1).standard_normal((1,) + net.input_size)
y = net.forward({"input": x})["output"]
net.backward({"output": np.ones_like(y)})
print(json.dumps({"file": znn.__file__, "flags": _build.build_flags(),
                  "dtype": _build.default_dtype(), "align": _build.probe_alignment(),
                  "cache": kernels.CACHE_FFTS, "y": y.ravel().tolist(),
                  "g": net.gradients()["conv1"].ravel().tolist()}))
"""


def build_copy(dest, env_flags):
    shutil.copytree(ROOT / "znn", dest / "znn",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    env = dict(os.environ, **env_flags)
    out = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace",
                          "--build-temp", str(dest / "tmp")], cwd=dest, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]


def probe(path):
    out = subprocess.run([sys.executable, "-c", PROBE, str(path), str(ROOT / "networks" /
                                                                    "tiny3d.znn")],
                         capture_output=True, text=True, timeout=300, cwd=path)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_default_build_flags():
    flags = kernels.build_flags()
    assert flags["ZNN_USE_FLOATS"] and flags["ZNN_USE_MKL_NATIVE_FFT"]
    assert flags["ZNN_USE_MKL_DIRECT_CONV"] and not flags["ZNN_DONT_CACHE_FFTS"]
    assert kernels.default_dtype() == "float32" and kernels.CACHE_FFTS
    assert kernels.fft_backend() == "mkl-dfti"
    assert znn.__version__


@pytest.mark.slow
def test_dont_cache_ffts_double_default_and_64_byte_alignment(tmp_path):
    """ZNN_DONT_CACHE_FFTS=1, ZNN_USE_FLOATS=0, ZNN_XEON_PHI=1 in one rebuild."""
    build_copy(tmp_path, {"ZNN_DONT_CACHE_FFTS": "1", "ZNN_USE_FLOATS": "0",
                          "ZNN_XEON_PHI": "1"})
    flipped = probe(tmp_path)
    default = probe(ROOT)
    assert flipped["file"].startswith(str(tmp_path))
    assert flipped["flags"]["ZNN_DONT_CACHE_FFTS"] and not flipped["flags"]["ZNN_USE_FLOATS"]
    assert flipped["cache"] is False and default["cache"] is True
    assert flipped["dtype"] == "float64" and default["dtype"] == "float32"
    assert set(flipped["align"]) == {0}
    np.testing.assert_allclose(flipped["y"], default["y"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(flipped["g"], default["g"], rtol=1e-9, atol=1e-11)


def _cpu_flags():
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def test_simd_clone_follows_the_cpu_features():
    """The per-ISA clones are picked by CPU features, not by CPU model: an `arch=haswell`
    clone ran only on Intel Haswell-family CPUs, so AMD CPUs with AVX2 got the baseline."""
    clone = kernels.simd_clone()
    flags = _cpu_flags()
    if clone == "none" or flags is None:
        pytest.skip(f"no per-ISA clones in this build ({clone}) or no /proc/cpuinfo")
    if "avx512f" in flags:
        expected = "avx512"
    elif {"avx2", "fma", "bmi1", "bmi2", "f16c", "movbe"} <= flags:
        expected = "avx2"
    else:
        expected = "baseline"
    assert clone == expected, f"CPU flags {sorted(flags & {'avx2', 'fma', 'avx512f'})}"


def test_version_names_the_simd_clone():
    from click.testing import CliRunner

    from znn.cli.main import cli

    out = CliRunner().invoke(cli, ["--version"]).output
    assert f"SIMD clone: {kernels.simd_clone()}" in out
