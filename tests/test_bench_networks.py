"""The 7^3 benchmark network and the network benchmark script (subprocess per case, tables)."""
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from znn.formats.network_file import read_network
from znn.net.graph import Network

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "bench_networks.py"
NET7 = ROOT / "networks" / "net3d_7.znn"


def test_net3d_7_layers_and_fov():
    spec = read_network(NET7)
    convs = {n: e for n, e in spec.edges.items() if e.type == "conv"}
    assert sorted(convs) == ["conv1", "conv2", "conv3", "conv4"]
    assert [tuple(convs[n].size) for n in ("conv1", "conv2", "conv3", "conv4")] == \
        [(7, 7, 7)] * 3 + [(1, 1, 1)]
    assert all(e.init == "xavier" for e in convs.values())
    assert [spec.nodes[n].size for n in ("nconv1", "npool1", "nconv2", "nconv3", "output")] \
        == [48, 48, 48, 48, 3]
    assert spec.nodes["output"].function == "forward_logistics"
    net = Network(spec, (2, 3, 4), dtype="float32", conv_mode="direct", num_threads=1)
    # FOV by hand: each layer adds (k - 1) * dilation, dilation doubles after a stride-2 pool
    fov, dil = 1, 1
    for k, stride in ((7, 1), (2, 2), (7, 1), (2, 2), (7, 1), (1, 1)):
        fov += (k - 1) * dil
        dil *= stride
    assert fov == 46
    assert net.fov == (46, 46, 46)
    assert net.input_size == (2 + 45, 3 + 45, 4 + 45)


