"""The per-layer benchmark script: znn's planned method against PyTorch, layer by layer."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "bench_net_layers.py"


def _run(args, cwd):
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


@pytest.mark.parametrize("mode", ["train", "forward"])
def test_every_conv_layer_gets_a_row_with_its_planned_method(tmp_path, mode):
    pytest.importorskip("torch")
    net = tmp_path / "tiny3d.znn"
    shutil.copy(ROOT / "networks" / "tiny3d.znn", net)
    p = _run([str(net), "--outsz", "2,6,6", "--mode", mode, "--threads", "1,2", "--repeats",
              "1", "--out-dir", str(tmp_path / "out")], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "timing conv layers" in p.stdout  # no plan yet: made, then saved
    data = json.loads((tmp_path / "out" / "net_layers.json").read_text())
    rows = data["rows"]
    # tiny3d: conv1 (2x3x3), conv2 (3x3x3 dilated 2), conv3 (1x1x1), then the totals
    names = [r[0] for r in rows]
    assert names == ["conv1", "conv2", "conv3", "all"] * 2
    assert [r[5] for r in rows] == [1] * 4 + [2] * 4
    layer = {r[0]: r for r in rows[:4]}
    assert layer["conv2"][3] == "2x2x2" and layer["conv3"][6] == "direct (1x1x1)"
    assert layer["conv1"][6].split()[0] in ("fft", "direct") and layer["conv3"][7] == "-"
    total = rows[3]
    assert float(total[8]) == pytest.approx(sum(float(r[8]) for r in rows[:3]), abs=0.02)
    assert float(total[10].rstrip("x")) > 0
    assert list(tmp_path.glob("tiny3d.znn.plan"))  # the plan is saved next to the network
    again = _run([str(net), "--outsz", "2,6,6", "--mode", mode, "--threads", "1", "--repeats",
                  "1", "--out-dir", str(tmp_path / "out")], tmp_path)
    assert again.returncode == 0 and "timing conv layers" not in again.stdout  # plan reused


def test_bad_arguments_give_one_line_errors(tmp_path):
    p = _run([str(tmp_path / "missing.znn"), "--outsz", "1,2,3"], tmp_path)
    assert p.returncode == 2 and "missing.znn: no such network file" in p.stderr
    p = _run([str(ROOT / "networks" / "tiny3d.znn"), "--outsz", "1,2"], tmp_path)
    assert p.returncode == 2 and "three positive integers" in p.stderr
