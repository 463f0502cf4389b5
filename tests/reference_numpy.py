"""Plain-numpy reference evaluator of znn networks (test phase), written for clarity, not speed."""

import itertools

import numpy as np

ONE = (1, 1, 1)


# ----------------------------------------------------------------------------------------------
# Kernels. Arrays are (C, Z, Y, X); every 3-vector is (z, y, x); d is the dilation (sparsity).


def _taps(k):
    """All tap positions of a box of size k, in C order."""
    return itertools.product(*(range(int(n)) for n in k))


def _window(x, start, shape):
    """The (C,) + shape block of x whose first voxel is at `start`."""
    return x[:, start[0]:start[0] + shape[0], start[1]:start[1] + shape[1], start[2]:start[2] + shape[2]]


def _valid_shape(in_shape, k, d):
    out = tuple(int(n) - (int(ki) - 1) * int(di) for n, ki, di in zip(in_shape, k, d))
    if min(out) < 1:
        raise ValueError(f"input {tuple(in_shape)} too small for size {tuple(k)} dilated by {tuple(d)}")
    return out


def _flipped_start(k, t, d):
    """Input offset (K-1-t)*d that tap t of a true (flipped) convolution reads from."""
    return tuple((int(ki) - 1 - ti) * int(di) for ki, ti, di in zip(k, t, d))


def conv_valid(x, w, d=ONE):
    """Valid true convolution: out[j, p] = sum_i sum_t x[i, p + (K-1-t)*d] * w[i, j, t].

    x: (n_in, Z, Y, X); w: (n_in, n_out, kz, ky, kx) -> (n_out, Z-(kz-1)dz, Y-(ky-1)dy, X-(kx-1)dx).
    """
    x, w = np.asarray(x), np.asarray(w)
    if w.shape[0] != x.shape[0]:
        raise ValueError(f"filters have {w.shape[0]} input maps but x has {x.shape[0]}")
    k = w.shape[2:]
    o = _valid_shape(x.shape[1:], k, d)
    out = np.zeros((w.shape[1],) + o, dtype=np.result_type(x, w))
    for t in _taps(k):
        out += np.tensordot(w[(slice(None), slice(None)) + t], _window(x, _flipped_start(k, t, d), o), axes=(0, 0))
    return out


def conv_backward_data(g, w, d, in_shape):
    """Gradient w.r.t. x of conv_valid: gx[i, p + (K-1-t)*d] += sum_j g[j, p] * w[i, j, t].

    g: (n_out, O...); in_shape: spatial (Z, Y, X) of x (a 4-tuple's last three are used) -> (n_in, Z, Y, X).
    """
    g, w = np.asarray(g), np.asarray(w)
    k, in_shape = w.shape[2:], tuple(int(n) for n in in_shape[-3:])
    if _valid_shape(in_shape, k, d) != g.shape[1:]:
        raise ValueError(f"gradient {g.shape} does not match input {in_shape} and size {k} dilated by {d}")
    gx = np.zeros((w.shape[0],) + in_shape, dtype=np.result_type(g, w))
    for t in _taps(k):
        block = _window(gx, _flipped_start(k, t, d), g.shape[1:])  # a view into gx
        block += np.tensordot(w[(slice(None), slice(None)) + t], g, axes=(1, 0))
    return gx


