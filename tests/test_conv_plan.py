"""Per-layer conv plans: timing through the edges, choices, the saved sidecar and its reuse."""
import json
import logging
import shutil

import numpy as np
import pytest

import znn
from conftest import NETWORKS, write_run
from znn import kernels as K
from znn.formats.config_file import read_config
from znn.formats.network_file import read_network
from znn.net import conv_plan, plan_store
from znn.net.graph import Network
from znn.net.memory import estimate_bytes


def copy_net(tmp_path, name="tiny2d.znn"):
    dst = tmp_path / name
    shutil.copy(NETWORKS / name, dst)
    return dst


def build(path, out=(1, 12, 12), **kw):
    kw.setdefault("seed", 0)
    return Network(read_network(path), out, **kw)


class FakeTimer:
    """Replaces time_layer: counts calls, returns set times (fft faster unless told)."""

    def __init__(self, times=None):
        self.calls, self.times = [], times or {}

    def __call__(self, edge, training=True, repeats=2, rng=None, fft=True):
        self.calls.append((edge.name, training))
        t = dict(self.times.get(edge.name, {"fft": 0.001, "direct": 0.002}))
        if not fft:
            t["fft"] = None
        return t


@pytest.fixture
def timer(monkeypatch):
    t = FakeTimer()
    monkeypatch.setattr(conv_plan, "time_layer", t)
    return t


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg"


# -- best_times ---------------------------------------------------------------------------------
def scripted(monkeypatch, durations):
    """(candidate(name) -> fn, calls): each call of a candidate advances a fake clock by the
    next of its `durations`; calls lists the names called, in order."""
    clock, calls = [0.0], []
    monkeypatch.setattr(conv_plan, "CLOSE_ROUNDS", 0)  # test_best_times_breaks_close_calls

    def candidate(name):
        def fn():
            calls.append(name)
            clock[0] += durations[name][sum(c == name for c in calls) - 1]
        return fn
    monkeypatch.setattr(conv_plan.time, "perf_counter", lambda: clock[0])
    return candidate, calls


def test_best_times_interleaves_the_candidates_and_keeps_each_ones_best(monkeypatch):
    # seconds each call of a and b takes, in call order (the first is the warm-up)
    candidate, calls = scripted(monkeypatch, {"a": [9.0, 3.0, 1.0, 2.0],
                                              "b": [9.0, 5.0, 6.0, 4.0]})
    got = conv_plan.best_times([candidate("a"), candidate("b")], repeats=3, warmup=1,
                               prune_above=float("inf"))
    assert calls == ["a", "b"] * 4  # one warm-up round, then three rounds, in turn
    assert got == [1.0, 4.0]
    calls.clear()
    assert conv_plan.best_time(candidate("a"), repeats=1, warmup=0) == 9.0


def test_best_times_stops_timing_a_candidate_far_behind_the_best(monkeypatch):
    # the first call of each, then the timed rounds
    candidate, calls = scripted(monkeypatch, {
        "a": [2.0, 3.0, 1.0, 2.0], "b": [2.0, 4.4, 2.0, 1.0], "c": [2.0, 4.6, 1.0, 1.0],
        "d": [1.0, 9.0, 1.0, 1.0], "e": [2.6, 1.0]})
    first_only = set()
    monkeypatch.setattr(conv_plan, "SETTLED", float("inf"))
    got = conv_plan.best_times([candidate(n) for n in "abcde"], repeats=3, warmup=1,
                               first_only=first_only)
    # e's first call is more than 2.5x d's: it keeps that time; after the first timed round
    # c (4.6 > 1.5 * 3.0) and d stop; b (4.4) stays, then stops behind a's 1.0
    assert calls == list("abcde") + list("abcd") + list("ab") + list("a")
    assert got == pytest.approx([1.0, 2.0, 4.6, 9.0, 2.6]) and first_only == {4}
    calls.clear()
    # a lone survivor whose pass took SETTLED seconds or more is not timed again
    monkeypatch.setattr(conv_plan, "SETTLED", 1.0)
    got = conv_plan.best_times([candidate(n) for n in "abcde"], repeats=3, warmup=1)
    assert calls == list("abcde") + list("abcd") + list("ab")
    assert got == pytest.approx([1.0, 2.0, 4.6, 9.0, 2.6])
    calls.clear()
    monkeypatch.setattr(conv_plan, "SETTLED", 1.01)  # a's 1.0 s is short of it: one more
    conv_plan.best_times([candidate(n) for n in "abcde"], repeats=3, warmup=1)
    assert calls == list("abcde") + list("abcd") + list("ab") + list("a")
    calls.clear()
    monkeypatch.setattr(conv_plan, "SETTLED", float("inf"))
    assert conv_plan.best_times([candidate("d")], repeats=2, warmup=0) == [1.0]
    calls.clear()
    everything = conv_plan.best_times([candidate(n) for n in "abcde"], repeats=1, warmup=1,
                                      prune_above=float("inf"),
                                      first_call_above=float("inf"))
    assert calls == list("abcde") * 2 and everything == pytest.approx([3, 4.4, 4.6, 9, 1])