def _run(args, tmp_path, timeout=60):
    p = subprocess.run([sys.executable, str(BENCH), *args, "--out-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def test_dry_run_lists_one_subprocess_per_case(tmp_path):
    out = _run(["--quick", "--dry-run", "--threads", "1,2"], tmp_path).splitlines()
    # 3 training cases x 2 threads x (znn plan, znn, fft-only, direct-only, torch)
    # + 2 inference cases x 2 threads x (znn plan, znn, torch)
    # + 3 training cases x (znn plans for 1 and 2 threads, znn and torch alternated)
    assert len(out) == 3 * 2 * 5 + 2 * 2 * 3 + 3 * 4
    assert all("--case" in line and "--threads-one" in line for line in out)
    assert sum("--case N4-infer" in line for line in out) == 6
    assert sum("--framework znn-plan" in line for line in out) == 10 + 6
    alternated = [line for line in out if "-scaling --threads-one" in line]
    assert len(alternated) == 6 and all("--threads-one 2" in line for line in alternated)
    assert not any("infer" in line for line in alternated)
    none = _run(["--quick", "--dry-run", "--scaling-rounds", "0"], tmp_path).splitlines()
    assert len(none) == 3 * 2 * 5 + 2 * 2 * 3
    assert not list(tmp_path.glob("networks.*"))
    only = _run(["--dry-run", "--only", "VD2D3D", "--threads", "2"], tmp_path).splitlines()
    assert len(only) == 5 and all("--threads-one 2" in line for line in only)
    rounds = _run(["--dry-run", "--only", "N4-train", "--threads", "1", "--frameworks",
                   "znn,torch", "--rounds", "2"], tmp_path).splitlines()
    fws = [line.split("--framework ")[1].split()[0] for line in rounds]
    assert fws == ["znn-plan", "znn", "torch"] * 2  # the frameworks in turn, round by round


def test_smoke_tiny_network_end_to_end(tmp_path):
    pytest.importorskip("torch")
    tiny = str(ROOT / "networks" / "tiny3d.znn")
    _run(["--threads", "1", "--only", "net3d_7", "--repeats", "1", "--wait-idle", "0",
          "--retries", "0",
          "--net", f"net3d_7-train={tiny}", "--net", f"net3d_7-infer={tiny}",
          "--size", "net3d_7-train=2,2,2", "--size", "net3d_7-infer=3,9,10"], tmp_path)
    data = json.loads((tmp_path / "networks.json").read_text())
    got = {(r["case"], r["framework"]): r for r in data["results"]}
    assert set(got) == {("net3d_7-train", f) for f in ("znn", "znn-fft", "znn-direct", "torch")} \
        | {("net3d_7-infer", "znn"), ("net3d_7-infer", "torch")}
    for r in got.values():
        assert r["seconds"] > 0 and r["peak_rss_mb"] > 10
        assert r["vox_per_s"] == pytest.approx(r["voxels"] / r["seconds"])
    assert got[("net3d_7-train", "znn")]["voxels"] == 8
    assert got[("net3d_7-infer", "znn")]["voxels"] == 270
    assert got[("net3d_7-train", "znn-fft")]["modes"] == "FF"
    assert got[("net3d_7-train", "znn-direct")]["modes"] == "DD"
    assert got[("net3d_7-train", "torch")]["torch_threads"] == 1
    for case in ("net3d_7-train", "net3d_7-infer"):  # planned in its own process, then reused
        assert got[(case, "znn")]["plan_s"] > 0 and got[(case, "znn")]["replanned"] is False
    text = (tmp_path / "networks.md").read_text()
    assert "torch:" in text and "dtype: float32" in text and "ZNN_USE_FLOATS" in text
    assert data["cases"]["net3d_7-train"] == {
        "label": "net3d_7-train [tiny3d.znn] out 2x2x2", "network": "tiny3d.znn",
        "kind": "train", "size": [2, 2, 2], "target": None, "scaling_target": None}
    assert "| net3d_7-train [tiny3d.znn] out 2x2x2 | 1 |" in text
    assert "| net3d_7-infer [tiny3d.znn] vol 3x9x10 | 1 |" in text
    assert not list(tmp_path.glob("*.plan"))


def test_tables_ratio_target_and_scaling():
    sys.path.insert(0, str(BENCH.parent))
    try:
        import bench_networks as bn
    finally:
        sys.path.remove(str(BENCH.parent))
    args = SimpleNamespace(quick=False, size=None, net=None)
    res = {("N4-train", 1, "znn"): {"seconds": 1.0, "vox_per_s": 40000.0, "modes": "DD"},
           ("N4-train", 1, "torch"): {"seconds": 2.5, "vox_per_s": 16000.0},
           ("N4-train", 2, "znn"): {"seconds": 0.6, "vox_per_s": 66666.0},
           ("N4-train", 2, "torch"): {"seconds": 1.5, "vox_per_s": 26666.0},
           ("N4-train", 2, "znn-fft"): {"skipped": "est. 20.0 GiB"},
           ("N4-train", 2, "znn-direct"): {"failed": "rc=137"}}
    main, _, scale = bn.tables(args, ["N4-train"], [1, 2], res)
    assert main[0][:2] == ["N4-train out 1x200x200", 1]
    assert main[0][6:] == ["2.50x", ">= 2x", "yes"]
    assert main[1][3:5] == ["est. 20.0 GiB", "rc=137"]
    assert main[1][6:] == ["2.50x", ">= 2x", "yes"]
    assert scale == [["N4-train out 1x200x200", "1.67x", "1.67x", ">= 1.85x", "NO"]]
    # another network in the case: named in the rows, and the targets do not apply
    args.net = [f"N4-train={ROOT / 'networks' / 'tiny3d.znn'}"]
    main, _, scale = bn.tables(args, ["N4-train"], [1, 2], res)
    assert main[0][0] == "N4-train [tiny3d.znn] out 1x200x200"
    assert main[0][6:] == ["2.50x", "", ""]
    assert scale == [["N4-train [tiny3d.znn] out 1x200x200", "1.67x", "1.67x", "", ""]]
    args.net = [f"N4-train={ROOT / 'networks' / 'N4.znn'}"]  # the case's own file: unchanged
    assert bn.tables(args, ["N4-train"], [1, 2], res)[0][0][6:] == ["2.50x", ">= 2x", "yes"]


def _bench_module():
    sys.path.insert(0, str(BENCH.parent))
    try:
        import bench_networks as bn
    finally:
        sys.path.remove(str(BENCH.parent))
    return bn


@pytest.mark.parametrize("framework", ["znn", "torch"])
def test_alternated_child_steps_both_thread_counts(tmp_path, framework):
    if framework == "torch":
        pytest.importorskip("torch")
    tiny = str(ROOT / "networks" / "tiny3d.znn")
    p = subprocess.run([sys.executable, str(BENCH), "--case", "net3d_7-train", "--framework",
                        f"{framework}-scaling", "--threads-one", "2", "--scaling-rounds", "3",
                        "--warmup", "1", "--budget", "1", "--workdir", str(tmp_path),
                        "--net", f"net3d_7-train={tiny}", "--size", "net3d_7-train=2,2,2"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])
    assert len(res["rounds"]) == 3
    for one, two, ceiling in res["rounds"]:
        assert one > 0 and two > 0 and 0.2 < ceiling < 3.0
    if framework == "znn":  # no plan process ran first: the child made the plans itself
        assert res["replanned"] is True


def test_alternate_threads_flips_the_order_and_probes_between_rounds(monkeypatch):
    bn = _bench_module()
    import common

    calls, probes = [], iter([1.0, 2.0, 1.5, 1.9])
    monkeypatch.setattr(common, "two_core_probe", lambda: next(probes))
    rows = bn.alternate_threads({1: lambda: calls.append(1), 2: lambda: calls.append(2)},
                                rounds=3, warmup=1)
    assert calls == [1, 2] + [1, 2, 2, 1, 1, 2]
    assert [r[2] for r in rows] == [1.5, 1.75, 1.7]  # mean of the probes around each round
    assert all(r[0] >= 0 and r[1] >= 0 for r in rows)


def test_alternated_table_medians_and_ranges():
    bn = _bench_module()
    args = SimpleNamespace(quick=False, size=None, net=None)
    rounds = [(1.0, 0.5, 1.95), (1.0, 0.6, 1.5), (1.0, 0.52, 1.92), (1.2, 1.0, 1.1)]
    scaling = {("N4-train", "znn"): {"rounds": rounds},
               ("N4-train", "torch"): {"rounds": [(4.0, 2.5, 1.8), (4.0, 3.0, 1.6)]},
               ("VD2D3D-train", "znn"): {"failed": "rc=1"}}
    rows = bn.alternated_rows(args, ["N4-train", "VD2D3D-train", "N4-infer"], scaling)
    # znn ratios 2.0, 1.67, 1.92, 1.2; torch 1.6, 1.33; probes of both: median 1.7
    assert rows == [["N4-train out 1x200x200", "4/2", "1.79x (1.20-2.00)",
                     "1.47x (1.33-1.60)", "1.70x (1.10-1.95)", ">= 1.85x", "NO"]]
    fast = {("N4-train", "znn"): {"rounds": [(1.0, 0.5, 1.9)] * 3}}
    assert bn.alternated_rows(args, ["N4-train"], fast)[0][1:] == \
        ["3/0", "2.00x (2.00-2.00)", "-", "1.90x (1.90-1.90)", ">= 1.85x", "yes"]
    args.net = [f"N4-train={ROOT / 'networks' / 'VD2D.znn'}"]
    row = bn.alternated_rows(args, ["N4-train"], fast)[0]
    assert row[0] == "N4-train [VD2D.znn] out 1x200x200" and row[-2:] == ["", ""]


def test_rounds_keep_each_frameworks_fastest_run():
    sys.path.insert(0, str(BENCH.parent))
    try:
        import bench_networks as bn
    finally:
        sys.path.remove(str(BENCH.parent))
    r = bn.keep_faster(None, {"seconds": 2.0, "modes": "DD"})
    assert r == {"seconds": 2.0, "modes": "DD", "round_seconds": [2.0]}
    r = bn.keep_faster(r, {"seconds": 1.5, "modes": "DF"})
    assert r["modes"] == "DF" and r["round_seconds"] == [2.0, 1.5]
    r = bn.keep_faster(r, {"failed": "rc=137"})
    assert r["seconds"] == 1.5 and r["round_seconds"] == [2.0, 1.5]
    r = bn.keep_faster(r, {"seconds": 1.7})
    assert r["seconds"] == 1.5 and r["round_seconds"] == [2.0, 1.5, 1.7]
    assert bn.keep_faster(None, {"failed": "rc=1"}) == {"failed": "rc=1"}
    assert bn.keep_faster({"failed": "rc=1"}, {"seconds": 3.0})["seconds"] == 3.0


def test_mode_letters_tell_winograd_from_gemm():
    sys.path.insert(0, str(BENCH.parent))
    try:
        import bench_networks as bn
    finally:
        sys.path.remove(str(BENCH.parent))
    net = Network(read_network(ROOT / "networks" / "tiny3d.znn"), (2, 4, 4), conv_mode="direct")
    assert bn.mode_letters(net) == "DD"
    net.edges["conv2"].winograd = 6
    assert bn.mode_letters(net) == "DW"
    net.edges["conv1"].mode = "fft"
    assert bn.mode_letters(net) == "FW"


def test_run_all_stops_at_first_failure(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(BENCH.parent))
    try:
        import run_all
    finally:
        sys.path.remove(str(BENCH.parent))
    (tmp_path / "a.py").write_text("open('a.done', 'w').close()\n")
    (tmp_path / "b.py").write_text("raise SystemExit(3)\n")
    (tmp_path / "c.py").write_text("open('c.done', 'w').close()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run_all, "HERE", tmp_path)
    monkeypatch.setattr(run_all, "SCRIPTS", ("a.py", "b.py", "c.py"))
    assert run_all.main() == 3
    assert (tmp_path / "a.done").exists() and not (tmp_path / "c.done").exists()
    assert "b.py failed (exit code 3); stopping" in capsys.readouterr().err
    monkeypatch.setattr(run_all, "SCRIPTS", ("a.py", "c.py"))
    assert run_all.main() == 0 and (tmp_path / "c.done").exists()


def test_net_takes_a_bare_name_from_networks_and_rejects_a_missing_file(tmp_path):
    # the tests run the script from tmp_path, where no VD2D.znn is: networks/ supplies it
    out = _run(["--dry-run", "--only", "N4-train", "--threads", "1", "--net",
                "N4-train=VD2D.znn"], tmp_path)
    assert "--net N4-train=VD2D.znn" in out
    for bad, says in (("N4-train=nope.znn", "no such network file"),
                      ("N5-train=VD2D.znn", "expected CASE=FILE.znn"),
                      ("VD2D.znn", "expected CASE=FILE.znn")):
        p = subprocess.run([sys.executable, str(BENCH), "--dry-run", "--net", bad],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert p.returncode == 1 and p.stderr.startswith(f"--net {bad}: "), p.stderr
        assert says in p.stderr and p.stderr.count("\n") == 1  # one line, no traceback
