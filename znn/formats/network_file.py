"""Parser and validator for `.znn` network description files."""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass

from znn.errors import SpecError

NODE_TYPES = ("input", "sum", "transfer", "maxout")
EDGE_TYPES = ("conv", "max_filter", "max_pool", "dropout", "crop", "maxout", "dummy")
FUNCTIONS = ("linear", "rectify_linear", "tanh", "logistics", "forward_logistics", "soft_sign")
INITS = ("zero", "constant", "uniform", "gaussian", "bernoulli", "xavier", "msra")
NODE_INITS = ("zero", "constant", "uniform", "gaussian", "bernoulli")

NODE_KEYS = ("type", "size", "function", "function_args", "init", "init_args", "dense",
             "seeding", "load", "eta", "momentum", "weight_decay")
EDGE_KEYS = ("type", "input", "output", "size", "stride", "init", "init_args", "fft", "repeat",
             "ratio", "offset", "eta", "momentum", "weight_decay", "load", "seeding")

# Edge types whose output map i is computed from input map i only.
ONE_TO_ONE = tuple(t for t in EDGE_TYPES if t != "conv")


@dataclass(frozen=True)
class NodeSpec:
    """One node group (a set of `size` feature maps)."""

    name: str
    type: str
    size: int
    function: str | None
    function_args: tuple[float, ...]
    init: str | None
    init_args: tuple[float, ...]
    dense: bool
    seeding: bool
    options: dict[str, str]
    line: int


@dataclass(frozen=True)
class EdgeSpec:
    """One edge group between two node groups."""

    name: str
    type: str
    input: str
    output: str
    size: tuple[int, int, int] | None
    stride: tuple[int, int, int]
    init: str | None
    init_args: tuple[float, ...]
    fft: bool | None
    repeat: tuple[int, int, int]
    ratio: float
    offset: tuple[int, int, int] | None
    options: dict[str, str]
    line: int
    seeding: bool = True  # `seeding 0` / `load 0`: keep this layer's own init when seeding


@dataclass(frozen=True)
class NetworkSpec:
    """A parsed and validated network: node and edge groups in file order."""

    path: str
    nodes: dict[str, NodeSpec]
    edges: dict[str, EdgeSpec]

    def inputs(self) -> list[str]:
        """Names of the node groups of type `input`, in file order."""
        return [n for n, s in self.nodes.items() if s.type == "input"]

    def outputs(self) -> list[str]:
        """Names of the node groups with no outgoing edge, in file order."""
        sources = {e.input for e in self.edges.values()}
        return [n for n in self.nodes if n not in sources]


_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _float(text):
    """A finite decimal number, or None (no nan/inf/underscores)."""
    return float(text) if _FLOAT.fullmatch(text) else None


# Common names from other frameworks, suggested when difflib finds nothing close.
_ALIASES = {"relu": "rectify_linear", "sigmoid": "logistics", "softsign": "soft_sign",
            "identity": "linear", "he": "msra", "glorot": "xavier", "normal": "gaussian"}


def _suggest(word, choices):
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close and _ALIASES.get(word.lower()) in choices:
        close = [_ALIASES[word.lower()]]
    return f" (did you mean '{close[0]}'?)" if close else ""


class _Object:
    """Raw `key value` lines of one object, with the line of each key."""

    def __init__(self, kind, name, line):
        self.kind, self.name, self.line = kind, name, line
        self.values: dict[str, str] = {}
        self.lines: dict[str, int] = {}

    @property
    def what(self):
        return f"{self.kind} '{self.name}'"


def _lex(text, path):
    """Split the text into objects; raises SpecError on every lexical problem."""
    objects: list[_Object] = []
    seen: dict[str, _Object] = {}
    current = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0]
        tokens = line.split()
        if not tokens:
            continue
        key = tokens[0]
        if len(tokens) == 1:
            what = "an object name" if key in ("nodes", "edges") else "a value"
            raise SpecError(f"'{key}' needs {what}", path=path, line=lineno, key=key)
        if len(tokens) > 2:
            raise SpecError(
                f"value of '{key}' must be a single token (no spaces), "
                f"got {' '.join(tokens[1:])!r}",
                path=path, line=lineno, key=key)
        value = tokens[1]
        if key in ("nodes", "edges"):
            if value in seen:
                first = seen[value]
                raise SpecError(
                    f"duplicate object name in '{key} {value}' (already declared by "
                    f"'{first.kind} {value}' on line {first.line})", path=path, line=lineno,
                    key=key)
            current = _Object(key, value, lineno)
            seen[value] = current
            objects.append(current)
            continue
        if current is None:
            raise SpecError(f"key '{key}' appears before the first 'nodes' or 'edges' line",
                            path=path, line=lineno, key=key)
        allowed = NODE_KEYS if current.kind == "nodes" else EDGE_KEYS
        if key not in allowed:
            raise SpecError(f"unknown key '{key}' in {current.what}" + _suggest(key, allowed),
                            path=path, line=lineno, key=key)
        if key in current.values:
            raise SpecError(f"duplicate key '{key}' in {current.what} (first given on line "
                            f"{current.lines[key]})", path=path, line=lineno, key=key)
        current.values[key] = value
        current.lines[key] = lineno
    return objects