def test_best_times_breaks_close_calls_with_more_rounds(monkeypatch):
    candidate, calls = scripted(monkeypatch, {
        "a": [1.0, 1.2, 1.15, 0.9, 0.95], "b": [1.0, 1.0, 1.1, 1.0, 1.0],
        "c": [1.0, 1.3, 1.3]})
    monkeypatch.setattr(conv_plan, "CLOSE_ROUNDS", 2)
    monkeypatch.setattr(conv_plan, "SETTLED", 2.0)  # passes shorter than that
    got = conv_plan.best_times([candidate(n) for n in "abc"], repeats=2, warmup=1)
    # after two rounds a (1.15) and b (1.0) are within 1.2x, c (1.3) is not: two more
    # rounds of a and b, which find a's 0.9
    assert calls == list("abc") * 3 + list("ab") * 2
    assert got == pytest.approx([0.9, 1.0, 1.3])
    calls.clear()
    candidate, calls = scripted(monkeypatch, {"a": [1.0, 1.0, 1.0], "b": [1.0, 2.0, 2.0]})
    monkeypatch.setattr(conv_plan, "CLOSE_ROUNDS", 2)
    got = conv_plan.best_times([candidate(n) for n in "ab"], repeats=1, warmup=1,
                               prune_above=float("inf"))
    assert calls == list("ab") * 2 and got == [1.0, 2.0]  # no close call: no more rounds
    calls.clear()
    candidate, calls = scripted(monkeypatch, {"a": [1.0] * 3, "b": [1.0, 1.1, 1.0]})
    monkeypatch.setattr(conv_plan, "CLOSE_ROUNDS", 2)
    monkeypatch.setattr(conv_plan, "SETTLED", 1.05)  # a's 1.0 s is short, b's 1.1 s is not
    got = conv_plan.best_times([candidate(n) for n in "ab"], repeats=1, warmup=1)
    assert calls == list("ab") * 2 and got == pytest.approx([1.0, 1.1])  # long: no more


def test_best_times_never_runs_a_candidate_whose_estimate_is_far_behind(monkeypatch):
    candidate, calls = scripted(monkeypatch, {"a": [1.0, 1.0, 1.0], "b": [1.0] * 3,
                                              "c": [2.0, 2.0, 2.0]})
    asked = []

    def estimate(seconds):
        return lambda limit: asked.append((seconds, limit)) or seconds
    estimated = set()
    got = conv_plan.best_times([candidate("a"), candidate("b"), candidate("c")], repeats=2,
                               estimates=[None, estimate(9.0), estimate(2.0)],
                               estimated=estimated, prune_above=float("inf"))
    # a runs first; b's estimate (9 > 2.5 * 1) keeps it from ever running; c's (2) does not
    assert asked == [(9.0, 2.5), (2.0, 2.5)] and estimated == {1}
    assert calls == ["a", "c"] + ["a", "c"] * 2 and got == [1.0, 9.0, 2.0]
    calls.clear(), asked.clear()
    # nothing measured to compare with: estimates are not asked for
    got = conv_plan.best_times([candidate("b")], repeats=1, estimates=[estimate(9.0)])
    assert asked == [] and calls == ["b", "b"]


