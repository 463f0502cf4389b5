"""`znn optimize-conv`: the per-layer table, the saved plan, its reuse, and one-line errors."""
import json
import shutil

import pytest
from click.testing import CliRunner

from conftest import NETWORKS, write_run
from znn.cli.main import cli
from znn.cli.optimize_conv import _ms
from znn.formats.config_file import read_config
from znn.formats.network_file import read_network
from znn.net import conv_plan


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def calls(monkeypatch):
    """Counts the layers timed (the real timing still runs)."""
    seen, real = [], conv_plan.time_layer

    def counting(edge, *a, **kw):
        seen.append(edge.name)
        return real(edge, *a, **kw)
    monkeypatch.setattr(conv_plan, "time_layer", counting)
    return seen


def copy_net(tmp_path, name="tiny2d.znn"):
    shutil.copy(NETWORKS / name, tmp_path / name)
    return tmp_path / name


def table_rows(output):
    lines = output.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("layer "))
    rows = []
    for line in lines[start + 1:]:
        if not line.startswith("conv"):
            break
        rows.append(line.split())
    return lines[start].split(), rows


def test_network_form_prints_the_table_and_saves_the_plan(tmp_path, calls):
    path = copy_net(tmp_path)
    res = invoke("optimize-conv", path, "--outsz", "1,12,12", "--mode", "train", "--threads", 1,
                 "--repeats", 1)
    assert res.exit_code == 0, res.output
    head, rows = table_rows(res.output)
    assert head[:4] == ["layer", "kernel", "dilation", "maps"]
    assert [r[0] for r in rows] == ["conv1", "conv2", "conv3"]
    conv1, conv2, conv3 = rows
    assert conv1[1:5] == ["1x3x3", "1x1x1", "1->4", "1x19x19"]
    assert conv2[1:5] == ["1x3x3", "1x2x2", "4->4", "1x16x16"]
    fft, direct = (float(v.rstrip("*")) for v in conv2[5:7])  # *: one first call only
    assert fft > 0 and direct > 0
    assert conv2[7] == ("fft" if fft < direct else "direct") and "faster" in " ".join(conv2)
    assert ("* one first call only" in res.output) == ("*" in conv2[5] + conv2[6])
    assert conv3[5:8] == ["-", "-", "direct"] and "always direct" in " ".join(conv3)
    side = tmp_path / "tiny2d.znn.plan"
    assert f"saved: {side} (train, output 1x12x12, float32, 1 thread)" in res.output
    (entry,) = json.loads(side.read_text())["plans"]
    assert entry["mode"] == "train" and entry["threads"] == 1 and entry["repeats"] == 1
    saved = entry["layers"]["conv2"]
    assert [_ms(saved["fft"]), _ms(saved["direct"])] == [v.rstrip("*") for v in conv2[5:7]]
    assert [v.endswith("*") for v in conv2[5:7]] == \
        [m in saved.get("first_call", []) for m in ("fft", "direct")]
    assert calls == ["conv1", "conv2"]
    # again: reused, nothing timed; --force re-times
    res = invoke("optimize-conv", path, "--outsz", "1,12,12", "--mode", "train", "--threads", 1)
    assert res.exit_code == 0, res.output
    assert "reused: " in res.output and "--force re-times" in res.output and len(calls) == 2
    assert table_rows(res.output)[1][1][5] == conv2[5]
    res = invoke("optimize-conv", path, "--outsz", "1,12,12", "--mode", "train", "--threads", 1,
                 "--repeats", 1, "--force")
    assert res.exit_code == 0 and "saved: " in res.output and len(calls) == 4