class _Reader:
    """Typed access to the values of one object, raising SpecError at the key's line."""

    def __init__(self, obj, path):
        self.obj, self.path = obj, path

    def fail(self, key, message):
        line = self.obj.lines.get(key, self.obj.line)
        raise SpecError(message, path=self.path, line=line, key=key)

    def has(self, key):
        return key in self.obj.values

    def raw(self, key, default=None):
        return self.obj.values.get(key, default)

    def required(self, key):
        if key not in self.obj.values:
            raise SpecError(f"{self.obj.what} needs the key '{key}'", path=self.path,
                            line=self.obj.line, key=key)
        return self.obj.values[key]

    def choice(self, key, choices, what):
        value = self.raw(key)
        if value is not None and value not in choices:
            self.fail(key, f"unknown {what} '{value}' for '{key}' of {self.obj.what}"
                      + _suggest(value, choices) + f"; valid: {', '.join(choices)}")
        return value

    def integer(self, key, minimum):
        value = self.required(key)
        if not _INT.fullmatch(value):
            self.fail(key, f"'{key}' of {self.obj.what} must be an integer, got '{value}'")
        number = int(value)
        if number < minimum:
            self.fail(key, f"'{key}' of {self.obj.what} must be >= {minimum}, got {number}")
        return number

    def real(self, key, default):
        value = self.raw(key)
        if value is None:
            return default
        number = _float(value)
        if number is None:
            self.fail(key, f"'{key}' of {self.obj.what} must be a number, got '{value}'")
        return number

    def flag(self, key, default):
        value = self.raw(key)
        if value is None:
            return default
        if value not in ("0", "1"):
            self.fail(key, f"'{key}' of {self.obj.what} must be 0 or 1, got '{value}'")
        return value == "1"

    def reals(self, key):
        value = self.raw(key)
        if value is None:
            return None
        numbers = tuple(_float(v) for v in value.split(","))
        if None in numbers:
            self.fail(key, f"'{key}' of {self.obj.what} must be comma-separated numbers, "
                      f"got '{value}'")
        return numbers

    def vec3(self, key, minimum, default=None):
        value = self.raw(key)
        if value is None:
            return default
        parts = value.split(",")
        if not all(_INT.fullmatch(p) for p in parts):
            self.fail(key, f"'{key}' of {self.obj.what} must be 3 comma-separated integers "
                      f"z,y,x, got '{value}'")
        vec = tuple(int(p) for p in parts)
        if len(vec) != 3:
            self.fail(key, f"'{key}' of {self.obj.what} must have exactly 3 components z,y,x, "
                      f"got {len(vec)} in '{value}'")
        if min(vec) < minimum:
            self.fail(key, f"components of '{key}' of {self.obj.what} must be >= {minimum}, "
                      f"got '{value}'")
        return vec


# Default arguments and allowed argument counts of transfer functions and initializers.
_FUNCTION_ARGS = {"linear": ((1.0, 0.0), (1, 2)), "tanh": ((1.0, 1.0), (2,))}
_INIT_ARGS = {"uniform": ((-0.1, 0.1), (1, 2)), "gaussian": ((0.0, 0.01), (2,)),
              "bernoulli": ((0.5,), (1,)), "constant": (None, (1,))}


def _function_args(rd, function):
    given = rd.reals("function_args")
    default, counts = _FUNCTION_ARGS.get(function, ((), (0,)))
    if given is None:
        return default
    if len(given) not in counts:
        if counts == (0,):
            rd.fail("function_args", f"function '{function}' takes no 'function_args'")
        rd.fail("function_args", f"function '{function}' takes {' or '.join(map(str, counts))} "
                f"values in 'function_args', got {len(given)}")
    if function == "linear" and len(given) == 1:
        return (given[0], 0.0)
    return given