def conv_backward_weight(x, g, d):
    """Gradient w.r.t. w of conv_valid: gw[i, j, t] = sum_p x[i, p + (K-1-t)*d] * g[j, p].

    x: (n_in, Z, Y, X); g: (n_out, O...) -> (n_in, n_out, kz, ky, kx) with K-1 = (in - O) / d.
    """
    x, g = np.asarray(x), np.asarray(g)
    k = []
    for n, o, di in zip(x.shape[1:], g.shape[1:], d):
        if (n - o) % di or n < o:
            raise ValueError(f"input {x.shape} and gradient {g.shape} are inconsistent with dilation {d}")
        k.append((n - o) // di + 1)
    gw = np.zeros((x.shape[0], g.shape[0]) + tuple(k), dtype=np.result_type(x, g))
    for t in _taps(k):
        gw[(slice(None), slice(None)) + t] = np.tensordot(_window(x, _flipped_start(k, t, d), g.shape[1:]), g,
                                                          axes=((1, 2, 3), (1, 2, 3)))
    return gw


def max_filter(x, size, d=ONE):
    """Dense sliding max: out[c, p] = max over taps t < size of x[c, p + t*d]; out = in - (size-1)*d."""
    x = np.asarray(x)
    o = _valid_shape(x.shape[1:], size, d)
    return np.max(np.stack([_window(x, tuple(ti * di for ti, di in zip(t, d)), o) for t in _taps(size)]), axis=0)


def max_pool(x, size):
    """Non-overlapping max pooling starting at 0; every dimension must be a multiple of size."""
    x = np.asarray(x)
    (c, z, y, xx), (a, b, e) = x.shape, (int(s) for s in size)
    if z % a or y % b or xx % e:
        raise ValueError(f"max_pool size {tuple(size)} does not divide input {x.shape[1:]}")
    return x.reshape(c, z // a, a, y // b, b, xx // e, e).max(axis=(2, 4, 6))


def crop(x, offset):
    """Remove offset voxels on both sides of every spatial axis."""
    x = np.asarray(x)
    o = tuple(int(v) for v in offset)
    return x[:, o[0]:x.shape[1] - o[0], o[1]:x.shape[2] - o[1], o[2]:x.shape[3] - o[2]]


def _args(args, defaults):
    args = tuple(float(a) for a in (args or ()))
    return args + defaults[len(args):]


def transfer(name, x, args=()):
    """Transfer function `name` of znn applied element-wise (args: function_args; missing ones default)."""
    x = np.asarray(x)
    if name == "linear":
        a, b = _args(args, (1.0, 0.0))[:2]
        return a * x + b
    if name == "rectify_linear":
        return np.maximum(x, 0)
    if name == "tanh":
        a, b = _args(args, (1.0, 1.0))[:2]
        return a * np.tanh(b * x)
    if name in ("logistics", "forward_logistics"):
        e = np.exp(-np.abs(x))  # overflow-free sigmoid
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    if name == "soft_sign":
        return x / (1 + np.abs(x))
    raise ValueError(f"unknown transfer function {name!r}")


# ----------------------------------------------------------------------------------------------
# Network geometry (§1.5 of the original's reference).


def _mul(a, b):
    return tuple(int(u) * int(v) for u, v in zip(a, b))


def _out_edges(spec, node):
    return [e for e in spec.edges.values() if e.input == node]


def _in_edges(spec, node):
    return [e for e in spec.edges.values() if e.output == node]


def topological_order(spec):
    """Node names, each after all its predecessors (ties in file order); ValueError on a cycle."""
    indeg = {n: len(_in_edges(spec, n)) for n in spec.nodes}
    order, ready = [], [n for n in spec.nodes if indeg[n] == 0]
    while ready:
        n = ready.pop(0)
        order.append(n)
        for e in _out_edges(spec, n):
            indeg[e.output] -= 1
            if indeg[e.output] == 0:
                ready.append(e.output)
    if len(order) != len(spec.nodes):
        raise ValueError("the network has a cycle")
    return order


def sparsity(spec):
    """dict node -> (z, y, x) sparsity: 1 at inputs, times stride of conv/max_filter; dense nodes reset to 1.

    Like the original, a node reached by paths with different sparsities keeps the first value
    (depth-first from the inputs in order, edges in file order).
    """
    s = {}

    def visit(n, v):
        if n in s:
            return
        s[n] = ONE if spec.nodes[n].dense else tuple(v)
        for e in _out_edges(spec, n):
            visit(e.output, _mul(s[n], e.stride) if e.type in ("conv", "max_filter") else s[n])

    for n in spec.inputs():
        visit(n, ONE)
    return s


def fov(spec):
    """dict node -> (z, y, x) field of view: 1 at outputs; conv/max_filter (f-1)*stride+size; max_pool f*size.

    Several paths take the element-wise max. The network's get_fov() is fov(spec)[network_input(spec)].
    """
    f = {}
    for n in reversed(topological_order(spec)):
        cands = [ONE]
        for e in _out_edges(spec, n):
            fo = f[e.output]
            if e.type in ("conv", "max_filter"):
                fo = tuple((a - 1) * st + sz for a, st, sz in zip(fo, e.stride, e.size))
            elif e.type == "max_pool":
                fo = _mul(fo, e.size)
            cands.append(fo)
        f[n] = tuple(int(v) for v in np.max(cands, axis=0))
    return f


def network_input(spec):
    """The alphabetically first input node (the one whose fov the original's get_fov() reports)."""
    return sorted(spec.inputs())[0]


def feature_sizes(spec, out_size):
    """dict node -> (z, y, x) feature-map size when every output node has size out_size.

    Backward from the outputs: conv/max_filter in = out + (size-1)*s(in); max_pool in = size*out;
    crop in = out + 2*offset; others equal. Paths that disagree raise ValueError.
    """
    s, f = sparsity(spec), {}
    for n in reversed(topological_order(spec)):
        cands = set()
        for e in _out_edges(spec, n):
            fo = f[e.output]
            if e.type in ("conv", "max_filter"):
                fo = tuple(a + (k - 1) * d for a, k, d in zip(fo, e.size, s[n]))
            elif e.type == "max_pool":
                fo = _mul(fo, e.size)
            elif e.type == "crop":
                fo = tuple(a + 2 * int(o) for a, o in zip(fo, e.offset))
            cands.add(tuple(int(v) for v in fo))
        if len(cands) > 1:
            raise ValueError(f"node {n!r}: outgoing edges need different sizes {sorted(cands)}")
        f[n] = cands.pop() if cands else tuple(int(v) for v in out_size)
    return f


# ----------------------------------------------------------------------------------------------
# Evaluation.


def edge_forward(edge, x, params, d):
    """Apply one edge (test phase) to its input maps x; d is the sparsity of the edge's input node."""
    if edge.type == "conv":
        return conv_valid(x, np.asarray(params[edge.name], dtype=np.float64), d)
    if edge.type == "max_filter":
        return max_filter(x, edge.size, d)
    if edge.type == "max_pool":
        return max_pool(x, edge.size)
    if edge.type == "crop":
        return crop(x, edge.offset)
    if edge.type in ("dropout", "dummy", "maxout"):
        return x
    raise ValueError(f"edge {edge.name!r}: unknown type {edge.type!r}")


def forward(spec, params, inputs, out_size):
    """Evaluate every node in float64; returns dict node name -> (size, Z, Y, X) array.

    params: conv edge name -> (n_in, n_out, kz, ky, kx); transfer node name -> biases (n,).
    inputs: input node name -> (C, Z, Y, X) of exactly the size feature_sizes() gives.
    """
    sizes, sp, values = feature_sizes(spec, out_size), sparsity(spec), {}
    for n in topological_order(spec):
        node = spec.nodes[n]
        if node.type == "input":
            v = np.asarray(inputs[n], dtype=np.float64)
        else:
            parts = [edge_forward(e, values[e.input], params, sp[e.input]) for e in _in_edges(spec, n)]
            if not parts:
                raise ValueError(f"node {n!r} has no incoming edge")
            v = np.maximum.reduce(parts) if node.type == "maxout" else sum(parts)
            if node.type == "transfer":
                b = np.asarray(params[n], dtype=np.float64).reshape(-1, 1, 1, 1)
                v = transfer(node.function, v + b, node.function_args)
        if v.shape != (node.size,) + sizes[n]:
            raise ValueError(f"node {n!r}: got shape {v.shape}, expected {(node.size,) + sizes[n]}")
        values[n] = v
    return values


def random_params(spec, rng, bias_scale=0.1):
    """Random float64 parameters: conv filters N(0, 1/fan_in), transfer biases N(0, bias_scale^2)."""
    params = {}
    for e in spec.edges.values():
        if e.type == "conv":
            n_in, n_out = spec.nodes[e.input].size, spec.nodes[e.output].size
            shape = (n_in, n_out) + tuple(int(k) for k in e.size)
            params[e.name] = rng.standard_normal(shape) / np.sqrt(n_in * np.prod(e.size))
    for n, node in spec.nodes.items():
        if node.type == "transfer":
            params[n] = bias_scale * rng.standard_normal(node.size)
    return params
