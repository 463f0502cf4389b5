"""Tests of the .znn parser, its error messages and the bundled networks (incl. their FOV)."""
import pathlib

import pytest

from znn.errors import SpecError
from znn.formats import EdgeSpec, NetworkSpec, NodeSpec, parse_network, read_network

NETWORKS = pathlib.Path(__file__).resolve().parent.parent / "networks"

BASE = """\
nodes input
type input
size 1

edges conv1
type conv
init uniform
size 1,3,3
input input
output out

nodes out
type transfer
function linear
size 2
"""


def sub(old, new, text=BASE):
    assert text.count(old) == 1, old
    return text.replace(old, new)


def line_of(text, fragment):
    lines = text.splitlines()
    hits = [i for i, line in enumerate(lines, 1) if line.strip() == fragment]
    hits = hits or [i for i, line in enumerate(lines, 1) if fragment in line]
    assert len(hits) == 1, fragment
    return hits[0]


# --------------------------------------------------------------------------- parsing

def test_base_parses_with_defaults():
    spec = parse_network(BASE, "t.znn")
    assert isinstance(spec, NetworkSpec)
    assert list(spec.nodes) == ["input", "out"] and list(spec.edges) == ["conv1"]
    assert spec.inputs() == ["input"] and spec.outputs() == ["out"]
    e = spec.edges["conv1"]
    assert isinstance(e, EdgeSpec)
    assert (e.type, e.input, e.output, e.size) == ("conv", "input", "out", (1, 3, 3))
    assert e.stride == (1, 1, 1) and e.repeat == (1, 1, 1) and e.fft is None
    assert e.init == "uniform" and e.init_args == (-0.1, 0.1)
    assert e.ratio == 0.5 and e.offset is None and e.line == 5 and e.seeding is True
    n = spec.nodes["out"]
    assert isinstance(n, NodeSpec)
    assert (n.type, n.size, n.function, n.function_args) == ("transfer", 2, "linear", (1.0, 0.0))
    assert n.init is None and n.init_args == () and n.dense is False and n.seeding is True
    assert n.line == 12
    assert n.options == {"type": "transfer", "function": "linear", "size": "2"}
    assert spec.nodes["input"].function is None


def test_comments_whole_line_and_trailing():
    text = "# a header\n\n" + sub("size 1,3,3", "size 1,3,3   # kernel z,y,x")
    text = sub("nodes out", "  # nothing here\nnodes out # the output", text)
    spec = parse_network(text, "t.znn")
    assert spec.edges["conv1"].size == (1, 3, 3)
    assert spec.nodes["out"].line == line_of(text, "nodes out")
    assert "#" not in spec.edges["conv1"].options


@pytest.mark.parametrize("args, expected", [
    ("", (1.0, 0.0)), ("function_args 2", (2.0, 0.0)), ("function_args 2,-1", (2.0, -1.0))])
def test_linear_function_args(args, expected):
    spec = parse_network(sub("function linear", "function linear\n" + args), "t.znn")
    assert spec.nodes["out"].function_args == expected


def test_tanh_default_and_given_args():
    spec = parse_network(sub("function linear", "function tanh"), "t.znn")
    assert spec.nodes["out"].function_args == (1.0, 1.0)
    spec = parse_network(sub("function linear", "function tanh\nfunction_args 1.7159,0.6666"))
    assert spec.nodes["out"].function_args == (1.7159, 0.6666)


@pytest.mark.parametrize("init, expected", [
    ("uniform", (-0.1, 0.1)), ("uniform\ninit_args 0.05", (-0.05, 0.05)),
    ("uniform\ninit_args -1,2", (-1.0, 2.0)), ("gaussian", (0.0, 0.01)),
    ("gaussian\ninit_args 1,2", (1.0, 2.0)), ("bernoulli", (0.5,)),
    ("constant\ninit_args 3", (3.0,)), ("zero", ()), ("xavier", ()), ("msra", ())])
def test_edge_init_args(init, expected):
    spec = parse_network(sub("init uniform", "init " + init), "t.znn")
    assert spec.edges["conv1"].init == init.split()[0]
    assert spec.edges["conv1"].init_args == expected