def _init(rd, allowed):
    init = rd.choice("init", INITS, "init")
    if init is not None and init not in allowed:
        rd.fail("init", f"init '{init}' is not allowed on {rd.obj.what}: it needs a fan-in; "
                f"use one of {', '.join(allowed)}")
    given = rd.reals("init_args")
    if init is None:
        if given is not None:
            rd.fail("init_args", f"'init_args' given without 'init' in {rd.obj.what}")
        return None, ()
    default, counts = _INIT_ARGS.get(init, ((), (0,)))
    if given is None:
        if default is None:
            raise SpecError(f"init '{init}' of {rd.obj.what} needs 'init_args'", path=rd.path,
                            line=rd.obj.lines["init"], key="init_args")
        return init, default
    if len(given) not in counts:
        if counts == (0,):
            rd.fail("init_args", f"init '{init}' takes no 'init_args'")
        rd.fail("init_args", f"init '{init}' takes {' or '.join(map(str, counts))} values in "
                f"'init_args', got {len(given)}")
    if init == "uniform":
        if len(given) == 1:
            given = (-abs(given[0]), abs(given[0]))
        if given[0] > given[1]:
            rd.fail("init_args", f"uniform init_args lo,hi need lo <= hi, got {given}")
    if init == "gaussian" and given[1] < 0:
        rd.fail("init_args", f"gaussian init_args mean,sigma need sigma >= 0, got {given}")
    if init == "bernoulli" and not 0.0 <= given[0] <= 1.0:
        rd.fail("init_args", f"bernoulli init_args p must be in [0,1], got {given[0]}")
    return init, given


def _check_options(rd):
    for key in ("eta", "momentum", "weight_decay"):
        rd.real(key, None)
    seeding, load = rd.flag("seeding", True), rd.flag("load", True)
    return seeding and load


def _node(obj, path):
    rd = _Reader(obj, path)
    ntype = rd.choice("type", NODE_TYPES, "nodes type")
    if ntype is None:
        rd.required("type")
    size = rd.integer("size", 1)
    function = rd.choice("function", FUNCTIONS, "function")
    if ntype == "transfer":
        if function is None:
            rd.required("function")
        function_args = _function_args(rd, function)
        init, init_args = _init(rd, NODE_INITS)
    else:
        # The original ignores function/init on non-transfer nodes (W5_C10_P3_D2 has
        # `function rectify_linear` on sum nodes); check the syntax, keep them in options only.
        if function is not None:
            _function_args(rd, function)
        else:
            rd.reals("function_args")
        _init(rd, NODE_INITS)
        function, function_args, init, init_args = None, (), None, ()
    dense = rd.flag("dense", False)
    seeding = _check_options(rd)
    return NodeSpec(name=obj.name, type=ntype, size=size, function=function,
                    function_args=function_args, init=init, init_args=init_args, dense=dense,
                    seeding=seeding, options=dict(obj.values), line=obj.line)


def _edge(obj, path):
    rd = _Reader(obj, path)
    etype = rd.choice("type", EDGE_TYPES, "edges type")
    if etype is None:
        rd.required("type")
    src, dst = rd.required("input"), rd.required("output")
    size = rd.vec3("size", 1)
    stride = rd.vec3("stride", 1, (1, 1, 1))
    repeat = rd.vec3("repeat", 1, (1, 1, 1))
    offset = rd.vec3("offset", 0)
    ratio = rd.real("ratio", 0.5)
    fft = rd.flag("fft", None)
    init, init_args = _init(rd, INITS)
    if etype in ("conv", "max_filter", "max_pool") and size is None:
        rd.required("size")
    if etype == "max_filter" and not rd.has("stride"):
        rd.required("stride")
    if etype == "crop" and offset is None:
        rd.required("offset")
    if etype == "dropout" and not 0.0 < ratio <= 1.0:
        rd.fail("ratio", f"'ratio' (keep probability) of {obj.what} must be in (0, 1], "
                f"got {ratio}")
    if etype == "conv":
        bad = [k for k in range(3) if size[k] % repeat[k]]
        if bad:
            rd.fail("repeat", f"'size' {size} of {obj.what} is not divisible by 'repeat' "
                    f"{repeat}")
    else:
        # Options that only a conv edge uses are accepted (the original ignored them) but unused.
        fft, repeat, init, init_args = None, (1, 1, 1), None, ()
    if etype not in ("conv", "max_filter", "max_pool"):
        size = None
    if etype not in ("conv", "max_filter"):
        stride = (1, 1, 1)
    if etype != "crop":
        offset = None
    if etype != "dropout":
        ratio = 0.5
    seeding = _check_options(rd)
    return EdgeSpec(name=obj.name, type=etype, input=src, output=dst, size=size, stride=stride,
                    init=init, init_args=init_args, fft=fft, repeat=repeat, ratio=ratio,
                    offset=offset, options=dict(obj.values), line=obj.line, seeding=seeding)


