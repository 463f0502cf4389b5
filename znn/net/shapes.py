"""Geometry of a network: sparsity (dilation) propagation, feature-map sizes, field of view."""
from __future__ import annotations

from graphlib import CycleError, TopologicalSorter

from znn.errors import SpecError

ONE = (1, 1, 1)

# Edge types whose `size` slides over the input (output = input - (size-1)*dilation).
SLIDING = ("conv", "max_filter")


def fast_fft_length(n):
    """Smallest m >= n whose prime factors are all 2, 3, 5 or 7 (MKL's fast DFT lengths).

    Zero-padding a map to such a length leaves the valid convolution exact (the cropped
    windows never see the wrap-around) and makes the transforms 3-13x faster than for
    lengths with a large prime factor (measured: 47^3 113 ms vs 48^3 9 ms for 48 maps).
    """
    m = max(1, int(n))
    while True:
        r = m
        for p in (2, 3, 5, 7):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def fast_fft_shape(size):
    return tuple(fast_fft_length(n) for n in size)


def mul(a, b):
    return tuple(int(x) * int(y) for x, y in zip(a, b))


def topological_order(spec):
    """Node names in an order where every edge goes from an earlier to a later node."""
    sorter = TopologicalSorter({name: set() for name in spec.nodes})
    for e in spec.edges.values():
        sorter.add(e.output, e.input)
    try:
        order = list(sorter.static_order())
    except CycleError as exc:  # the parser checks this too; keep the engine safe on its own
        raise SpecError(f"the network has a cycle through {exc.args[1]}", spec.path) from None
    # Stable: among ready nodes prefer file order (static_order is deterministic already).
    return order


def _where(spec, obj):
    return dict(path=spec.path, line=getattr(obj, "line", None))


def sparsity(spec, order=None):
    """Dict node -> (z, y, x) sparsity; every conv/max_filter edge runs dilated by its input's.

    s(input) = 1; s(e.output) = s(e.input) * stride_e for conv/max_filter edges, s(e.input)
    otherwise; a node with `dense 1` is reset to 1.  Two paths that disagree are an error
    (the original silently kept the first).
    """
    order = order or topological_order(spec)
    s = {}
    for name in order:
        node = spec.nodes[name]
        if node.type == "input" or name not in s:
            s.setdefault(name, ONE)
        if getattr(node, "dense", False):
            s[name] = ONE
        for e in (e for e in spec.edges.values() if e.input == name):
            step = tuple(e.stride) if e.type in SLIDING else ONE
            value = mul(s[name], step)
            if e.output in s and s[e.output] != value:
                raise SpecError(
                    f"edges into node group '{e.output}' imply different sparsities "
                    f"{s[e.output]} and {value} (edge '{e.name}')", key="stride", **_where(spec, e))
            s[e.output] = value
    return s


def edge_input_size(edge, out_size, dilation):
    """Input feature-map size an edge needs to produce `out_size`."""
    if edge.type in SLIDING:
        return tuple(o + (k - 1) * d for o, k, d in zip(out_size, edge.size, dilation))
    if edge.type == "max_pool":
        return mul(edge.size, out_size)
    if edge.type == "crop":
        return tuple(o + 2 * c for o, c in zip(out_size, edge.offset))
    return tuple(out_size)


def edge_output_size(edge, in_size, dilation):
    """Output size an edge produces from `in_size` (may be non-positive: caller checks)."""
    if edge.type in SLIDING:
        return tuple(i - (k - 1) * d for i, k, d in zip(in_size, edge.size, dilation))
    if edge.type == "max_pool":
        return tuple(i // k if i % k == 0 else -1 for i, k in zip(in_size, edge.size))
    if edge.type == "crop":
        return tuple(i - 2 * c for i, c in zip(in_size, edge.offset))
    return tuple(in_size)


def feature_sizes(spec, out_size, sparse=None, order=None):
    """Dict node -> (z, y, x) feature-map size when every output node has size `out_size`."""
    out_size = check_size(out_size, "output size")
    order = order or topological_order(spec)
    sparse = sparse or sparsity(spec, order)
    sizes = {}
    for name in reversed(order):
        outgoing = [e for e in spec.edges.values() if e.input == name]
        if not outgoing:
            sizes[name] = out_size
            continue
        for e in outgoing:
            need = edge_input_size(e, sizes[e.output], sparse[name])
            if name in sizes and sizes[name] != need:
                raise SpecError(
                    f"paths from node group '{name}' need different sizes {sizes[name]} and "
                    f"{need} (edge '{e.name}'); use output sizes the network can align",
                    key="size", **_where(spec, e))
            sizes[name] = need
    return sizes


def fov(spec, sparse=None, order=None):
    """Dict input node -> field of view (z, y, x): the input size for a 1x1x1 output."""
    sizes = feature_sizes(spec, ONE, sparse, order)
    return {name: sizes[name] for name in spec.inputs()}


def output_size_for_input(spec, input_size, sparse=None, order=None):
    """Output size produced from an input patch of `input_size` (single-input networks).

    Raises SpecError naming the first edge whose kernel does not fit.
    """
    input_size = check_size(input_size, "input size")
    order = order or topological_order(spec)
    sparse = sparse or sparsity(spec, order)
    sizes = {}
    for name in spec.inputs():
        sizes[name] = input_size
    for name in order:
        if name not in sizes:
            continue
        for e in (e for e in spec.edges.values() if e.input == name):
            out = edge_output_size(e, sizes[name], sparse[name])
            if min(out) < 1:
                raise SpecError(
                    f"edge '{e.name}' (size {e.size}, dilation {sparse[name]}) does not fit its "
                    f"input of size {sizes[name]} (from an input patch of {input_size})",
                    key="size", **_where(spec, e))
            if e.output in sizes and sizes[e.output] != out:
                raise SpecError(f"paths into '{e.output}' give sizes {sizes[e.output]} and {out}",
                                key="size", **_where(spec, e))
            sizes[e.output] = out
    outs = {sizes[o] for o in spec.outputs()}
    if len(outs) != 1:
        raise SpecError(f"output node groups have different sizes {sorted(outs)}", spec.path)
    return outs.pop()


def check_size(size, what):
    """A 3-vector of positive ints (z, y, x); ints and 2-vectors (y, x) are accepted."""
    if isinstance(size, int):
        size = (1, size, size)
    try:
        size = tuple(int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be 3 integers (z, y, x), got {size!r}") from None
    if len(size) == 2:
        size = (1,) + size
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"{what} must be 3 positive integers (z, y, x), got {size!r}")
    return size