def test_conv_without_init_is_allowed():
    spec = parse_network(sub("init uniform\n", ""), "t.znn")
    assert spec.edges["conv1"].init is None and spec.edges["conv1"].init_args == ()


def test_node_bias_init_and_options():
    text = sub("size 2\n", "size 2\ninit constant\ninit_args 0.5\neta 0.01\nmomentum 0.9\n"
               "weight_decay 0\ndense 1\n")
    n = parse_network(text, "t.znn").nodes["out"]
    assert n.init == "constant" and n.init_args == (0.5,) and n.dense is True
    assert n.options["eta"] == "0.01" and n.options["momentum"] == "0.9"


@pytest.mark.parametrize("opt", ["seeding 0", "load 0"])
def test_seeding_off(opt):
    text = sub("size 2\n", "size 2\n" + opt + "\n")
    text = sub("output out\n", "output out\n" + opt + "\n", text)
    spec = parse_network(text, "t.znn")
    assert spec.nodes["out"].seeding is False and spec.edges["conv1"].seeding is False
    assert spec.nodes["input"].seeding is True


def test_conv_options():
    text = sub("size 1,3,3", "size 2,4,6\nstride 1,2,2\nrepeat 1,2,3\nfft 1")
    e = parse_network(text, "t.znn").edges["conv1"]
    assert e.size == (2, 4, 6) and e.stride == (1, 2, 2) and e.repeat == (1, 2, 3)
    assert e.fft is True
    assert parse_network(sub("size 1,3,3", "size 1,3,3\nfft 0")).edges["conv1"].fft is False


def one_to_one(edge_lines, node_type="sum"):
    return BASE + (f"\nedges e2\n{edge_lines}\ninput out\noutput n2\n\n"
                   f"nodes n2\ntype {node_type}\nsize 2\n")


def test_one_to_one_edges():
    spec = parse_network(one_to_one("type max_filter\nsize 1,2,2\nstride 1,2,2"))
    e = spec.edges["e2"]
    assert (e.type, e.size, e.stride, e.init) == ("max_filter", (1, 2, 2), (1, 2, 2), None)
    e = parse_network(one_to_one("type max_pool\nsize 1,2,2\nstride 1,2,2")).edges["e2"]
    assert e.size == (1, 2, 2) and e.stride == (1, 1, 1)
    e = parse_network(one_to_one("type dropout\nratio 0.8")).edges["e2"]
    assert e.ratio == 0.8 and e.size is None
    e = parse_network(one_to_one("type crop\noffset 0,1,2")).edges["e2"]
    assert e.offset == (0, 1, 2)
    e = parse_network(one_to_one("type dummy")).edges["e2"]
    assert e.type == "dummy" and spec.outputs() == ["n2"]


def test_maxout_and_sum_nodes():
    text = BASE + ("\nedges m1\ntype maxout\ninput out\noutput mx\n"
                   "\nedges m2\ntype maxout\ninput s\noutput mx\n"
                   "\nedges d\ntype dummy\ninput out\noutput s\n"
                   "\nnodes s\ntype sum\nfunction rectify_linear\nsize 2\n"
                   "\nnodes mx\ntype maxout\nsize 2\n")
    spec = parse_network(text, "t.znn")
    assert spec.outputs() == ["mx"]
    s = spec.nodes["s"]
    assert s.function is None and s.function_args == ()
    assert s.options["function"] == "rectify_linear"


def test_two_inputs_and_outputs_in_file_order():
    text = "nodes b\ntype input\nsize 1\n\n" + BASE + (
        "\nedges e2\ntype conv\nsize 1,1,1\ninput b\noutput o2\n\nnodes o2\ntype sum\nsize 1\n")
    spec = parse_network(text)
    assert spec.inputs() == ["b", "input"] and spec.outputs() == ["out", "o2"]
    assert spec.path == "<string>"


def test_read_network_file(tmp_path):
    p = tmp_path / "net.znn"
    p.write_text(BASE)
    spec = read_network(p)
    assert spec.path == str(p) and spec.outputs() == ["out"]