def test_slab_estimate_times_a_slab_of_the_output_and_scales_it(monkeypatch):
    net = build(NETWORKS / "tiny3d.znn", (2, 40, 6), conv_mode="direct", phase="train")
    e = net.edges["conv2"]
    x = np.zeros((e.src.n,) + tuple(e.src.size), net.dtype)
    g = np.zeros((e.dst.n,) + tuple(e.dst.size), net.dtype)
    clock, seen = [0.0], []
    monkeypatch.setattr(conv_plan.time, "perf_counter", lambda: clock[0])

    def kernel(name):
        def run(*a, **kw):
            seen.append((name, a[0].shape, kw["winograd"]))
            clock[0] += 1.0
        return run
    for name in ("conv_forward", "conv_backward_weight", "conv_backward_data"):
        monkeypatch.setattr(K, name, kernel(name))
    s = -(-40 // conv_plan.SLAB_PARTS)  # 5 of the 40 output rows
    rows = s + (e.ksize[1] - 1) * e.dilation[1]
    est = conv_plan.slab_estimate(e, conv_plan.direct_slab(e, x, g), 6, training=True)()
    passes = 3 if e.src.needs_grad else 2
    assert est == pytest.approx(passes * conv_plan.slab_scale(e, 1, 40, s, 6))
    assert seen[0] == ("conv_forward", (e.src.n, x.shape[1], rows, x.shape[3]), 6)
    assert seen[1][1] == (e.src.n, x.shape[1], rows, x.shape[3]) and len(seen) == passes
    seen.clear()
    est = conv_plan.slab_estimate(e, conv_plan.direct_slab(e, x, g), 0, training=False)()
    assert [n for n, _, _ in seen] == ["conv_forward"] and est == pytest.approx(40 / s)
    small = build(NETWORKS / "tiny3d.znn", (2, 4, 4), conv_mode="direct").edges["conv2"]
    assert conv_plan.direct_slab(small, x, g) is None
    assert conv_plan.direct_slab(e, x, None)[1] is None  # forward passes need no g


def test_slab_scale_of_winograd_tiles_counts_tiles_and_source_slices():
    net = build(NETWORKS / "tiny3d.znn", (2, 40, 6), conv_mode="direct")
    e = net.edges["conv2"]
    assert conv_plan.slab_scale(e, 1, 40, 5, 0) == 8.0  # the GEMM lowering: the output
    # y: 3 taps dilated by 4, 4 outputs a tile (6 points): 32 outputs are 8 tiles (2 in each
    # of 4 classes), 4 outputs 4 tiles (one per class); the input gradient, 40 and 12, 12
    # and 4 tiles
    e.ksize, e.dilation = (3, 3, 3), (4, 4, 4)
    assert conv_plan._wino_tiles(32, 4, 4) == 8 and conv_plan._wino_tiles(4, 4, 4) == 4
    assert conv_plan.slab_scale(e, 1, 32, 4, 6) == 2.0
    assert conv_plan.slab_scale(e, 1, 64, 8, 6) == pytest.approx(4.0)  # 16 / 4 tiles
    # z: 24 slices read 32 source slices, 3 slices 11: 32 / 11 < 24 / 3
    assert conv_plan.slab_scale(e, 0, 24, 3, 6) == pytest.approx(32 / 11)
    e.ksize, e.dilation = (1, 3, 3), (1, 1, 1)  # undilated: tiles follow the output
    assert conv_plan.slab_scale(e, 1, 64, 8, 6) == pytest.approx(min(8, 16 / 2, 17 / 3))


def test_slab_estimate_tries_a_thin_slab_first_for_the_gemm_lowering(monkeypatch):
    net = build(NETWORKS / "tiny3d.znn", (2, 40, 6), conv_mode="direct")
    e = net.edges["conv2"]
    x = np.zeros((e.src.n,) + tuple(e.src.size), net.dtype)
    clock, seen = [0.0], []
    monkeypatch.setattr(conv_plan.time, "perf_counter", lambda: clock[0])

    def forward(xs, *a, **kw):
        seen.append(xs.shape[2])
        clock[0] += 1.0
    monkeypatch.setattr(K, "conv_forward", forward)
    slab = conv_plan.direct_slab(e, x, None)  # 5 of 40 rows: x 8.0
    thin = conv_plan.direct_slab(e, x, None, parts=20, min_points=1)  # 2 rows: x 20.0
    halo = (e.ksize[1] - 1) * e.dilation[1]
    est = conv_plan.slab_estimate(e, slab, 0, False, thin)
    # hopeless from the thin slab alone (20 > 1.5 * 10): the 1/8 slab is never run
    assert est(10.0) == pytest.approx(20.0) and seen == [2 + halo]
    seen.clear()
    assert est(15.0) == pytest.approx(8.0) and seen == [2 + halo, 5 + halo]
    seen.clear()
    assert est() == pytest.approx(8.0) and len(seen) == 2
    seen.clear()
    # Winograd tiles skip the thin slab (their estimates from one ran up to 2.3x high)
    assert conv_plan.slab_estimate(e, slab, 6, False, thin)(1.0) == pytest.approx(
        conv_plan.slab_scale(e, 1, 40, 5, 6))
    assert seen == [5 + halo]


# -- time_layer ---------------------------------------------------------------------------------
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("layer", ["conv1", "conv2"])
def test_time_layer_drives_the_edge_and_leaves_it_unchanged(tmp_path, monkeypatch, training,
                                                           layer):
    net = build(NETWORKS / "tiny3d.znn", (2, 4, 4), conv_mode="direct", phase="train")
    e = net.edges[layer]
    e.grad[...] = np.random.default_rng(1).standard_normal(e.grad.shape)
    filters, grad, grad_id = e.filters.copy(), e.grad.copy(), id(e.grad)
    calls = {}
    for name in ("input_spectrum", "forward_spectral", "output_from_spectrum", "grad_spectrum",
                 "backward_spectral", "input_grad_from_spectrum", "forward", "backward_weight",
                 "backward_data", "invalidate_spectra"):
        orig = getattr(e, name)

        def wrapped(*a, _orig=orig, _name=name, **kw):
            calls[_name] = calls.get(_name, 0) + 1
            return _orig(*a, **kw)
        monkeypatch.setattr(e, name, wrapped)
    # count every candidate's runs: no pruning
    monkeypatch.setattr(conv_plan, "PRUNE_ABOVE", float("inf"))
    monkeypatch.setattr(conv_plan, "FIRST_CALL_ABOVE", float("inf"))
    transforms = []
    real = K.kernel_spectra_yx
    monkeypatch.setattr(K, "kernel_spectra_yx",
                        lambda *a, **k: transforms.append(1) or real(*a, **k))
    t = conv_plan.time_layer(e, training=training, repeats=2)
    assert t["fft"] > 0 and t["direct"] > 0
    passes = 3  # one warm-up + 2 timed
    # direct: the GEMM lowering, then each Winograd tile size where the kernel has tiles
    direct = passes * (1 + (len(K.WINOGRAD_POINTS) if K.winograd_fits(e.ksize) else 0))
    assert calls["input_spectrum"] == calls["forward_spectral"] == passes
    assert calls["output_from_spectrum"] == passes and calls["forward"] == direct
    if training:
        assert calls["grad_spectrum"] == calls["backward_spectral"] == passes
        assert calls["backward_weight"] == direct
        assert calls.get("backward_data", 0) == (direct if e.src.needs_grad else 0)
        # kernel spectra are recomputed every training pass (an update changes the filters)
        assert len(transforms) == passes and calls["invalidate_spectra"] >= passes
        assert calls.get("input_grad_from_spectrum", 0) == (passes if e.src.needs_grad else 0)
    else:
        assert "backward_weight" not in calls and "grad_spectrum" not in calls
        assert len(transforms) == 1  # cached, as during inference
    np.testing.assert_array_equal(e.filters, filters)
    np.testing.assert_array_equal(e.grad, grad)
    assert id(e.grad) == grad_id and e.mode == "direct" and e.winograd == 0
    assert e._wf is None and getattr(e, "_x", None) is None  # nothing left in memory


def test_time_layer_without_fft(tmp_path):
    net = build(NETWORKS / "tiny2d.znn", conv_mode="fft")
    t = conv_plan.time_layer(net.edges["conv2"], training=False, repeats=1, fft=False)
    assert t["fft"] is None and t["direct"] > 0
    assert net.edges["conv2"].mode == "fft"


# -- choices -------------------------------------------------------------------------------------
def test_choices_follow_the_lower_time_and_skip_1x1x1():
    net = build(NETWORKS / "tiny2d.znn")
    layers = {"conv1": {"fft": 0.5, "direct": 0.1, "fft_bytes": 10},
              "conv2": {"fft": 0.1, "direct": 0.5, "fft_bytes": 10}}
    report = conv_plan.choose_modes(net, layers, training=True)
    assert {k: v["choice"] for k, v in report.items()} == {"conv1": "direct", "conv2": "fft"}
    assert net.conv_modes() == {"conv1": "direct", "conv2": "fft", "conv3": "direct"}


def test_budget_demotes_largest_spectra_first():
    net = build(NETWORKS / "VD2D3D.znn", (2, 20, 20))
    edges = conv_plan.timed_edges(net)
    big = max(edges, key=lambda e: e.spectra_bytes())
    layers = {e.name: {"fft": 0.1, "direct": 0.2, "fft_bytes": e.spectra_bytes()}
              for e in edges}
    net.set_conv_mode({big.name: "direct"})
    budget = estimate_bytes(net, training=True, cache_ffts=K.CACHE_FFTS)
    net.set_conv_mode("fft")
    assert estimate_bytes(net, training=True, cache_ffts=K.CACHE_FFTS) > budget
    report = conv_plan.choose_modes(net, layers, training=True, budget=budget)
    ones = [e.name for e in net.conv_edges() if e.ksize == (1, 1, 1)]
    assert sorted(k for k, v in net.conv_modes().items() if v == "direct") == \
        sorted([big.name] + ones)
    first = edges[0].name
    assert "memory budget" in report[big.name]["note"] and report[first]["note"] == ""
    conv_plan.choose_modes(net, layers, training=True, budget=1)
    assert set(net.conv_modes().values()) == {"direct"}
    no_budget = conv_plan.choose_modes(net, layers, training=True)
    assert {v["choice"] for v in no_budget.values()} == {"fft"}


def test_fft_not_timed_when_spectra_exceed_the_budget(tmp_path, timer):
    net = build(NETWORKS / "tiny3d.znn", (2, 6, 6))
    small = net.edges["conv1"].spectra_bytes()
    layers = conv_plan.time_network(net, training=True, budget=small)
    assert layers["conv1"]["fft"] is not None and layers["conv2"]["fft"] is None
    report = conv_plan.choose_modes(net, layers, training=True)
    assert report["conv2"]["choice"] == "direct" and "not timed" in report["conv2"]["note"]
    path = copy_net(tmp_path, "tiny3d.znn")
    plan(build(path, (2, 6, 6)), path, [], budget=small)
    lines = []
    r = plan(build(path, (2, 6, 6)), path, lines)  # reused without a budget
    assert not r.timed and r.report["conv2"]["choice"] == "direct"
    assert lines[-1] == "conv plan: conv2 run direct: FFT would exceed the memory budget " \
        "(when the plan was made)"


def test_optimize_network_without_a_file_saves_nothing(tmp_path, timer):
    path = copy_net(tmp_path)
    net = build(path, phase="train")
    report = conv_plan.optimize_network(net, budget=None)
    assert {v["choice"] for v in report.values()} == {"fft"}
    assert timer.calls == [("conv1", True), ("conv2", True)]
    assert not plan_store.sidecar_path(path).exists()


# -- saved plans ---------------------------------------------------------------------------------
def plan(net, path, lines, **kw):
    return conv_plan.plan_network(net, path, training=kw.pop("training", True), log=lines.append,
                                  **kw)


def test_plan_saved_then_reused(tmp_path, timer):
    path = copy_net(tmp_path)
    lines = []
    r = plan(build(path, phase="train"), path, lines)
    assert r.timed and len(timer.calls) == 2
    assert lines[:3] == [conv_plan.NO_PLAN, "  timing conv1 (1/2)", "  timing conv2 (2/2)"]
    side = tmp_path / "tiny2d.znn.plan"
    assert r.path == side and side.exists()
    doc = json.loads(side.read_text())
    assert doc["format"] == "znn-conv-plan" and doc["version"] == 1
    (entry,) = doc["plans"]
    assert entry["mode"] == "train" and entry["output_size"] == [1, 12, 12]
    assert entry["dtype"] == "float32" and entry["threads"] >= 1
    assert entry["network"] == plan_store.network_hash(path)
    assert set(entry["layers"]) == {"conv1", "conv2"}
    assert entry["layers"]["conv2"]["fft"] == 0.001 and entry["machine"]["cores"] >= 1
    assert entry["build_flags"]["ZNN_USE_FLOATS"] in (0, 1) and entry["znn_version"]
    lines.clear()
    net = build(path, phase="train")
    r = plan(net, path, lines)
    assert not r.timed and len(timer.calls) == 2
    assert lines == [f"conv plan: {side} (2 fft, 1 direct)"]
    assert net.conv_modes() == {"conv1": "fft", "conv2": "fft", "conv3": "direct"}
    # a forward plan is another entry; both coexist
    plan(build(path), path, lines, training=False)
    assert len(timer.calls) == 4
    modes = sorted(p["mode"] for p in json.loads(side.read_text())["plans"])
    assert modes == ["forward", "train"]


@pytest.mark.parametrize("change, said", [
    (dict(num_threads=1), "1 thread"),
    (dict(dtype="float64"), "float64"),
    (dict(out=(1, 14, 14)), "output 1x14x14"),
])
def test_stale_plans_are_retimed(tmp_path, timer, change, said):
    path = copy_net(tmp_path)
    plan(build(path, num_threads=2), path, [])
    lines = []
    r = plan(build(path, **{"num_threads": 2, **change}), path, lines)
    assert r.timed and len(timer.calls) == 4
    assert lines[0].startswith("conv plan in tiny2d.znn.plan was made for ")
    assert said in lines[0].split("this run uses")[1]
    assert lines[0].endswith(": re-timing 2 layers")
    # both entries are kept; each is reused
    assert len(json.loads(plan_store.sidecar_path(path).read_text())["plans"]) == 2
    assert not plan(build(path, num_threads=2), path, []).timed


def test_network_file_change_machine_and_version_make_plans_stale(tmp_path, timer, monkeypatch):
    path = copy_net(tmp_path)
    plan(build(path), path, [])
    path.write_text(path.read_text() + "\n# edited\n")
    lines = []
    assert plan(build(path), path, lines).timed
    assert "network sha256" in lines[0]
    side = json.loads(plan_store.sidecar_path(path).read_text())
    assert len(side["plans"]) == 1  # the old network's entry is dropped
    monkeypatch.setattr(plan_store, "machine", lambda: {"cpu": "Other CPU", "cores": 64})
    lines = []
    assert plan(build(path), path, lines).timed
    assert "CPU 'Other CPU' (64 cores)" in lines[0].split("this run uses")[1]
    monkeypatch.setattr("znn._version.__version__", "9.9")
    lines = []
    assert plan(build(path), path, lines).timed and "znn 9.9" in lines[0]
    assert len(timer.calls) == 8


def test_plans_tell_cpus_of_one_name_apart_by_family_model_and_vector_isa(tmp_path, timer,
                                                                          monkeypatch):
    """Cloud hosts share a model name ('AMD EPYC') across generations with and without
    AVX-512, where other kernels win: a plan made on one is re-timed on the other."""
    def host(model, flags):
        return {"model name": "AMD EPYC", "cpu family": "25", "model": model,
                "flags": "fpu sse2 " + flags}
    monkeypatch.setattr(plan_store, "_cpuinfo", lambda: host("17", "avx avx2 fma avx512f "
                                                                    "avx512bw avx512_bf16"))
    m = plan_store.machine()
    assert m["cpu_id"] == "family 25 model 17"
    assert m["vector_isa"] == ["avx", "avx2", "avx512_bf16", "avx512bw", "avx512f", "fma"]
    path = copy_net(tmp_path)
    plan(build(path), path, [])
    assert not plan(build(path), path, []).timed
    monkeypatch.setattr(plan_store, "_cpuinfo", lambda: host("1", "avx avx2 fma"))
    lines = []
    assert plan(build(path), path, lines).timed
    then, now = lines[0].split("this run uses")
    assert "family 25 model 17, AVX-512" in then and "family 25 model 1, AVX2" in now
    monkeypatch.setattr(plan_store, "_cpuinfo", lambda: {})  # no /proc/cpuinfo
    assert set(plan_store.machine()) == {"cpu", "cores"}


def test_force_retimes_and_replaces_the_entry(tmp_path, timer):
    path = copy_net(tmp_path)
    plan(build(path), path, [])
    lines = []
    assert plan(build(path), path, lines, force=True).timed
    assert "--force" in lines[0]
    assert len(json.loads(plan_store.sidecar_path(path).read_text())["plans"]) == 1


def test_at_most_16_entries(tmp_path, timer):
    path = copy_net(tmp_path)
    for n in range(10, 28):
        plan(build(path, (1, n, n)), path, [])
    sizes = [p["output_size"][1] for p in
             json.loads(plan_store.sidecar_path(path).read_text())["plans"]]
    assert sizes == list(range(27, 11, -1))  # newest first


@pytest.mark.parametrize("text", ["{not json", '{"format": "other"}',
                                  '{"format": "znn-conv-plan", "version": 1, "plans": [{}]}',
                                  '{"format": "znn-conv-plan", "version": 7, "plans": []}'])
def test_corrupt_plan_file_is_remade(tmp_path, timer, text):
    path = copy_net(tmp_path)
    side = plan_store.sidecar_path(path)
    side.write_text(text)
    lines = []
    assert plan(build(path), path, lines).timed
    assert lines[0].startswith(f"conv plan file {side} is unreadable (")
    assert len(lines[0].splitlines()) == 1
    assert len(json.loads(side.read_text())["plans"]) == 1
    assert not plan(build(path), path, []).timed


def test_fallback_to_the_cache_folder(tmp_path, timer, monkeypatch, cache_home):
    path = copy_net(tmp_path)
    side = plan_store.sidecar_path(path)
    real = plan_store._write_atomic

    def refuse_sidecar(p, doc):
        if p == side:
            raise PermissionError(13, "Permission denied", str(p))
        return real(p, doc)
    monkeypatch.setattr(plan_store, "_write_atomic", refuse_sidecar)
    lines = []
    r = plan(build(path), path, lines)
    cached = cache_home / "znn" / "plans" / f"{plan_store.network_hash(path)}.plan"
    assert r.path == cached and cached.exists() and not side.exists()
    assert any(f"cannot write {side}" in l and str(cached) in l for l in lines)
    lines = []
    assert not plan(build(path), path, lines).timed
    assert lines == [f"conv plan: {cached} (2 fft, 1 direct)"]
    assert len(timer.calls) == 2


# -- the users of `optimize` ---------------------------------------------------------------------
def optimize_run(tmp_path, net="tiny2d.znn"):
    """write_run with the network copied into tmp_path and both conv modes `optimize`."""
    cfg = write_run(tmp_path, net=net)
    path = copy_net(tmp_path, net)
    text = cfg.read_text().replace(str(NETWORKS / net), str(path))
    text = text.replace("conv_mode = fft", "conv_mode = optimize")
    cfg.write_text(text)
    return cfg, path


def test_trainer_uses_the_saved_plan(tmp_path, timer):
    from znn.trainer import Trainer

    cfg, path = optimize_run(tmp_path)
    lines = []
    t = Trainer(read_config(cfg), log=lines.append)
    assert conv_plan.NO_PLAN in lines and len(timer.calls) == 2
    assert all(training for _, training in timer.calls)
    assert t.net.conv_modes()["conv2"] == "fft"
    lines = []
    Trainer(read_config(cfg), log=lines.append)
    assert len(timer.calls) == 2
    assert f"conv plan: {path}.plan (2 fft, 1 direct)" in lines
    entry = json.loads((tmp_path / "tiny2d.znn.plan").read_text())["plans"][0]
    assert entry["output_size"] == [1, 12, 12] and entry["mode"] == "train"


def test_trainer_respects_the_memory_budget(tmp_path, timer, monkeypatch):
    from znn.trainer import Trainer

    cfg, path = optimize_run(tmp_path)
    budget = max(e.spectra_bytes() for e in build(path).conv_edges())
    monkeypatch.setattr(conv_plan, "default_budget", lambda: budget)
    lines = []
    t = Trainer(read_config(cfg), log=lines.append)
    assert set(t.net.conv_modes().values()) == {"direct"}
    saved = json.loads((tmp_path / "tiny2d.znn.plan").read_text())["plans"][0]["layers"]
    assert all(v["fft"] is not None for v in saved.values())  # timed, then demoted
    assert any("conv1, conv2 run direct: FFT would exceed the memory budget" in l
               for l in lines)


def test_volume_forward_uses_the_saved_plan(tmp_path, timer):
    from znn.inference import VolumeForward

    cfg, path = optimize_run(tmp_path)
    weights = tmp_path / "w.h5"
    build(path).save(weights)

    def run(lines):
        vf = VolumeForward(path, weights, dtype="float32", conv_mode="optimize", num_threads=0,
                           mirror=False, outsz=(1, 20, 20), log=lines.append)
        vf.run({"input": [(tmp_path / "image.tif", "standard2D")]}, tmp_path / "out" / "p")
    first, second = [], []
    run(first)
    assert conv_plan.NO_PLAN in first and timer.calls == [("conv1", False), ("conv2", False)]
    run(second)
    assert len(timer.calls) == 2 and f"conv plan: {path}.plan (2 fft, 1 direct)" in second
    entry = json.loads((tmp_path / "tiny2d.znn.plan").read_text())["plans"][0]
    assert entry["output_size"] == [1, 20, 20] and entry["mode"] == "forward"


def test_load_network_uses_the_saved_plan(tmp_path, timer, caplog):
    path = copy_net(tmp_path, "tiny3d.znn")
    with caplog.at_level(logging.INFO, logger="znn"):
        net = znn.load_network(path, output_size=(2, 4, 4), conv_mode="optimize")
    assert conv_plan.NO_PLAN in caplog.messages
    assert timer.calls == [("conv1", False), ("conv2", False)]
    assert net.conv_modes() == {"conv1": "fft", "conv2": "fft", "conv3": "direct"}
    net = znn.load_network(path, output_size=(2, 4, 4), conv_mode="optimize", phase="train")
    assert timer.calls[2:] == [("conv1", True), ("conv2", True)]
    znn.load_network(path, output_size=(2, 4, 4), conv_mode="optimize")
    assert len(timer.calls) == 4


def test_unsavable_plan_is_used_for_the_run_only(tmp_path, timer, monkeypatch):
    path = copy_net(tmp_path)

    def refuse(p, doc):
        raise PermissionError(13, "Permission denied", str(p))
    monkeypatch.setattr(plan_store, "_write_atomic", refuse)
    lines = []
    net = build(path)
    r = plan(net, path, lines)
    assert r.path is None and net.conv_modes()["conv2"] == "fft"
    assert any("it is used for this run only" in l for l in lines)
    assert lines[-1] == "conv plan: not saved (2 fft, 1 direct)"
    assert plan(build(path), path, []).timed


# -- forward-only FFT engines (whole map or blocked) -------------------------------------------
@pytest.mark.parametrize("whole,blocked,want", [(0.3, 0.2, "blocked"), (0.2, 0.3, "whole")])
def test_forward_timing_tries_both_fft_engines_and_keeps_the_faster(monkeypatch, whole, blocked,
                                                                    want):
    net = build(NETWORKS / "tiny3d.znn", (2, 4, 4), conv_mode="direct")
    e = net.edges["conv2"]
    assert e.blocked_possible
    seen = []

    def fake_best_times(fns, repeats, first_only=None, **kw):
        times = []
        for fn in fns:
            fn()  # the pass really runs with this engine
            seen.append((e.mode, e.fft_engine if e.mode == "fft" else e.winograd))
            times.append({"whole": whole, "blocked": blocked}.get(e.fft_engine, 0.25)
                         if e.mode == "fft" else 0.25)
        return times
    monkeypatch.setattr(conv_plan, "best_times", fake_best_times)
    t = conv_plan.time_layer(e, training=False)
    direct = [("direct", 0), ("direct", 6), ("direct", 8)]  # 2x2x2: GEMM and both tile sizes
    assert seen == [("fft", "whole"), ("fft", "blocked")] + direct
    assert t["fft"] == min(whole, blocked) and t["fft_engine"] == want
    assert e.fft_engine is None and e.mode == "direct" and e._bwf is None
    seen.clear()
    t = conv_plan.time_layer(e, training=True)  # training has one FFT engine
    assert seen == [("fft", None)] + direct and "fft_engine" not in t


@pytest.mark.parametrize("engine", ["whole", "blocked"])
def test_saved_engine_is_applied(engine):
    net = build(NETWORKS / "tiny3d.znn", (2, 4, 4))
    layers = {e.name: {"fft": 0.1, "direct": 0.5, "fft_bytes": 10, "fft_engine": engine}
              for e in conv_plan.timed_edges(net)}
    report = conv_plan.choose_modes(net, layers, training=False)
    for e in conv_plan.timed_edges(net):
        assert e.fft_engine == engine == report[e.name]["fft_engine"]
        assert (e.block_plan is not None) == (engine == "blocked")
    rng = np.random.default_rng(0)
    x = {n: rng.standard_normal(net.nodes[n].shape) for n in net.inputs}
    got = net.forward(x, keep_state=False)
    net.set_conv_mode("direct")
    want = net.forward(x, keep_state=False)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5)


