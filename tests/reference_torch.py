"""PyTorch (autograd, float64) reference of znn's forward and backward passes, for tests only."""

import functools

import numpy as np
import torch
import torch.nn.functional as F

from reference_numpy import feature_sizes, sparsity, topological_order


class _ForwardLogistics(torch.autograd.Function):
    """Sigmoid whose backward passes the incoming gradient unchanged (znn's forward_logistics)."""

    @staticmethod
    def forward(ctx, x):
        return torch.sigmoid(x)

    @staticmethod
    def backward(ctx, g):
        return g


def _args(args, defaults):
    args = tuple(float(a) for a in (args or ()))
    return args + defaults[len(args):]


def torch_transfer(name, x, args=()):
    """Transfer function `name` on a tensor, with znn's derivative conventions."""
    if name == "linear":
        a, b = _args(args, (1.0, 0.0))[:2]
        return a * x + b
    if name == "rectify_linear":
        return torch.relu(x)
    if name == "tanh":
        a, b = _args(args, (1.0, 1.0))[:2]
        return a * torch.tanh(b * x)
    if name == "logistics":
        return torch.sigmoid(x)
    if name == "forward_logistics":
        return _ForwardLogistics.apply(x)
    if name == "soft_sign":
        return F.softsign(x)
    raise ValueError(f"unknown transfer function {name!r}")


def torch_conv(x, w, d):
    """znn's valid true convolution: x (n_in, Z, Y, X), w (n_in, n_out, kz, ky, kx), dilation d."""
    weight = w.flip(2, 3, 4).transpose(0, 1)  # cross-correlation with the flipped kernel, (n_out, n_in, ...)
    return F.conv3d(x[None], weight, dilation=tuple(int(v) for v in d))[0]


def torch_edge(edge, x, params, d):
    """Apply one edge (test phase) to tensor x; d is the sparsity of the edge's input node."""
    if edge.type == "conv":
        return torch_conv(x, params[edge.name], d)
    if edge.type == "max_filter":
        k = tuple(int(v) for v in edge.size)
        return F.max_pool3d(x[None], kernel_size=k, stride=1, dilation=tuple(int(v) for v in d))[0]
    if edge.type == "max_pool":
        k = tuple(int(v) for v in edge.size)
        if any(n % s for n, s in zip(x.shape[1:], k)):
            raise ValueError(f"edge {edge.name!r}: max_pool size {k} does not divide {tuple(x.shape[1:])}")
        return F.max_pool3d(x[None], kernel_size=k, stride=k)[0]
    if edge.type == "crop":
        o = tuple(int(v) for v in edge.offset)
        return x[:, o[0]:x.shape[1] - o[0], o[1]:x.shape[2] - o[1], o[2]:x.shape[3] - o[2]]
    if edge.type in ("dropout", "dummy", "maxout"):
        return x
    raise ValueError(f"edge {edge.name!r}: unknown type {edge.type!r}")


def torch_forward(spec, params, inputs, out_size):
    """Evaluate every node; params and inputs are dicts of float64 tensors. Returns node name -> tensor."""
    sizes, sp, values = feature_sizes(spec, out_size), sparsity(spec), {}
    for n in topological_order(spec):
        node = spec.nodes[n]
        if node.type == "input":
            v = inputs[n]
        else:
            parts = [torch_edge(e, values[e.input], params, sp[e.input])
                     for e in spec.edges.values() if e.output == n]
            if not parts:
                raise ValueError(f"node {n!r} has no incoming edge")
            v = functools.reduce(torch.maximum, parts) if node.type == "maxout" else sum(parts)
            if node.type == "transfer":
                v = torch_transfer(node.function, v + params[n].reshape(-1, 1, 1, 1), node.function_args)
        if tuple(v.shape) != (node.size,) + sizes[n]:
            raise ValueError(f"node {n!r}: got shape {tuple(v.shape)}, expected {(node.size,) + sizes[n]}")
        values[n] = v
    return values


def torch_forward_backward(spec, params, inputs, out_size, output_grads):
    """Forward, then backward seeded with output_grads[node] = dE/d(node output) (any nodes).

    Returns (values, param_grads, input_grads) as float64 numpy arrays: values has every node,
    param_grads the keys and shapes of params (zeros if unused), input_grads the keys of inputs.
    """
    if not output_grads:
        raise ValueError("output_grads is empty")

    def leaf(a):
        return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)

    p = {k: leaf(v) for k, v in params.items()}
    x = {k: leaf(v) for k, v in inputs.items()}
    values = torch_forward(spec, p, x, out_size)
    loss = 0
    for n, g in output_grads.items():
        g = torch.as_tensor(np.asarray(g, dtype=np.float64))
        if g.shape != values[n].shape:
            raise ValueError(f"output_grads[{n!r}] has shape {tuple(g.shape)}, node is {tuple(values[n].shape)}")
        loss = loss + (values[n] * g).sum()
    loss.backward()

    def grads(d):
        return {k: np.zeros(t.shape) if t.grad is None else t.grad.numpy() for k, t in d.items()}

    return {k: v.detach().numpy() for k, v in values.items()}, grads(p), grads(x)