def test_network_form_both_modes_float64(tmp_path, calls):
    path = copy_net(tmp_path, "tiny3d.znn")
    res = invoke("optimize-conv", path, "--outsz", "2,4,4", "--dtype", "float64", "--repeats", 1)
    assert res.exit_code == 0, res.output
    assert "saved: " in res.output and res.output.count("saved: ") == 2
    assert "(forward, output 2x4x4, float64" in res.output
    plans = json.loads((tmp_path / "tiny3d.znn.plan").read_text())["plans"]
    assert sorted((p["mode"], p["dtype"]) for p in plans) == [("forward", "float64"),
                                                               ("train", "float64")]
    # forward plans record which FFT engine (whole map or blocked) was faster per layer
    forward = next(p for p in plans if p["mode"] == "forward")
    engines = {k: v.get("fft_engine") for k, v in forward["layers"].items()}
    assert set(engines.values()) <= {"whole", "blocked"} and None not in engines.values()
    train = next(p for p in plans if p["mode"] == "train")
    assert all("fft_engine" not in v for v in train["layers"].values())
    res = invoke("optimize-conv", path, "--outsz", "2,4,4", "--dtype", "float64", "--mode",
                 "forward")
    rows = {r[0]: r for r in table_rows(res.output)[1]}
    for name, engine in engines.items():
        if rows[name][7] == "fft":
            assert rows[name][8] == f"({engine})"


def run_cfg(tmp_path, extra=""):
    cfg = write_run(tmp_path, extra=extra)
    path = copy_net(tmp_path)
    text = cfg.read_text().replace(str(NETWORKS / "tiny2d.znn"), str(path))
    cfg.write_text(text.replace("conv_mode = fft", "conv_mode = optimize"))
    return cfg, path


def test_config_form_makes_the_plans_train_and_forward_reuse(tmp_path, calls):
    from znn.inference import VolumeForward
    from znn.net.graph import Network
    from znn.trainer import Trainer

    cfg, path = run_cfg(tmp_path)
    # forward_outsz removed: the size is the one `znn forward` picks for sample 1
    cfg.write_text(cfg.read_text().replace("forward_outsz = 1,20,20\n", ""))
    res = invoke("optimize-conv", "-c", cfg, "--repeats", 1, "--max-memory", "200M")
    assert res.exit_code == 0, res.output
    assert res.output.count("saved: ") == 2 and len(calls) == 4
    plans = json.loads((tmp_path / "tiny2d.znn.plan").read_text())["plans"]
    sizes = {p["mode"]: tuple(p["output_size"]) for p in plans}
    assert sizes["train"] == (1, 12, 12)
    assert sizes["forward"][1:] == (41, 41)  # 48 - FOV 8 + 1, clipped to the volume
    lines = []
    Trainer(read_config(cfg), log=lines.append)
    assert f"conv plan: {path}.plan (" in " ".join(lines) and len(calls) == 4
    weights = tmp_path / "w.h5"
    Network(read_network(path), (1, 1, 1), seed=0).save(weights)
    lines = []
    VolumeForward(path, weights, dtype="float32", conv_mode="optimize", num_threads=0,
                  mirror=False, max_memory=200 * 2**20, log=lines.append).run(
        {"input": [(tmp_path / "image.tif", "standard2D")]}, tmp_path / "out" / "p")
    assert len(calls) == 4, lines
    assert any(l.startswith(f"conv plan: {path}.plan (") for l in lines)


def test_config_form_one_mode_and_quiet(tmp_path, calls):
    cfg, _ = run_cfg(tmp_path)
    res = invoke("-q", "optimize-conv", "-c", cfg, "--mode", "forward", "--repeats", 1)
    assert res.exit_code == 0, res.output
    assert "(forward, output 1x20x20, float32" in res.output and "train:" not in res.output
    assert "timing conv layers" not in res.output


@pytest.mark.parametrize("args, said", [
    ([], "either -c run.cfg or a NETWORK.znn"),
    (["NET", "-c", "CFG"], "got both"),
    (["NET"], "--outsz z,y,x is needed"),
    (["NET", "--outsz", "1,x,3"], "--outsz"),
    (["NET", "--outsz", "1,2,3,4"], "--outsz"),
    (["MISSING", "--outsz", "1,12,12"], "missing.znn"),
    (["-c", "MISSINGCFG"], "nope.cfg"),
    (["-c", "CFG", "--outsz", "1,12,12"], "--outsz goes with NETWORK"),
])
def test_errors_are_one_line(tmp_path, args, said):
    cfg, path = run_cfg(tmp_path)
    subst = {"NET": path, "CFG": cfg, "MISSING": tmp_path / "missing.znn",
             "MISSINGCFG": tmp_path / "nope.cfg"}
    res = invoke("optimize-conv", *[subst.get(a, a) for a in args])
    assert res.exit_code == 1, res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    assert res.output.startswith("znn: error") and said in res.output
    assert not (tmp_path / "tiny2d.znn.plan").exists()