def _validate_graph(nodes, edges, path):
    def fail(obj, message, key=None):
        raise SpecError(message, path=path, line=obj.line, key=key)

    incoming = {n: [] for n in nodes}
    outgoing = {n: [] for n in nodes}
    for e in edges.values():
        for key, name in (("input", e.input), ("output", e.output)):
            if name not in nodes:
                fail(e, f"edges '{e.name}': {key} node group '{name}' does not exist"
                     + _suggest(name, list(nodes)), key)
        outgoing[e.input].append(e)
        incoming[e.output].append(e)
    if not any(n.type == "input" for n in nodes.values()):
        first = min((o.line for o in (*nodes.values(), *edges.values())), default=None)
        raise SpecError("the network has no node group of 'type' input", path=path, line=first,
                        key="type")
    for n in nodes.values():
        if n.type == "input" and incoming[n.name]:
            fail(n, f"nodes '{n.name}' of type input has an incoming edge "
                 f"('{incoming[n.name][0].name}')", "type")
        if n.type == "input" and not outgoing[n.name]:
            fail(n, f"nodes '{n.name}' of type input is not the input of any edge", "type")
        if n.type != "input" and not incoming[n.name]:
            fail(n, f"nodes '{n.name}' has no incoming edge (only 'type' input may have none)",
                 "type")
    for e in edges.values():
        src, dst = nodes[e.input], nodes[e.output]
        if e.type in ONE_TO_ONE and src.size != dst.size:
            fail(e, f"{e.type} edges '{e.name}' is one-to-one but connects '{src.name}' "
                 f"(size {src.size}) to '{dst.name}' (size {dst.size})", "size")
        if e.type == "maxout" and dst.type != "maxout":
            fail(e, f"'output' of maxout edges '{e.name}' must be a maxout node group, "
                 f"'{dst.name}' is {dst.type}", "output")
        if dst.type == "maxout" and e.type != "maxout":
            fail(e, f"edges '{e.name}' has 'type' {e.type} but ends in maxout nodes "
                 f"'{dst.name}', which takes only maxout edges", "type")
    _check_acyclic(nodes, outgoing, fail)


def _check_acyclic(nodes, outgoing, fail):
    state = dict.fromkeys(nodes, 0)  # 0 unseen, 1 on the current path, 2 done
    for root in nodes:
        if state[root]:
            continue
        state[root] = 1
        path_edges = []
        stack = [(root, iter(outgoing[root]))]
        while stack:
            node, it = stack[-1]
            edge = next(it, None)
            if edge is None:
                state[node] = 2
                stack.pop()
                if path_edges:
                    path_edges.pop()
                continue
            nxt = edge.output
            if state[nxt] == 1:
                start = [i for i, (n, _) in enumerate(stack) if n == nxt][0]
                cycle = [e.name for e in path_edges[start:]] + [edge.name]
                fail(edge, f"'output' {nxt} of edges '{edge.name}' closes a cycle: "
                     f"{' -> '.join(cycle)}", "output")
            if state[nxt] == 0:
                state[nxt] = 1
                path_edges.append(edge)
                stack.append((nxt, iter(outgoing[nxt])))


def parse_network(text: str, path: str = "<string>") -> NetworkSpec:
    """Parse and validate the text of a `.znn` file.

    Parameters
    ----------
    text : str
        The file contents.
    path : str
        Name used in error messages.

    Returns
    -------
    NetworkSpec

    Raises
    ------
    SpecError
        With "path:line: message" for any lexical, value or graph error.
    """
    nodes, edges = {}, {}
    for obj in _lex(text, path):
        if obj.kind == "nodes":
            nodes[obj.name] = _node(obj, path)
        else:
            edges[obj.name] = _edge(obj, path)
    _validate_graph(nodes, edges, path)
    return NetworkSpec(path=path, nodes=nodes, edges=edges)


def read_network(path) -> NetworkSpec:
    """Read, parse and validate a `.znn` file (see `parse_network`)."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SpecError(f"cannot read network file: {reason}", path=name) from exc
    return parse_network(text, name)