def test_a_plan_with_an_unknown_engine_is_rejected():
    entry = {"mode": "forward", "output_size": [1, 2, 3], "dtype": "float32", "threads": 1,
             "layers": {"conv1": {"fft": 0.1, "direct": 0.2, "fft_engine": "gpu"}}}
    entry.update({k: "x" for k in plan_store._REQUIRED if k not in entry})
    with pytest.raises(ValueError, match="fft_engine for layer 'conv1'"):
        plan_store.PlanEntry.from_json(entry)


# -- direct kernels: GEMM lowering or Winograd tiles ------------------------------------------
@pytest.mark.parametrize("fastest", [0, 6, 8])
def test_direct_timing_tries_winograd_tiles_and_keeps_the_fastest(monkeypatch, fastest):
    net = build(NETWORKS / "tiny3d.znn", (2, 4, 4), conv_mode="direct")
    e = net.edges["conv2"]  # 2x2x2: Winograd tiles fit
    e.winograd = 8

    def fake_best_times(fns, repeats, first_only=None, **kw):
        times = []
        for fn in fns:
            fn()
            times.append(1.0 if e.mode == "fft" else 0.1 if e.winograd == fastest else 0.2)
        return times
    monkeypatch.setattr(conv_plan, "best_times", fake_best_times)
    # the passes' real times, tiny and noisy here, must not make a mix of the fake winner
    monkeypatch.setattr(conv_plan, "MIX_GAIN", float("inf"))
    t = conv_plan.time_layer(e, training=True)
    assert t["direct"] == 0.1 and t["winograd"] == fastest
    assert e.winograd == 8  # restored
    layers = conv_plan.time_network(net, training=True)
    assert layers["conv2"].get("winograd", 0) == fastest