def test_table_names_the_engine_of_each_choice(capsys):
    from znn.cli.optimize_conv import _table
    from znn.formats.network_file import read_network
    from znn.net.graph import Network

    net = Network(read_network(NETWORKS / "tiny3d.znn"), (2, 4, 4), seed=0)
    report = {"conv1": {"fft": 0.2, "direct": 0.1, "fft_bytes": 10, "note": "", "choice": "direct",
                        "winograd": 6},
              "conv2": {"fft": 0.1, "direct": 0.2, "fft_bytes": 10, "note": "", "choice": "fft",
                        "fft_engine": "blocked", "winograd": 8},
              "conv3": {"fft": 0.3, "direct": 0.1, "fft_bytes": 10, "note": "", "choice": "direct",
                        "winograd": 0}}
    _table(net, report)
    rows = {r[0]: r[7:] for r in table_rows(capsys.readouterr().out)[1]}
    assert rows["conv1"][:3] == ["direct", "(winograd", "6)"]
    blocks = net.edges["conv2"].cheapest_blocks().fft  # the block size is shown
    assert rows["conv2"][:3] == ["fft", "(blocked", "x".join(map(str, blocks)) + ")"]
    assert rows["conv3"][0] == "direct" and rows["conv3"][1] != "(winograd"
    report["conv1"].update(winograd=8, winograd_data=0)  # backward data on the GEMM lowering
    report["conv3"].update(winograd_weight=6)
    _table(net, report)
    rows = {r[0]: r[7:] for r in table_rows(capsys.readouterr().out)[1]}
    assert " ".join(rows["conv1"][:7]) == "direct (f w8, d gemm, w w8)"
    assert " ".join(rows["conv3"][:7]) == "direct (f gemm, d gemm, w w6)"


def test_a_mode_timed_by_one_first_call_is_starred_in_the_table_and_the_plan(tmp_path,
                                                                             monkeypatch):
    # at 1.0 only the candidate with the fastest first call is timed again: the other mode
    # keeps the time of its first call
    monkeypatch.setattr(conv_plan, "FIRST_CALL_ABOVE", 1.0)
    path = copy_net(tmp_path)
    res = invoke("optimize-conv", path, "--outsz", "1,12,12", "--mode", "train", "--threads", 1,
                 "--repeats", 1)
    assert res.exit_code == 0, res.output
    conv2 = table_rows(res.output)[1][1]
    starred = [v.endswith("*") for v in conv2[5:7]]
    assert sum(starred) == 1 and "* one first call only" in res.output
    other = ("fft", "direct")[starred.index(True)]
    (entry,) = json.loads((tmp_path / "tiny2d.znn.plan").read_text())["plans"]
    assert entry["layers"]["conv2"]["first_call"] == [other]


def test_a_mode_estimated_from_a_slab_is_marked_in_the_table_and_the_plan(tmp_path,
                                                                          monkeypatch):
    # every direct candidate "estimated" far behind: none of them is run whole
    monkeypatch.setattr(conv_plan, "direct_slab", lambda *a: "a slab")
    monkeypatch.setattr(conv_plan, "slab_estimate", lambda *a: (lambda limit: 1e3))
    path = copy_net(tmp_path)
    res = invoke("optimize-conv", path, "--outsz", "1,12,12", "--mode", "train", "--threads", 1,
                 "--repeats", 1)
    assert res.exit_code == 0, res.output
    conv2 = table_rows(res.output)[1][1]
    assert conv2[6].endswith("~") and not conv2[5].endswith("~")
    assert "~ estimated from a pass over 1/8 (or 1/32) of the output" in res.output
    (entry,) = json.loads((tmp_path / "tiny2d.znn.plan").read_text())["plans"]
    assert entry["layers"]["conv2"]["estimated"] == ["direct"]
    assert entry["layers"]["conv2"]["direct"] == 1e3