def test_read_network_missing(tmp_path):
    p = tmp_path / "missing.znn"
    with pytest.raises(SpecError, match=r"missing\.znn: cannot read"):
        read_network(p)


# --------------------------------------------------------------------------- errors

BAD = {
    # name: (text, fragment of the offending line, key, fragment of the message)
    "key_before_object": ("size 3\n" + BASE, "size 3", "size", "before the first"),
    "duplicate_object": (BASE + "\nedges out\ntype dummy\ninput out\noutput out\n",
                         "edges out", "edges", "duplicate object name in 'edges out'"),
    "extra_tokens": (sub("function linear", "function linear 2"), "function linear 2",
                     "function", "single token"),
    "spaced_vector": (sub("size 1,3,3", "size 1, 3, 3"), "size 1, 3, 3", "size",
                      "single token"),
    "missing_value": (sub("size 1,3,3", "size"), "size", "size", "needs a value"),
    "missing_name": (sub("nodes out", "nodes"), "nodes", "nodes", "needs an object name"),
    "unknown_key": (sub("size 1,3,3", "sise 1,3,3"), "sise", "sise", "did you mean 'size'"),
    "duplicate_key": (sub("size 2\n", "size 2\nsize 3\n"), "size 3", "size", "duplicate key"),
    "unknown_node_type": (sub("type transfer", "type transfr"), "transfr", "type",
                          "did you mean 'transfer'"),
    "unknown_edge_type": (sub("type conv", "type convv"), "convv", "type",
                          "did you mean 'conv'"),
    "unknown_function": (sub("function linear", "function relu"), "relu", "function",
                         "did you mean 'rectify_linear'"),
    "unknown_init": (sub("init uniform", "init unifrm"), "unifrm", "init",
                     "did you mean 'uniform'"),
    "xavier_on_node": (sub("size 2\n", "size 2\ninit xavier\n"), "init xavier", "init",
                       "not allowed"),
    "missing_type": (sub("type transfer\n", ""), "nodes out", "type", "needs the key"),
    "missing_size": (sub("size 2\n", ""), "nodes out", "size", "needs the key"),
    "missing_function": (sub("function linear\n", ""), "nodes out", "function",
                         "needs the key"),
    "missing_input": (sub("input input\n", ""), "edges conv1", "input", "needs the key"),
    "missing_conv_size": (sub("size 1,3,3\n", ""), "edges conv1", "size", "needs the key"),
    "missing_mf_stride": (one_to_one("type max_filter\nsize 1,2,2"), "edges e2", "stride",
                          "needs the key"),
    "missing_crop_offset": (one_to_one("type crop"), "edges e2", "offset", "needs the key"),
    "constant_needs_args": (sub("init uniform", "init constant"), "init constant", "init_args",
                            "needs 'init_args'"),
    "init_args_count": (sub("init uniform", "init gaussian\ninit_args 1"), "init_args 1",
                        "init_args", "takes 2 values"),
    "init_args_for_xavier": (sub("init uniform", "init xavier\ninit_args 1"), "init_args 1",
                             "init_args", "takes no 'init_args'"),
    "init_args_without_init": (sub("init uniform", "init_args 1"), "init_args 1", "init_args",
                               "without 'init'"),
    "function_args_count": (sub("function linear", "function tanh\nfunction_args 1"),
                            "function_args 1", "function_args", "takes 2 values"),
    "function_args_for_relu": (sub("function linear", "function rectify_linear\n"
                                   "function_args 1"), "function_args 1", "function_args",
                               "takes no 'function_args'"),
    "bad_number": (sub("function linear", "function linear\nfunction_args 1,x"),
                   "function_args 1,x", "function_args", "numbers"),
    "vector_too_short": (sub("size 1,3,3", "size 3,3"), "size 3,3", "size", "exactly 3"),
    "vector_too_long": (sub("size 1,3,3", "size 1,3,3,3"), "size 1,3,3,3", "size", "exactly 3"),
    "vector_not_int": (sub("size 1,3,3", "size 1,3.5,3"), "size 1,3.5,3", "size", "integers"),
    "vector_zero": (sub("size 1,3,3", "size 0,3,3"), "size 0,3,3", "size", ">= 1"),
    "negative_offset": (one_to_one("type crop\noffset 0,-1,1"), "offset 0,-1,1", "offset",
                        ">= 0"),
    "node_size_zero": (sub("size 2\n", "size 0\n"), "size 0", "size", ">= 1"),
    "node_size_not_int": (sub("size 2\n", "size 2.0\n"), "size 2.0", "size", "integer"),
    "repeat_not_divisor": (sub("size 1,3,3", "size 1,3,3\nrepeat 1,2,2"), "repeat 1,2,2",
                           "repeat", "not divisible"),
    "ratio_out_of_range": (one_to_one("type dropout\nratio 1.5"), "ratio 1.5", "ratio",
                           "(0, 1]"),
    "bad_flag": (sub("size 1,3,3", "size 1,3,3\nfft yes"), "fft yes", "fft", "0 or 1"),
    "bad_eta": (sub("size 2\n", "size 2\neta fast\n"), "eta fast", "eta", "number"),
    # graph-level errors point at the offending object's declaration
    "missing_node": (sub("output out", "output ot"), "edges conv1", "output",
                     "'ot' does not exist (did you mean 'out'"),
    "input_with_incoming": (BASE + "\nedges back\ntype conv\nsize 1,1,1\ninput out\n"
                            "output input\n", "nodes input", "type", "incoming edge ('back')"),
    "no_incoming": (BASE + "\nnodes lost\ntype sum\nsize 2\n", "nodes lost", "type",
                    "no incoming edge"),
    "unused_input": ("nodes extra\ntype input\nsize 1\n\n" + BASE, "nodes extra", "type",
                     "not the input of any edge"),
    "no_input": (sub("type input", "type sum"), "nodes input", "type", "no node group of"),
    "cycle": (BASE + "\nedges e2\ntype conv\nsize 1,1,1\ninput out\noutput n2\n\nnodes n2\n"
              "type sum\nsize 2\n\nedges e3\ntype conv\nsize 1,1,1\ninput n2\noutput out\n",
              "edges e3", "output", "cycle: e2 -> e3"),
    "one_to_one_sizes": (BASE + "\nedges d\ntype dummy\ninput out\noutput n3\n\nnodes n3\n"
                         "type sum\nsize 3\n", "edges d", "size", "one-to-one"),
    "maxout_into_sum": (one_to_one("type maxout"), "edges e2", "output",
                        "must be a maxout node group"),
    "conv_into_maxout": (BASE + "\nedges e2\ntype conv\nsize 1,1,1\ninput out\noutput mx\n\n"
                         "nodes mx\ntype maxout\nsize 2\n", "edges e2", "type",
                         "takes only maxout edges"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_network(case):
    text, where, key, fragment = BAD[case]
    line = line_of(text, where)
    with pytest.raises(SpecError) as info:
        parse_network(text, "bad.znn")
    msg = str(info.value)
    assert msg.startswith(f"bad.znn:{line}: "), msg
    assert f"'{key}'" in msg or f"{key} " in msg, msg
    assert fragment in msg, msg
    assert info.value.line == line and info.value.key == key and info.value.path == "bad.znn"


# --------------------------------------------------------------------------- bundled networks

FOV = {"N4": (1, 95, 95), "N4_A": (1, 95, 95), "N4_even": (1, 94, 94),
       "N4_A_even": (1, 94, 94), "VD2D": (1, 109, 109), "VD2D_tanh": (1, 109, 109),
       "VD2D3D": (5, 85, 85), "W5_C10_P3_D2": (1, 99, 99), "srini2d": (1, 37, 37),
       "zinet": (37, 37, 37), "net3d_3": (32, 32, 32), "net3d_5": (32, 32, 32),
       "net3d_7": (46, 46, 46), "tiny2d": (1, 8, 8),
       "tiny3d": (7, 8, 8), "demo2d": (1, 25, 25)}
OUTPUTS = {"N4": (2, "linear"), "N4_A": (3, "forward_logistics"), "N4_even": (2, "linear"),
           "N4_A_even": (3, "forward_logistics"), "VD2D": (2, "linear"),
           "VD2D_tanh": (2, "linear"), "VD2D3D": (2, "linear"), "W5_C10_P3_D2": (2, "linear"),
           "srini2d": (2, "linear"), "zinet": (1, "rectify_linear"),
           "net3d_3": (3, "forward_logistics"), "net3d_5": (3, "forward_logistics"),
           "net3d_7": (3, "forward_logistics"), "tiny2d": (2, "linear"),
           "tiny3d": (3, "forward_logistics"), "demo2d": (2, "linear")}


def fov_by_paths(spec):
    """1 + sum over a path of (size - 1) * sparsity of the edge's input; max over all paths."""
    out_edges = {n: [e for e in spec.edges.values() if e.input == n] for n in spec.nodes}
    best = [1, 1, 1]

    def walk(node, sparsity, acc):
        if spec.nodes[node].dense:
            sparsity = (1, 1, 1)
        if not out_edges[node]:
            for d in range(3):
                best[d] = max(best[d], 1 + acc[d])
        for e in out_edges[node]:
            grow, nxt = acc, sparsity
            if e.type in ("conv", "max_filter"):
                grow = [acc[d] + (e.size[d] - 1) * sparsity[d] for d in range(3)]
                nxt = tuple(sparsity[d] * e.stride[d] for d in range(3))
            walk(e.output, nxt, grow)

    for name in spec.inputs():
        walk(name, (1, 1, 1), [0, 0, 0])
    return tuple(best)


def fov_by_strides(spec):
    """The original's backward form: fov_in = (fov_out - 1) * stride + size, max at joins."""
    fov = {n: (1, 1, 1) for n in spec.outputs()}
    pending = set(spec.nodes) - set(fov)
    while pending:
        for n in sorted(pending):
            outs = [e for e in spec.edges.values() if e.input == n]
            if all(e.output in fov for e in outs):
                cands = []
                for e in outs:
                    f = fov[e.output]
                    if e.type in ("conv", "max_filter"):
                        f = tuple((f[d] - 1) * e.stride[d] + e.size[d] for d in range(3))
                    cands.append(f)
                fov[n] = tuple(max(c[d] for c in cands) for d in range(3))
                pending.discard(n)
    return tuple(max(fov[i][d] for i in spec.inputs()) for d in range(3))


def test_bundled_networks_are_all_listed():
    assert sorted(p.stem for p in NETWORKS.glob("*.znn")) == sorted(FOV)


@pytest.mark.parametrize("name", sorted(FOV))
def test_bundled_network(name):
    path = NETWORKS / f"{name}.znn"
    text = path.read_text()
    assert text.startswith("# ") and "FOV" in text.split("\n\n")[0]
    spec = read_network(path)
    assert spec.outputs() == ["output"]
    assert spec.inputs() == (["input", "input-r"] if name == "VD2D3D" else ["input"])
    out = spec.nodes["output"]
    assert (out.size, out.function) == OUTPUTS[name]
    assert fov_by_paths(spec) == FOV[name]
    assert fov_by_strides(spec) == FOV[name]
    fov = "x".join(map(str, FOV[name]))
    assert f"{fov}" in text.split("\n\n")[0]


def test_n4_layers():
    spec = read_network(NETWORKS / "N4.znn")
    convs = [e for e in spec.edges.values() if e.type == "conv"]
    assert [e.size[1] for e in convs] == [4, 5, 4, 4, 3, 1]
    assert all(e.init == "xavier" for e in convs)
    assert [spec.nodes[e.output].size for e in convs] == [48, 48, 48, 48, 200, 2]
    pools = [e for e in spec.edges.values() if e.type == "max_filter"]
    assert len(pools) == 4 and all(e.stride == (1, 2, 2) for e in pools)


def test_vd2d3d_structure():
    spec = read_network(NETWORKS / "VD2D3D.znn")
    assert spec.edges["conv1c"].output == spec.edges["conv1c-r"].output == "nconv1c"
    assert spec.edges["pool3"].size == (2, 2, 2) and spec.edges["pool3"].stride == (1, 2, 2)
    assert not spec.edges["conv4a"].seeding and not spec.nodes["output"].seeding
    assert spec.edges["conv4c"].seeding and spec.edges["dropout"].ratio == 0.5