def test_no_winograd_timing_for_kernels_without_tiles(monkeypatch):
    net = build(NETWORKS / "tiny3d.znn", (2, 4, 4), conv_mode="direct")
    e = net.edges["conv1"]  # 2x3x3 fits, so build a case that does not: a 1-long y axis
    e.ksize = (2, 1, 3)
    seen = []
    def fake_best_times(fns, repeats, first_only=None, **kw):
        for fn in fns:
            fn()
            seen.append((e.mode, e.winograd))
        return [0.1] * len(fns)
    monkeypatch.setattr(conv_plan, "best_times", fake_best_times)
    conv_plan.time_layer(e, training=False, fft=False)
    assert seen == [("direct", 0)]


def test_saved_winograd_choice_is_applied_and_matches_gemm():
    net = build(NETWORKS / "tiny3d.znn", (2, 4, 4), dtype=np.float64, phase="train")
    layers = {e.name: {"fft": 0.5, "direct": 0.1, "fft_bytes": 10, "winograd": 6}
              for e in conv_plan.timed_edges(net)}
    report = conv_plan.choose_modes(net, layers, training=True)
    assert all(e.winograd == 6 and report[e.name]["winograd"] == 6 and e.mode == "direct"
               for e in conv_plan.timed_edges(net))
    rng = np.random.default_rng(0)
    x = {n: rng.standard_normal(net.nodes[n].shape) for n in net.inputs}
    got = net.forward(x)
    net.backward({k: np.ones_like(v) for k, v in got.items()})
    assert_matches_gemm(net, x, got)


def assert_matches_gemm(net, x, got):
    """The outputs `got` and the gradients now held by net's edges are those of the GEMM
    lowering on every layer and pass (the network is run again that way)."""
    grads = {e.name: e.grad.copy() for e in net.conv_edges()}
    for e in conv_plan.timed_edges(net):
        e.winograd, e.winograd_data, e.winograd_weight = 0, None, None
    want = net.forward(x)
    net.backward({k: np.ones_like(v) for k, v in want.items()})
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-9, atol=1e-11)
    for e in net.conv_edges():
        np.testing.assert_allclose(grads[e.name], e.grad, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("key", ["first_call", "estimated"])
@pytest.mark.parametrize("value", ["fft", ["gpu"]])
def test_a_plan_with_bad_first_call_or_estimated_modes_is_rejected(key, value):
    entry = {"mode": "train", "output_size": [1, 2, 3], "dtype": "float32", "threads": 1,
             "layers": {"conv1": {"fft": 0.1, "direct": 0.2, key: value}}}
    entry.update({k: "x" for k in plan_store._REQUIRED if k not in entry})
    with pytest.raises(ValueError, match=f"{key} for layer 'conv1'"):
        plan_store.PlanEntry.from_json(entry)


@pytest.mark.parametrize("key", ["winograd", "winograd_data", "winograd_weight"])
@pytest.mark.parametrize("value", [7, "6", True])
def test_a_plan_with_a_bad_winograd_value_is_rejected(key, value):
    entry = {"mode": "train", "output_size": [1, 2, 3], "dtype": "float32", "threads": 1,
             "layers": {"conv1": {"fft": 0.1, "direct": 0.2, key: value}}}
    entry.update({k: "x" for k in plan_store._REQUIRED if k not in entry})
    with pytest.raises(ValueError, match=f"{key} for layer 'conv1'"):
        plan_store.PlanEntry.from_json(entry)


@pytest.mark.parametrize("training", [True, False])
def test_memory_estimate_counts_the_winograd_scratch(monkeypatch, training):
    from znn.net import memory

    net = build(NETWORKS / "N4.znn", (1, 64, 64), conv_mode="direct", num_threads=2)
    monkeypatch.setattr(memory, "DIRECT_SCRATCH", 0)  # so the tiles' scratch shows alone
    gemm = estimate_bytes(net, training=training)
    passes = ("forward", "backward_data", "backward_weight") if training else ("forward",)

    def scratch(e, points):
        return max(K.winograd_scratch_bytes(e.src.n, e.dst.n, e.src.size, e.ksize, e.dilation,
                                            points, p, 4, 2) for p in passes)
    conv4, conv5 = net.edges["conv4"], net.edges["conv5"]  # 48->48 4x4 d8, 48->200 3x3 d16
    conv5.winograd = 6
    assert scratch(conv5, 6) > 1 << 20
    assert estimate_bytes(net, training=training) - gemm == scratch(conv5, 6)
    conv4.winograd = 8  # the larger of the two counts, once (one kernel runs at a time)
    both = estimate_bytes(net, training=training) - gemm
    assert both == max(scratch(conv5, 6), scratch(conv4, 8))


# -- a direct method per pass -------------------------------------------------------------------
def test_mixed_passes_take_each_pass_from_its_fastest_direct_candidate(monkeypatch):
    configs = [("fft", None, 0), ("direct", None, 0), ("direct", None, 6), ("direct", None, 8)]
    # best seconds of forward, backward data, weight gradient per direct candidate
    passes = {1: [11.5, 9.9, 12.2], 2: [6.8, 15.6, 7.5], 3: [11.9, 12.0, 48.7]}
    got = conv_plan._mixed_passes(passes, configs, {"direct": 29.9})
    # 6-point tiles forward and weight gradient, the GEMM lowering's backward data
    assert got == {"direct": pytest.approx(29.9 * 24.2 / 29.9), "winograd": 6,
                   "winograd_data": 0}
    # a mix within MIX_GAIN of the best single candidate is not worth it
    near = {1: [10.0, 10.0, 10.0], 2: [9.9, 10.2, 10.0]}
    assert conv_plan._mixed_passes(near, configs, {"direct": 30.0}) == {}
    assert conv_plan._mixed_passes({1: [1.0]}, configs, {"direct": 1.0}) == {}  # forward only
    monkeypatch.setattr(conv_plan, "MIX_GAIN", 1.0)
    assert conv_plan._mixed_passes(near, configs, {"direct": 30.0})["winograd_data"] == 0


def test_time_layer_keeps_a_mix_of_direct_methods_when_it_is_faster(monkeypatch):
    net = build(NETWORKS / "tiny3d.znn", (2, 4, 4), conv_mode="direct", phase="train")
    e = net.edges["conv2"]
    assert K.winograd_fits(e.ksize) and e.src.needs_grad
    clock = [0.0]
    monkeypatch.setattr(conv_plan.time, "perf_counter", lambda: clock[0])
    # seconds per pass and method (points): Winograd wins forward and weight, GEMM data
    cost = {"f": {0: 3.0, 6: 1.0, 8: 2.0}, "d": {0: 1.0, 6: 3.0, 8: 3.0},
            "w": {0: 3.0, 6: 2.0, 8: 1.0}}

    def fake(name, pass_):
        def run(*a, winograd=0, **kw):
            clock[0] += cost[pass_][winograd]
        monkeypatch.setattr(K, name, run)
    fake("conv_forward", "f"), fake("conv_backward_data", "d")
    fake("conv_backward_weight", "w")
    t = conv_plan.time_layer(e, training=True, repeats=2, fft=False)
    assert (t["winograd"], t["winograd_data"], t["winograd_weight"]) == (6, 0, 8)
    assert t["direct"] == pytest.approx(3.0)  # 1 + 1 + 1, against 6 for the best single one
    assert e.winograd == 0 and e.winograd_data is None and e.winograd_weight is None


def test_a_saved_mix_is_applied_to_each_pass_and_matches_gemm(monkeypatch):
    net = build(NETWORKS / "tiny3d.znn", (2, 4, 4), dtype=np.float64, phase="train")
    layers = {e.name: {"fft": 0.5, "direct": 0.1, "fft_bytes": 10, "winograd": 8,
                       "winograd_data": 0, "winograd_weight": 6}
              for e in conv_plan.timed_edges(net)}
    report = conv_plan.choose_modes(net, layers, training=True)
    e = net.edges["conv2"]
    assert (e.winograd, e.winograd_data, e.winograd_weight) == (8, 0, 6)
    assert [e.pass_points(p) for p in range(3)] == [8, 0, 6]
    assert report["conv2"]["winograd_data"] == 0 and report["conv2"]["winograd_weight"] == 6
    seen = []
    for name in ("conv_forward", "conv_backward_data", "conv_backward_weight"):
        real = getattr(K, name)
        monkeypatch.setattr(K, name, lambda *a, _n=name, _r=real, **kw:
                            seen.append((_n, kw["winograd"])) or _r(*a, **kw))
    rng = np.random.default_rng(0)
    x = {n: rng.standard_normal(net.nodes[n].shape) for n in net.inputs}
    got = net.forward(x)
    net.backward({k: np.ones_like(v) for k, v in got.items()})
    assert {s for s in seen if s[1] or s[0] != "conv_backward_data"} >= {
        ("conv_forward", 8), ("conv_backward_weight", 6)}
    assert ("conv_backward_data", 0) in seen and ("conv_backward_data", 8) not in seen
    assert_matches_gemm(net, x, got)


def test_memory_estimate_counts_each_pass_method(monkeypatch):
    from znn.net import memory

    net = build(NETWORKS / "N4.znn", (1, 64, 64), conv_mode="direct", num_threads=2)
    monkeypatch.setattr(memory, "DIRECT_SCRATCH", 0)
    gemm, gemm_fwd = estimate_bytes(net, training=True), estimate_bytes(net, training=False)
    conv5 = net.edges["conv5"]
    conv5.winograd_data = 6  # forward and weight gradient on the GEMM lowering
    data = K.winograd_scratch_bytes(conv5.src.n, conv5.dst.n, conv5.src.size, conv5.ksize,
                                    conv5.dilation, 6, "backward_data", 4, 2)
    assert estimate_bytes(net, training=True) - gemm == data > 0
    assert estimate_bytes(net, training=False) == gemm_fwd  # inference runs no backward data
